"""A check that found nothing to trade starts a post-rebalance window; the service records it in the SQLite
ledger and, restarted inside that window, resumes it instead of checking again at once."""
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from engine.sensor import Sensor
from engine.trigger import TriggerState
from engine.types import Reason
from ops.config import loads_config
from ops.ledger import Ledger, LedgerInputError
from ops.service import Service

SEC = 1_000_000_000
WINDOW_SECS = 600
CONFIG = """
[portfolio]
name = "quiet"
capital = 10
[portfolio.targets]
BTC = 0.5
ETH = 0.3
USDT = 0.2
[rebalance]
threshold = 0.05
window_secs = {window}
[venue]
fee_rate = 0.001
min_notional = 100
[feed]
source = "sim"
sim_rate_hz = 40
stale_secs = 0
[ledger]
path = "{ledger}"
[metrics]
enabled = false
"""
Check = tuple[str, Reason, int]


class TickWaiter(Sensor):
    """Counts ticks reaching the book and resolves a future once a condition holds (checked at every tick)."""

    def __init__(self) -> None:
        self.ticks = 0
        self._waiting: tuple[Callable[[], bool], asyncio.Future[None]] | None = None

    def on_tick(self, symbol: str, ts_recv_ns: int) -> None:
        self.ticks += 1
        if self._waiting is not None and not self._waiting[1].done() and self._waiting[0]():
            self._waiting[1].set_result(None)

    async def until(self, condition: Callable[[], bool], within_secs: float = 30.0) -> None:
        """Return after the first tick at which `condition()` holds (the tick's evaluation has finished by then)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting = (condition, fut)
        try:
            await asyncio.wait_for(fut, within_secs)
        finally:
            self._waiting = None


def quiet_checks_seen(service: Service) -> tuple[list[Check], asyncio.Future[Check]]:
    """Record the engine's quiet checks as the service gets them; the future resolves on the first."""
    seen: list[Check] = []
    first: asyncio.Future[Check] = asyncio.get_running_loop().create_future()
    record = service.on_quiet_check

    def hook(portfolio: str, reason: Reason, ts_ns: int) -> None:
        record(portfolio, reason, ts_ns)
        seen.append((portfolio, reason, ts_ns))
        if not first.done():
            first.set_result((portfolio, reason, ts_ns))

    service.on_quiet_check = hook  # type: ignore[method-assign]
    return seen, first


def ledger_rows(path: Path) -> list[tuple[str, int, str]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT portfolio, ts_ns, reason FROM quiet_checks").fetchall()


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_a_restart_inside_a_quiet_checks_window_resumes_it(tmp_path: Path) -> None:
    ledger = tmp_path / "keel.sqlite"
    config = loads_config(CONFIG.format(ledger=ledger, window=WINDOW_SECS), base_dir=tmp_path)

    first_run = Service(config, state_dir=tmp_path)
    _, first = quiet_checks_seen(first_run)
    stop = asyncio.Event()
    task = asyncio.create_task(first_run.run(stop))
    try:
        portfolio, reason, checked_ns = await asyncio.wait_for(first, 45)
        assert first_run.ledger is not None
        # the recording task woke before this test did, so its request is queued ahead of this empty one: once
        # that commits, the check is durable while the service still runs (not only written at a clean stop)
        await first_run.ledger.submit([])
        assert ledger_rows(ledger) == [("quiet", checked_ns, "start")]
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
    assert (portfolio, reason) == ("quiet", Reason.START)  # 10 USDT buys nothing when an order needs 100
    assert ledger_rows(ledger) == [("quiet", checked_ns, "start")]

    sensor = TickWaiter()
    restarted = Service(config, sensor=sensor, state_dir=tmp_path)
    seen, _ = quiet_checks_seen(restarted)
    stop = asyncio.Event()
    task = asyncio.create_task(restarted.run(stop))
    try:
        await asyncio.wait_for(restarted.ready.wait(), 30)
        engine = restarted.engine
        assert engine is not None
        rt = engine.runtimes["quiet"]
        await sensor.until(rt.portfolio.priced)  # the moment a fresh start would check
        ticks = sensor.ticks
        await sensor.until(lambda: sensor.ticks >= ticks + 20)
        assert seen == []  # no check inside the window: it was resumed, not restarted
        assert rt.started and rt.trigger.state is TriggerState.COOLDOWN
        assert rt.trigger.until_ns == checked_ns + WINDOW_SECS * SEC
        assert engine.hodl_value("quiet") == 10.0  # the basket at the start: the capital, nothing bought
        assert restarted.ledger is not None and await restarted.ledger.intent_count("quiet") == 0
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
    assert ledger_rows(ledger) == [("quiet", checked_ns, "start")]


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_the_ledger_keeps_the_latest_quiet_check_and_adds_its_table_to_an_older_file(tmp_path: Path) -> None:
    path = tmp_path / "keel.sqlite"
    ledger = await Ledger.open(path)
    try:
        await ledger.record_portfolio("a", "USDT")
        await ledger.record_portfolio("b", "USDT")
    finally:
        await ledger.close()
    with closing(sqlite3.connect(path)) as conn:  # a ledger written before quiet checks were recorded
        conn.execute("DROP TABLE quiet_checks")
        conn.commit()

    ledger = await Ledger.open(path)
    try:
        assert await ledger.last_quiet_check("a") is None
        await ledger.record_quiet_checks([("a", Reason.THRESHOLD, 5 * SEC), ("b", Reason.START, 2 * SEC)])
        await ledger.record_quiet_checks([("a", Reason.CALENDAR, 3 * SEC)])  # older: the later one stays
        assert await ledger.last_quiet_check("a") == 5 * SEC
        assert await ledger.last_quiet_check("b") == 2 * SEC
        with pytest.raises(LedgerInputError, match="not in the ledger"):
            await ledger.record_quiet_checks([("b", Reason.THRESHOLD, 9 * SEC), ("nope", Reason.START, 9 * SEC)])
        assert await ledger.last_quiet_check("b") == 2 * SEC  # one request: all or nothing
        await asyncio.gather(*(ledger.record_quiet_checks([("b", Reason.MANUAL, t * SEC)]) for t in (7, 9, 8)))
        assert await ledger.last_quiet_check("b") == 9 * SEC
    finally:
        await ledger.close()
    assert sorted(ledger_rows(path)) == [("a", 5 * SEC, "threshold"), ("b", 9 * SEC, "manual")]
