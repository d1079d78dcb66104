"""Feed faults against the running service (in-process, its embedded simulator, cryptofeed in between).

The portfolio is in observe mode and adopts only USDT against BTC/ETH targets, so it is always far out of
its band: the engine decides an intent after every post-rebalance window whenever it is allowed to, which
makes "no intent" observable. Every intent must have been decided on fresh prices (each symbol ticked
within `feed.stale_secs` before it), and no intent may be decided twice.
"""
from __future__ import annotations

import bisect
import itertools
import sqlite3
import time
from pathlib import Path

import pytest

from ops.config import loads_config
from ops.service import Service
from tests.faults import Recorder, SimulatorTap, http_get, running

SYMBOLS = ["BTC-USDT", "ETH-USDT"]
STALE_SECS = 1.5
WINDOW_SECS = 0.5
RECONNECT_CAP_SECS = 1.0
SEC = 1_000_000_000

CONFIG = f"""
[portfolio]
name = "feed"
start = "holdings"
holdings = {{ USDT = 10000 }}
targets = {{ BTC = 0.5, ETH = 0.5 }}
[rebalance]
mode = "observe"
threshold = 0.05
debounce_secs = 0.1
window_secs = {WINDOW_SECS}
[feed]
source = "sim"
sim_rate_hz = 50
sim_swing = 0.02
speed = 1
stale_secs = {STALE_SECS}
outlier_fraction = 0.2
reconnect_max_secs = {RECONNECT_CAP_SECS}
[ledger]
path = "{{ledger}}"
[metrics]
port = 0
"""


def make_service(tmp_path: Path) -> tuple[Service, Recorder]:
    config = loads_config(CONFIG.replace("{ledger}", str(tmp_path / "keel.sqlite")), base_dir=tmp_path)
    rec = Recorder()
    return Service(config, sensor=rec, state_dir=tmp_path), rec


def assert_decided_on_fresh_prices(rec: Recorder) -> None:
    """Every intent saw a tick of each of its symbols at most stale_secs before it was decided."""
    for intent in rec.intents:
        for symbol in intent.prices:
            times = rec.tick_times.get(symbol, [])
            k = bisect.bisect_right(times, intent.ts_ns)
            assert k > 0, f"intent {intent.id} priced {symbol} before any tick"
            age_ns = intent.ts_ns - times[k - 1]
            assert age_ns <= STALE_SECS * SEC, f"intent {intent.id} used a {symbol} price {age_ns / SEC:.2f} s old"


def assert_no_duplicate_intents(rec: Recorder, ledger: Path) -> None:
    """Intent ids are unique, one window apart in engine time, and each is recorded once."""
    ids = [i.id for i in rec.intents]
    assert len(ids) == len(set(ids))
    stamps = [i.ts_ns for i in rec.intents]
    assert all(b - a >= WINDOW_SECS * SEC for a, b in itertools.pairwise(stamps)), "two intents in one window"
    con = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        recorded = [r[0] for r in con.execute("SELECT id FROM intents ORDER BY seq")]
    finally:
        con.close()
    assert recorded == ids


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_a_feed_silent_from_the_start_is_stale_and_never_trades(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tap = SimulatorTap(monkeypatch, silent=True)
    service, rec = make_service(tmp_path)
    async with running(service):
        await rec.until(lambda: rec.all_stale(SYMBOLS), what="every symbol stale")
        ok, why = service.readiness()
        assert not ok and why == "stale feed: BTC-USDT, ETH-USDT"
        assert await http_get(service.metrics_port, "/readyz") == (503, why)
        health = service.health.status()
        assert all(h.stale and h.ticks == 0 and h.last_tick_ns is None for h in health.values())
        assert rec.ticks == 0 and rec.intents == [], "nothing is decided without prices"
        # the same service decides as soon as prices flow: the check above could have failed
        tap.simulator.go_silent(False)
        await rec.until(lambda: len(rec.intents) >= 2 and not any(rec.stale.values()), what="fresh prices, intents")
        assert service.readiness() == (True, "ok")
    assert_decided_on_fresh_prices(rec)
    assert_no_duplicate_intents(rec, tmp_path / "keel.sqlite")


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_a_feed_silent_mid_run_goes_stale_decides_nothing_then_recovers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tap = SimulatorTap(monkeypatch)
    service, rec = make_service(tmp_path)
    async with running(service):
        await rec.until(lambda: len(rec.intents) >= 2, what="intents on a live feed")
        tap.simulator.go_silent(True)
        await rec.until(lambda: rec.all_stale(SYMBOLS), what="every symbol stale")
        during = len(rec.intents)
        assert not service.readiness()[0] and service.readiness()[1].startswith("stale feed")
        assert all(h.stale for h in service.health.status().values())
        last_tick_ns = max(t[-1] for t in rec.tick_times.values())
        tap.simulator.go_silent(False)
        await rec.until(lambda: not any(rec.stale.values()), what="every symbol fresh again")
        await rec.until(lambda: len(rec.intents) >= during + 2, what="intents again")
        assert service.readiness() == (True, "ok")
    silent = [i for i in rec.intents if i.ts_ns > last_tick_ns + STALE_SECS * SEC
              and i.ts_ns < min(t[bisect.bisect_right(t, last_tick_ns)] for t in rec.tick_times.values())]
    assert silent == [], "an intent was decided while every price was stale"
    assert_decided_on_fresh_prices(rec)
    assert_no_duplicate_intents(rec, tmp_path / "keel.sqlite")


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_a_reconnect_storm_is_counted_backs_off_capped_and_ticks_flow_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tap = SimulatorTap(monkeypatch)
    service, rec = make_service(tmp_path)
    drops = 6
    async with running(service):
        await rec.until(lambda: len(rec.intents) >= 1, what="a first intent")
        sim = tap.simulator
        sim.go_silent(True)  # no frame between the drops: each reconnect counts as a failure, so the backoff grows
        base = len(rec.reconnects)
        dropped_at = []
        for k in range(drops):
            await sim.wait_for_subscribers(1)
            assert sim.drop_connections() >= 1
            dropped_at.append(time.monotonic())
            await rec.until(lambda k=k: len(rec.reconnects) >= base + k + 1, what=f"reconnect {k + 1}")
        waits = [rec.reconnects[base + k] - dropped_at[k] for k in range(drops)]
        # uncapped, cryptofeed-style doubling from 0.5 s would wait 16-32 s before the sixth reconnect
        print(f"\nreconnect waits after each drop: {[round(w, 2) for w in waits]} s")
        assert max(waits) <= RECONNECT_CAP_SECS + 0.5, waits
        sim.go_silent(False)
        before = len(rec.intents)
        await rec.more_ticks(100)
        await rec.until(lambda: len(rec.intents) >= before + 1, what="intents after the storm")
        _, scrape = await http_get(service.metrics_port, "/metrics")
        assert f'keel_feed_reconnects_total{{exchange="binance"}} {float(len(rec.reconnects))}' in scrape
        assert sim.stats.faults_injected["drop"] == drops
    assert_decided_on_fresh_prices(rec)
    assert_no_duplicate_intents(rec, tmp_path / "keel.sqlite")


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_garbage_crossed_and_spiked_frames_are_counted_dropped_and_never_traded_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tap = SimulatorTap(monkeypatch)
    service, rec = make_service(tmp_path)
    async with running(service):
        await rec.until(lambda: len(rec.intents) >= 1, what="a first intent")
        sim = tap.simulator
        reconnects = len(rec.reconnects)
        eth = rec.intents[-1].prices["ETH-USDT"]
        sim.send_garbage(12)
        await rec.until(lambda: rec.bad["unparseable"] >= 12, what="every garbage frame counted")
        sim.cross("BTC-USDT")
        await rec.until(lambda: rec.bad["crossed"] >= 1, what="a crossed frame counted")
        sim.spike("ETH-USDT", 5.0)
        await rec.until(lambda: rec.bad["outlier"] >= 1, what="the spike counted as an outlier")
        before = len(rec.intents)
        await rec.until(lambda: len(rec.intents) >= before + 2, what="intents after the bad frames")
        assert len(rec.reconnects) == reconnects, "bad frames never cost the connection"
        assert sim.stats.faults_injected == {"garbage": 12, "cross": 1, "spike": 1}
        _, scrape = await http_get(service.metrics_port, "/metrics")
        bad = [line for line in scrape.splitlines() if line.startswith("keel_bad_ticks_total{")]
        assert sorted(bad) == ['keel_bad_ticks_total{reason="crossed",symbol="*"} 1.0',
                               'keel_bad_ticks_total{reason="outlier",symbol="ETH-USDT"} 1.0',
                               'keel_bad_ticks_total{reason="unparseable",symbol="*"} 12.0']
    assert all(i.prices["ETH-USDT"] < eth * 1.5 for i in rec.intents), "no intent priced at the spike"
    assert_decided_on_fresh_prices(rec)
    assert_no_duplicate_intents(rec, tmp_path / "keel.sqlite")
