"""kill -9 at random moments, 50 times: the ledger stays whole, holdings = capital + fills - fees,
no client order id is sent twice, and every fill the venue reported is in the ledger exactly once."""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from tests.service_kit import LEDGER_TOML, METRICS_OFF_TOML, portfolio_toml, sim_feed_toml

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("KEEL_KILLS", "50"))

CONFIG = (portfolio_toml("k9", threshold=0.015, window_secs=0.3)
          + '[venue]\nkind = "paper"\nfee_rate = 0.001\nlatency_ms = 120\n'
          + sim_feed_toml(sim_rate_hz=200, sim_swing=0.15, speed=60, stale_secs=0) + "sim_seed = {seed}\n"
          + LEDGER_TOML + METRICS_OFF_TOML)


def start(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], object]:
    f = log.open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "run", str(config)], cwd=config.parent, stdout=f,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc, f


def wait_for(proc: subprocess.Popen[bytes], log, marker: bytes, count: int, deadline: float) -> bool:
    """Read the service's log lines until `marker` was seen `count` times (an event, not a timer)."""
    seen = 0
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            return False
        log.write(line)
        if marker in line:
            seen += 1
            if seen >= count:
                return True
    return False


def ledger_rows(path: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def integrity(path: Path) -> str:
    return ledger_rows(path, "PRAGMA integrity_check")[0][0]


def holdings_from_rows(path: Path) -> dict[str, Decimal]:
    """Capital plus every fill minus fees, computed here, independently of keel's code."""
    h: dict[str, Decimal] = {}
    for asset, amount in ledger_rows(path, "SELECT asset, amount FROM transfers"):
        h[asset] = h.get(asset, Decimal(0)) + Decimal(amount)
    for symbol, side, qty, price, fee, fee_asset in ledger_rows(
            path, "SELECT symbol, side, quantity, price, fee, fee_asset FROM fills"):
        base, quote = symbol.split("-")
        q, p, f = Decimal(qty), Decimal(price), Decimal(fee)
        sign = 1 if side == "buy" else -1
        h[base] = h.get(base, Decimal(0)) + sign * q
        h[quote] = h.get(quote, Decimal(0)) - sign * q * p
        h[fee_asset] = h.get(fee_asset, Decimal(0)) - f
    return h


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_minus_nine_at_random_moments(tmp_path: Path) -> None:
    rng = random.Random(9)
    ledger = tmp_path / "keel.sqlite"
    journal = ledger.with_suffix(".paper-venue.sqlite")
    config = tmp_path / "keel.toml"
    config.write_text(CONFIG.format(ledger=ledger, seed=rng.randint(1, 10_000)))
    log_path = tmp_path / "service.log"
    kills = checks = 0
    for _ in range(KILLS):
        proc, log = start(config, log_path)
        try:
            # kill while orders are in flight: after a random number of sends (120 ms paper latency each)
            assert wait_for(proc, log, b"keel running", 1, time.monotonic() + 120), \
                log_path.read_text()[-3000:]
            wait_for(proc, log, b" sent: ", rng.randint(1, 6), time.monotonic() + 20)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            assert proc.stderr is not None
            log.write(proc.stderr.read())
            proc.stderr.close()
            log.close()
        kills += 1
        assert integrity(ledger) == "ok"
        checks += 1
    # a last clean start: recovery reconciles what the kills left open; then a clean stop
    proc, log = start(config, log_path)
    assert wait_for(proc, log, b"keel running", 1, time.monotonic() + 60)
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    log.write(proc.stderr.read())
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0
    log.close()

    assert integrity(ledger) == "ok"
    text = log_path.read_bytes()
    assert b"duplicate client order id" not in text
    if b"Traceback" in text:
        at = text.index(b"Traceback")
        raise AssertionError(text[max(0, at - 1500):at + 3000].decode(errors="replace"))
    # holdings: the ledger's own rebuild equals capital + fills - fees, and nothing is negative
    import asyncio

    from ops.ledger import Ledger

    async def rebuild() -> dict[str, Decimal]:
        led = await Ledger.open(ledger, read_only=True)
        try:
            return await led.rebuild_holdings("k9")
        finally:
            await led.close()

    rebuilt = asyncio.run(rebuild())
    independent = holdings_from_rows(ledger)
    assert {a: q for a, q in rebuilt.items() if q} == {a: q for a, q in independent.items() if q}
    assert all(q >= 0 for q in independent.values())
    # the venue's own record against the ledger
    venue_orders = {cid: orjson.loads(report) for cid, report in ledger_rows(journal, "SELECT * FROM orders")}
    venue_fills = [f["trade_id"] for r in venue_orders.values() for f in r["fills"]]
    ledger_fills = [t for (t,) in ledger_rows(ledger, "SELECT trade_id FROM fills")]
    assert len(set(venue_fills)) == len(venue_fills)
    assert sorted(ledger_fills) == sorted(venue_fills), "every venue fill exactly once in the ledger"
    ledger_orders = {cid: (sym, side) for cid, sym, side in ledger_rows(
        ledger, "SELECT client_order_id, symbol, side FROM orders")}
    for cid, report in venue_orders.items():
        assert cid in ledger_orders, f"venue order {cid} unknown to the ledger"
        assert ledger_orders[cid][0] == report["symbol"]
    open_orders = ledger_rows(ledger, "SELECT count(*) FROM orders WHERE status IN ('pending', 'new', 'unknown')")
    assert open_orders[0][0] == 0
    print(f"\nkills: {kills}, integrity checks: {checks + 1}, venue orders: {len(venue_orders)}, "
          f"fills: {len(ledger_fills)}, intents: {ledger_rows(ledger, 'SELECT count(*) FROM intents')[0][0]}")
