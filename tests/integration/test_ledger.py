"""The SQLite ledger on real files: group commit, idempotent fills, exact holdings, storage failures, LedgerSync."""
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import pytest_asyncio

from engine.execution import client_order_id, intent_id
from engine.runner import run_sequence
from engine.sensor import Sensor
from engine.types import Fill, Intent, Leg, Order, Reason, Side, Transfer
from ops.ledger import DuplicateOrder, Ledger, LedgerError, LedgerInputError, UnknownOrder
from ops.ledger_ops import WriteContext
from ops.ledger_read import integrity_check, q_fills, rebuild_holdings_sync, run_query
from ops.ledger_sync import LedgerSync
from ops.venues.base import OrderReport, OrderStatus
from tests.builders import SEC, T0, make_engine, make_spec, make_tick

P = "main"


def make_intent(seq: int = 1, legs: tuple[Leg, ...] | None = None, portfolio: str = P) -> Intent:
    legs = legs if legs is not None else (
        Leg("BTC-USDT", Side.BUY, Decimal("0.1"), Decimal("50000"), Decimal("5000")),
        Leg("ETH-USDT", Side.SELL, Decimal("1.5"), Decimal("3000"), Decimal("4500")),
    )
    return Intent(intent_id(portfolio, seq, T0 + seq), portfolio, T0 + seq, Reason.THRESHOLD, 0.0625,
                  {"BTC-USDT": 50000.0, "ETH-USDT": 3000.0}, {"BTC": 0.4, "ETH": 0.6}, legs,
                  expected_residual_drift=0.001, quote_reserve=Decimal("1.5"))


def order_for(intent: Intent, leg: int, quantity: str = "0.1") -> Order:
    spec = intent.legs[leg]
    return Order(client_order_id(intent.id, leg), intent.id, intent.portfolio, leg, spec.symbol, spec.side,
                 Decimal(quantity))


def fill_for(order: Order, n: int, quantity: str, price: str, fee: str) -> Fill:
    return Fill(f"{order.client_order_id}-{n}", order.client_order_id, order.symbol, order.side, Decimal(quantity),
                Decimal(price), Decimal(fee), "USDT", T0 + n, f"v{order.client_order_id}")


class CommitSensor(Sensor):
    __slots__ = ("commits",)

    def __init__(self) -> None:
        self.commits: list[tuple[int, float]] = []

    def on_ledger_commit(self, rows: int, seconds: float) -> None:
        self.commits.append((rows, seconds))


@pytest_asyncio.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    book = await Ledger.open(tmp_path / "keel.sqlite")
    await book.record_portfolio(P, "USDT", {"targets": {"BTC": 0.5, "ETH": 0.5}})
    await book.record_transfer(Transfer("cap-1", P, "USDT", Decimal("10000"), T0), "capital")
    await book.record_transfer(Transfer("cap-2", P, "ETH", Decimal("2"), T0), "adopt")
    yield book
    await book.close()


def table_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_group_commit_runs_concurrent_requests_in_fewer_transactions(tmp_path: Path) -> None:
    sensor = CommitSensor()
    book = await Ledger.open(tmp_path / "g.sqlite", sensor=sensor)
    try:
        await book.record_portfolio(P, "USDT")
        intents = [make_intent(seq) for seq in range(1, 201)]
        commits, requests = book.commits, book.requests
        results = await asyncio.gather(*(book.record_intent(i) for i in intents))
        assert results == [True] * 200
        n_requests, n_commits = book.requests - requests, book.commits - commits
        assert n_requests == 200
        assert 1 <= n_commits <= n_requests // 4, f"{n_commits} transactions for {n_requests} requests"
        assert sum(rows for rows, _ in sensor.commits[-n_commits:]) == 400  # 200 intents + 200 outbox events
        # a refused request inside a batch fails only itself
        bad = Order("kffffffffffffffff000", "ffffffffffffffff", P, 0, "BTC-USDT", Side.BUY, Decimal(1))
        good = [order_for(i, 0) for i in intents[:50]]
        outcomes = await asyncio.gather(book.record_orders_pending([bad]),
                                        *(book.record_order_pending(o) for o in good), return_exceptions=True)
        assert isinstance(outcomes[0], LedgerInputError) and "not in the ledger" in str(outcomes[0])
        assert outcomes[1:] == [None] * 50
        assert len(await book.open_orders()) == 50
        assert await book.intent_count(P) == 200
        assert [r.seq for r in await book.intents_with_status("new", portfolio=P)] == list(range(1, 201))
    finally:
        await book.close()


@pytest.mark.asyncio
async def test_a_request_is_all_or_nothing(ledger: Ledger) -> None:
    intent = make_intent()
    await ledger.record_intent(intent)
    good = order_for(intent, 0)
    stranger = Order("k" + "e" * 16 + "000", "e" * 16, P, 0, "BTC-USDT", Side.BUY, Decimal(1))
    with pytest.raises(LedgerInputError):
        await ledger.record_orders_pending([good, stranger])
    assert await ledger.order(good.client_order_id) is None
    await ledger.record_order_pending(good)
    with pytest.raises(DuplicateOrder, match="never sent twice"):
        await ledger.record_order_pending(good)
    [record] = await ledger.open_orders()
    assert (record.order, record.status, record.filled) == (good, "pending", Decimal(0))


@pytest.mark.asyncio
async def test_duplicate_fill_is_ignored_and_reported_as_not_new(ledger: Ledger) -> None:
    intent = make_intent()
    await ledger.record_intent(intent)
    order = order_for(intent, 0)
    await ledger.record_order_pending(order)
    fill = fill_for(order, 1, "0.1", "50010", "5.001")
    report = OrderReport(order.client_order_id, "v1", order.symbol, OrderStatus.FILLED, Decimal("0.1"), (fill,))
    assert await ledger.record_order_report(report) == [fill]
    assert await ledger.record_order_report(report) == []
    assert await ledger.record_fills([fill]) == []
    [record] = await ledger.fills(P)
    assert record.fill == fill and record.portfolio == P
    stored = await ledger.order(order.client_order_id)
    assert stored is not None and (stored.status, stored.filled, stored.venue_order_id) == ("filled", Decimal("0.1"), "v1")
    fill_events = [e for e in await ledger.outbox_pending(1000) if e.topic == f"{P}/fill"]
    assert len(fill_events) == 1
    event = orjson.loads(fill_events[0].payload)
    assert (event["trade_id"], event["quantity"], event["price"], event["intent_id"]) == (
        fill.trade_id, "0.1", "50010", intent.id)
    assert await ledger.mark_published([e.seq for e in await ledger.outbox_pending(1000)]) > 0
    assert await ledger.outbox_pending() == []


@pytest.mark.asyncio
async def test_fill_for_unknown_order_is_refused_and_changes_nothing(ledger: Ledger) -> None:
    intent = make_intent()
    await ledger.record_intent(intent)
    before = table_counts(ledger.path)
    ghost = Order("k" + "a" * 16 + "000", "a" * 16, P, 0, "BTC-USDT", Side.BUY, Decimal(1))
    with pytest.raises(UnknownOrder, match="not in the ledger"):
        await ledger.record_fills([fill_for(ghost, 1, "1", "50000", "50")])
    with pytest.raises(UnknownOrder):
        await ledger.record_order_report(OrderReport(ghost.client_order_id, "x", "BTC-USDT", OrderStatus.FILLED,
                                                     Decimal(1), ()))
    assert table_counts(ledger.path) == before
    assert await ledger.fills() == []


@pytest.mark.asyncio
async def test_rebuilt_holdings_equal_capital_plus_fills_minus_fees_exactly(ledger: Ledger) -> None:
    intent = make_intent()
    await ledger.record_intent(intent)
    buy, sell = order_for(intent, 0), order_for(intent, 1, "1.5")
    await ledger.record_orders_pending([buy, sell])
    fills = [
        fill_for(buy, 1, "0.06", "50010.01", "3.0006006"),
        fill_for(buy, 2, "0.04", "50011", "2.00044"),
        fill_for(sell, 1, "1.5", "2999.99", "4.499985"),
    ]
    assert await ledger.record_fills(fills) == fills
    expected = {
        "USDT": Decimal("10000") - Decimal("0.06") * Decimal("50010.01") - Decimal("3.0006006")
        - Decimal("0.04") * Decimal("50011") - Decimal("2.00044") + Decimal("1.5") * Decimal("2999.99")
        - Decimal("4.499985"),
        "BTC": Decimal("0.1"),
        "ETH": Decimal("0.5"),
    }
    assert await ledger.rebuild_holdings(P) == expected
    assert str((await ledger.holdings(P))["USDT"]) == str(expected["USDT"])
    conn = sqlite3.connect(ledger.path)
    try:
        assert rebuild_holdings_sync(conn, P) == expected
        assert all(isinstance(r[0], str) for r in conn.execute("SELECT quantity FROM fills"))
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = conn.execute("SELECT name, sql FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")
        loose = [name for name, sql in tables if not sql.rstrip().endswith("STRICT")]
        assert loose == [], f"every ledger table is STRICT (typed columns); these are not: {loose}"
    finally:
        conn.close()
    assert await ledger.integrity_check() == ["ok"]
    assert integrity_check(ledger.path) == ["ok"]


@pytest.mark.asyncio
async def test_records_survive_a_reopen_and_intents_round_trip_exactly(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    book = await Ledger.open(path)
    intent = make_intent(7)
    await book.record_portfolio(P, "USDT")
    assert await book.record_intent(intent) is True
    assert await book.record_intent(intent) is False
    await book.update_intent_status(intent.id, "executing")
    await book.close()
    book = await Ledger.open(path)
    try:
        last = await book.last_intent(P)
        assert last is not None and last.intent == intent and last.status == "executing" and last.seq == 1
        assert [r.intent.id for r in await book.intents_with_status("executing")] == [intent.id]
        with pytest.raises(LedgerInputError, match="USDT in the ledger"):
            await book.record_portfolio(P, "USDC")
        with pytest.raises(LedgerInputError, match="not in the ledger"):
            await book.record_intent(make_intent(1, portfolio="nobody"))
        with pytest.raises(LedgerInputError, match="must be an exact Decimal"):
            await book.record_transfer(Transfer("t", P, "USDT", 1.5, T0), "deposit")  # type: ignore[arg-type]
    finally:
        await book.close()


class Pragma:
    """A write op that changes the writer connection (simulating a storage failure)."""

    def __init__(self, sql: str) -> None:
        self.sql = sql

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> None:
        value = cur.execute("PRAGMA page_count").fetchone()[0]
        cur.execute(self.sql.format(pages=value))


@pytest.mark.asyncio
async def test_read_only_ledger_refuses_writes_and_turns_unhealthy(ledger: Ledger) -> None:
    await ledger.close()
    book = await Ledger.open(ledger.path, read_only=True)
    try:
        assert book.healthy
        with pytest.raises(LedgerError, match="readonly"):
            await book.record_intent(make_intent())
        assert not book.healthy
        assert (await book.holdings(P))["USDT"] == Decimal("10000")  # reads still work
    finally:
        await book.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(("pragma", "message"), [
    ("PRAGMA query_only = ON", "readonly"),
    ("PRAGMA max_page_count = {pages}", "full"),
])
async def test_storage_failure_mid_life_fails_every_request_of_the_batch(ledger: Ledger, pragma: str,
                                                                         message: str) -> None:
    await ledger.submit([Pragma(pragma)])
    assert ledger.healthy
    intents = [make_intent(seq) for seq in range(1, 21)]
    outcomes = await asyncio.gather(*(ledger.record_intent(i) for i in intents), return_exceptions=True)
    assert all(isinstance(o, LedgerError) and message in str(o) for o in outcomes), outcomes
    assert not ledger.healthy
    assert await ledger.intent_count(P) == 0


def test_ledger_sync_records_a_backtest_whose_holdings_rebuild_exactly(tmp_path: Path) -> None:
    path = tmp_path / "backtest.sqlite"
    spec = make_spec(fee_rate="0.001", capital=Decimal(10000))
    engine, clock, _, executor = make_engine(spec)
    sink = LedgerSync(path, batch_rows=7)
    sink.record_portfolio(spec.name, spec.quote, {"capital": "10000"})
    sink.record_transfer(Transfer("capital", spec.name, "USDT", Decimal(10000), T0), "capital")
    executor.sink = sink
    prices = [(50000.0, 3000.0), (55000.0, 2800.0), (48000.0, 3300.0), (60000.0, 2900.0), (47000.0, 3400.0)]
    groups = [[make_tick("BTC-USDT", b, T0 + k * 400 * SEC, 2.0), make_tick("ETH-USDT", e, T0 + k * 400 * SEC, 0.2)]
              for k, (b, e) in enumerate(prices)]
    run_sequence(engine, clock, groups, executor)
    sink.close()
    conn = sqlite3.connect(path)
    try:
        n_fills = len(run_query(conn, q_fills(spec.name)))
        assert n_fills >= 4
        holdings = rebuild_holdings_sync(conn, spec.name)
        engine_holdings = engine.runtimes[spec.name].portfolio.holdings
        assert {a: q for a, q in holdings.items() if q} == {a: q for a, q in engine_holdings.items() if q}
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    finally:
        conn.close()
    again = LedgerSync(path)
    try:
        ghost = Fill("t1", "k" + "b" * 16 + "000", "BTC-USDT", Side.BUY, Decimal(1), Decimal(1), Decimal(0), "USDT", T0)
        with pytest.raises(UnknownOrder):
            again.on_fill(spec.name, ghost)
    finally:
        again.close()
    assert integrity_check(path) == ["ok"]
