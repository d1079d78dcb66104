"""FeedHealth: stale and fresh transitions on timers, with a fake clock and live against the simulator."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptofeed.symbols import Symbols

from engine.types import Tick
from feeds.cryptofeed_source import CryptofeedSource
from feeds.health import FeedHealth
from feeds.simulator import ExchangeSimulator, PushSource

pytestmark = pytest.mark.timeout(60)

NS = 1_000_000_000
SYMBOLS = ("BTC-USDT", "ETH-USDT")


class FakeClock:
    def __init__(self, t_ns: int = 1_000 * NS) -> None:
        self.t_ns = t_ns

    def now_ns(self) -> int:
        return self.t_ns

    def advance(self, secs: float) -> None:
        self.t_ns += int(secs * NS)


@pytest.fixture(autouse=True)
def clear_symbols() -> Iterator[None]:
    Symbols.clear()
    yield
    Symbols.clear()


def test_a_symbol_never_seen_goes_stale_after_stale_secs() -> None:
    clock = FakeClock()
    changes: list[tuple[str, bool]] = []
    health = FeedHealth(SYMBOLS, 5.0, clock.now_ns, lambda s, stale: changes.append((s, stale)))
    clock.advance(2.0)
    health.seen("BTC-USDT", clock.now_ns())
    clock.advance(2.9)
    assert health.check() == 1_000 * NS + 5 * NS  # ETH, never seen, is due 5 s after the start
    assert changes == []
    clock.advance(0.2)
    health.check()
    assert changes == [("ETH-USDT", True)]
    clock.advance(2.0)  # BTC's last tick is now 5.1 s old
    health.check()
    health.check()
    assert changes == [("ETH-USDT", True), ("BTC-USDT", True)]


def test_the_next_tick_makes_a_stale_symbol_fresh_at_once() -> None:
    clock = FakeClock()
    changes: list[tuple[str, bool]] = []
    health = FeedHealth(SYMBOLS, 1.0, clock.now_ns, lambda s, stale: changes.append((s, stale)))
    clock.advance(1.5)
    health.check()
    health.seen("ETH-USDT", clock.now_ns())
    health.seen("ETH-USDT", clock.now_ns())
    health.seen("DOGE-USDT", clock.now_ns())  # not watched: ignored
    assert changes == [("BTC-USDT", True), ("ETH-USDT", True), ("ETH-USDT", False)]
    assert health.status()["ETH-USDT"].stale is False
    assert health.status()["BTC-USDT"].stale is True


def test_status_reports_age_count_and_rate_over_ten_seconds() -> None:
    clock = FakeClock()
    health = FeedHealth(SYMBOLS, 30.0, clock.now_ns, lambda s, stale: None)
    for _ in range(20):  # 4 ticks/s for 5 s, then 7 s of silence
        clock.advance(0.25)
        health.seen("BTC-USDT", clock.now_ns())
    last = clock.now_ns()
    clock.advance(7.0)
    btc = health.status()["BTC-USDT"]
    assert btc.last_tick_ns == last and btc.ticks == 20
    assert btc.age_secs == pytest.approx(7.0)
    assert btc.ticks_per_sec == pytest.approx(9 / 10)  # only ticks in seconds 1003-1005 are inside the window
    eth = health.status()["ETH-USDT"]
    assert (eth.last_tick_ns, eth.ticks, eth.ticks_per_sec) == (None, 0, 0.0)
    assert eth.age_secs == pytest.approx(12.0)


@pytest.mark.asyncio
async def test_run_reports_on_loop_timers() -> None:
    changes: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
    health = FeedHealth(["BTC-USDT"], 0.05, time.time_ns, lambda s, stale: changes.put_nowait((s, stale)))
    task = asyncio.create_task(health.run())
    try:
        assert await asyncio.wait_for(changes.get(), 5) == ("BTC-USDT", True)
        health.seen("BTC-USDT", time.time_ns())
        assert changes.get_nowait() == ("BTC-USDT", False)
        assert await asyncio.wait_for(changes.get(), 5) == ("BTC-USDT", True)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.asyncio
@pytest.mark.parametrize("exchange", ["binance", "kraken", "okx"])
async def test_a_feed_silent_from_its_first_second_is_reported_stale(tmp_path: Path, exchange: str) -> None:
    sim = ExchangeSimulator(cert_dir=tmp_path, source=PushSource(SYMBOLS))
    await sim.start()
    sim.go_silent(True)
    changes: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
    health = FeedHealth(SYMBOLS, 0.3, time.time_ns, lambda s, stale: changes.put_nowait((s, stale)))

    def on_tick(tick: Tick) -> None:
        health.seen(tick.symbol, tick.ts_recv_ns)

    source = CryptofeedSource(exchange, SYMBOLS, ws_url=sim.ws_url(exchange),  # type: ignore[arg-type]
                              rest_url=sim.rest_url(exchange), ssl_context=sim.ssl_context_for_clients(),
                              stale_secs=30.0)
    tasks = [asyncio.create_task(health.run()), asyncio.create_task(source.run(on_tick))]
    try:
        await asyncio.wait_for(sim.wait_for_subscribers(1, symbol=SYMBOLS[-1]), 10)
        stale = {await asyncio.wait_for(changes.get(), 10) for _ in SYMBOLS}
        assert stale == {(s, True) for s in SYMBOLS}
        assert source.ticks == 0
        sim.go_silent(False)
        await sim.publish(Tick("ETH-USDT", 2000.0, 2000.5, 0, 0))
        assert await asyncio.wait_for(changes.get(), 10) == ("ETH-USDT", False)
        status = health.status()
        assert status["ETH-USDT"].ticks == 1 and not status["ETH-USDT"].stale
        assert status["BTC-USDT"].stale and status["BTC-USDT"].last_tick_ns is None
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await sim.stop()
