"""The execution actor on a real SQLite ledger with the paper venue: order of legs, sizing, supersession,
observe, stop, refusals, the mailbox, and legs sent concurrently."""
from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from engine.execution import client_order_id
from engine.types import Fill, Leg, Order, Side
from ops.actor_messages import ExecuteIntent, MailboxFull, Reconcile, Stop
from ops.ledger_ops import PutOrderReport, PutOrders, SetIntentStatus, WriteOp
from ops.venues.base import OrderReport, OrderStatus
from tests.integration.actor_kit import (
    FEE,
    START,
    USDT,
    Book,
    FakeTime,
    P,
    RecordingSensor,
    RecordingVenue,
    WatchedLedger,
    assert_consistent,
    buy,
    make_actor,
    make_intent,
    open_ledger,
    running,
    sell,
    status,
)


@pytest.mark.asyncio
async def test_sells_go_first_then_buys_sized_from_the_quote_in_hand(ledger: WatchedLedger) -> None:
    venue, book = RecordingVenue(balances=START), Book(START)
    actor = make_actor(venue, ledger, book, FakeTime())
    intent = make_intent(1, buy("BTC-USDT", "1500"), sell("ETH-USDT", "1"), buy("SOL-USDT", "1400"))
    async with running(actor):
        actor.tell(ExecuteIntent(intent))
        assert await book.outcome(intent) == "complete"
    assert [o.side for o in venue.placed] == [Side.SELL, Side.BUY, Side.BUY]
    assert [o.quote_quantity for o in venue.placed[1:]] == [Decimal("1500"), Decimal("1400")]
    assert await status(ledger, intent) == "complete"
    assert [o.status for o in await ledger.orders_of_intent(intent.id)] == ["filled"] * 3
    assert [f.fill for f in await ledger.fills(P)] == book.fills and len(book.fills) == 3
    assert_consistent(book, await ledger.holdings(P), await venue.balances())
    # every order was recorded as pending (committed) before it was sent
    pending = [op for op in ledger.ops if isinstance(op, PutOrders)]
    assert [o.client_order_id for op in pending for o in op.orders] == [o.client_order_id for o in venue.placed]


@pytest.mark.asyncio
async def test_a_partial_sell_shrinks_the_buys_and_the_quote_never_goes_negative(ledger: WatchedLedger) -> None:
    venue, book = RecordingVenue(balances=START, half_sells=True), Book(START)
    actor = make_actor(venue, ledger, book, FakeTime())
    intent = make_intent(1, sell("ETH-USDT", "1"), buy("BTC-USDT", "1500"), buy("SOL-USDT", "1400"))
    async with running(actor):
        actor.tell(ExecuteIntent(intent))
        assert await book.outcome(intent) == "partial"
    [sold] = [f for f in book.fills if f.side is Side.SELL]
    assert sold.quantity == Decimal("0.5")
    quote_after_sell = START[USDT] + sold.quantity * sold.price - sold.fee
    spends = [o.quote_quantity or Decimal(0) for o in venue.placed if o.side is Side.BUY]
    assert len(spends) == 2 and spends[0] < Decimal("1500") and spends[1] < Decimal("1400")
    assert sum(spends) * (1 + FEE) <= quote_after_sell
    assert book.lowest_quote >= 0 and book.holdings[P][USDT] >= 0
    assert [o.status for o in await ledger.orders_of_intent(intent.id)] == ["expired", "filled", "filled"]
    assert_consistent(book, await ledger.holdings(P), await venue.balances())


@pytest.mark.asyncio
async def test_a_newer_intent_replaces_one_that_has_not_started(ledger: WatchedLedger) -> None:
    venue, book = RecordingVenue(balances=START), Book(START)
    actor = make_actor(venue, ledger, book, FakeTime())
    first, second, third = (make_intent(k, sell("ETH-USDT", "0.1")) for k in (1, 2, 3))
    venue.gate.clear()
    async with running(actor):
        actor.tell(ExecuteIntent(first))
        await asyncio.wait_for(venue.entered.wait(), 10)
        actor.tell(ExecuteIntent(second))
        actor.tell(ExecuteIntent(third))
        await ledger.until(lambda: SetIntentStatus(second.id, "superseded") in ledger.ops)
        assert actor.in_flight == {P: first.id}
        venue.gate.set()
        assert await book.outcome(first) == "complete"
        assert await book.outcome(third) == "complete"
    assert second.id not in book.outcomes
    assert [await status(ledger, i) for i in (first, second, third)] == ["complete", "superseded", "complete"]
    assert [o.intent_id for o in venue.placed] == [first.id, third.id]
    assert book.holdings[P]["ETH"] == Decimal("1.8")


@pytest.mark.asyncio
async def test_observe_intents_are_recorded_and_never_reach_the_venue(ledger: WatchedLedger) -> None:
    venue, book = RecordingVenue(), Book(START)
    actor = make_actor(venue, ledger, book, FakeTime())
    watched = make_intent(1, sell("ETH-USDT", "1"), observe=True)
    real = make_intent(2, sell("ETH-USDT", "0.5"))
    async with running(actor):
        actor.tell(ExecuteIntent(watched))
        actor.tell(ExecuteIntent(real))
        assert await book.outcome(real) == "complete"
    assert await status(ledger, watched) == "observed" and watched.id not in book.outcomes
    assert [o.intent_id for o in venue.placed] == [real.id]
    assert await ledger.orders_of_intent(watched.id) == []


@pytest.mark.asyncio
async def test_stop_finishes_the_step_in_flight_and_parks(ledger: WatchedLedger) -> None:
    venue, book = RecordingVenue(balances=START), Book(START)
    actor = make_actor(venue, ledger, book, FakeTime())
    first = make_intent(1, sell("ETH-USDT", "0.5"), buy("BTC-USDT", "500"))
    waiting, late = make_intent(2, sell("ETH-USDT", "0.1")), make_intent(3, sell("ETH-USDT", "0.1"))
    venue.gate.clear()
    async with running(actor, stop=False):
        actor.tell(ExecuteIntent(first))
        await asyncio.wait_for(venue.entered.wait(), 10)
        actor.tell(ExecuteIntent(waiting))
        actor.tell(Stop(park=True))
        actor.tell(ExecuteIntent(late))
        await ledger.until(lambda: SetIntentStatus(waiting.id, "parked") in ledger.ops)
        venue.gate.set()
    assert book.outcomes == {first.id: "parked", waiting.id: "parked", late.id: "parked"}
    assert [await status(ledger, i) for i in (first, waiting, late)] == ["parked"] * 3
    assert [(o.side, o.intent_id) for o in venue.placed] == [(Side.SELL, first.id)]
    [order] = await ledger.orders_of_intent(first.id)
    assert order.status == "filled"
    assert_consistent(book, await ledger.holdings(P), await venue.balances())


class Pragma:
    """A write op that makes the writer connection read-only (a storage failure)."""

    def apply(self, cur: Any, ctx: Any) -> None:
        cur.execute("PRAGMA query_only = ON")


@pytest.mark.asyncio
async def test_a_ledger_failure_halts_trading(ledger: WatchedLedger) -> None:
    venue, book = RecordingVenue(), Book(START)
    actor = make_actor(venue, ledger, book, FakeTime())
    ops: list[WriteOp] = [Pragma()]
    await ledger.submit(ops)
    first, second = make_intent(1, sell("ETH-USDT", "1")), make_intent(2, sell("ETH-USDT", "1"))
    async with running(actor):
        actor.tell(ExecuteIntent(first))
        assert await book.outcome(first) == "failed"
        actor.tell(ExecuteIntent(second))
        assert await book.outcome(second) == "failed"
    assert actor.halted and not ledger.healthy
    assert venue.placed == [] and book.fills == []


@pytest.mark.asyncio
async def test_bad_intents_are_refused_before_any_order(ledger: WatchedLedger) -> None:
    venue, book = RecordingVenue(), Book(START)
    actor = make_actor(venue, ledger, book, FakeTime())
    wrong_quote = make_intent(1, Leg("ETH-BTC", Side.SELL, Decimal(1), Decimal("0.06"), Decimal("0.06")))
    unlisted = make_intent(2, buy("SOL-USDT", "50"))
    venue._rules.pop("SOL-USDT")
    async with running(actor):
        actor.tell(ExecuteIntent(wrong_quote))
        actor.tell(ExecuteIntent(unlisted))
        assert await book.outcome(wrong_quote) == "failed"
        assert await book.outcome(unlisted) == "failed"
    assert await ledger.orders_of_intent(wrong_quote.id) == []
    [rejected] = await ledger.orders_of_intent(unlisted.id)
    assert rejected.status == "rejected" and "does not list SOL-USDT" in (rejected.error or "")
    assert await ledger.fills() == [] and await ledger.holdings(P) == START

@pytest.mark.asyncio
async def test_the_same_intent_told_twice_is_executed_once(ledger: WatchedLedger) -> None:
    venue, book = RecordingVenue(balances=START), Book(START)
    actor = make_actor(venue, ledger, book, FakeTime())
    intent = make_intent(1, sell("ETH-USDT", "0.5"), buy("BTC-USDT", "500"))
    async with running(actor):
        actor.tell(ExecuteIntent(intent))
        assert await book.finished.get() == (intent.id, "complete")
        actor.tell(ExecuteIntent(intent))
        assert await book.finished.get() == (intent.id, "failed")
    assert len(venue.placed) == 2 and len(book.fills) == 2
    assert await status(ledger, intent) == "complete"


@pytest.mark.asyncio
async def test_the_mailbox_never_refuses_intents_and_bounds_reconciles(ledger: WatchedLedger) -> None:
    actor = make_actor(RecordingVenue(), ledger, Book(START), FakeTime(), mailbox_size=2)
    for k in range(5):
        actor.tell(ExecuteIntent(make_intent(k, sell("ETH-USDT", "0.1"))))
    with pytest.raises(MailboxFull):
        actor.tell(Reconcile())
    assert actor.mailbox_depth == 5
    roomy = make_actor(RecordingVenue(), ledger, Book(START), FakeTime(), mailbox_size=10)
    roomy.tell(Reconcile())
    roomy.tell(Reconcile())
    assert roomy.mailbox_depth == 1
    with pytest.raises(TypeError):
        roomy.tell("rebalance please")  # type: ignore[arg-type]

# legs sent concurrently (a venue that does not answer at once) -----------------------------------------

SPREAD = {"USDT": Decimal("100"), "ETH": Decimal("2"), "SOL": Decimal("10")}


class SlowVenue(RecordingVenue):
    """The paper venue behind a network: orders go out concurrently, and each symbol can be held or twisted."""

    answers_at_once = False

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.held: dict[str, asyncio.Event] = {}
        self.first_answer_new: set[str] = set()
        self.wrong_side: set[str] = set()

    async def place_order(self, order: Order) -> OrderReport:
        if order.symbol in self.held:
            await self.held[order.symbol].wait()
        report = await super().place_order(order)
        if order.symbol in self.first_answer_new:  # accepted now, filled by the time it is polled
            return replace(report, status=OrderStatus.NEW, filled_quantity=Decimal(0), fills=())
        if order.symbol in self.wrong_side:
            other = Side.BUY if order.side is Side.SELL else Side.SELL
            return replace(report, fills=tuple(replace(f, side=other) for f in report.fills))
        return report


class CommittedBook(Book):
    """A book that checks, as each fill is applied, that the ledger file already holds it (committed)."""

    def __init__(self, holdings: dict[str, Decimal], ledger_path: Path) -> None:
        super().__init__(holdings)
        self.ledger_path = ledger_path
        self.applied: dict[str, asyncio.Event] = {}

    def on_fill(self, portfolio: str, fill: Fill) -> None:
        with contextlib.closing(sqlite3.connect(self.ledger_path.resolve().as_uri() + "?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT quantity FROM fills WHERE trade_id = ?", (fill.trade_id,)).fetchone()
        assert row is not None and Decimal(row[0]) == fill.quantity, f"fill {fill.trade_id} applied before its commit"
        super().on_fill(portfolio, fill)
        self.applied.setdefault(fill.symbol, asyncio.Event()).set()

    async def until_applied(self, symbol: str) -> None:
        await asyncio.wait_for(self.applied.setdefault(symbol, asyncio.Event()).wait(), 10)


@pytest_asyncio.fixture
async def spread_ledger(tmp_path: Path) -> AsyncIterator[WatchedLedger]:
    ledger = await open_ledger(tmp_path / "keel.sqlite", SPREAD)
    yield ledger
    await ledger.close()


@pytest.mark.asyncio
async def test_a_slow_leg_never_holds_back_the_fills_of_the_others(spread_ledger: WatchedLedger) -> None:
    venue = SlowVenue(balances=SPREAD)
    book = CommittedBook(SPREAD, spread_ledger.path)
    actor = make_actor(venue, spread_ledger, book, FakeTime())
    intent = make_intent(1, sell("ETH-USDT", "0.5"), sell("SOL-USDT", "5"), buy("BTC-USDT", "1500"))
    venue.held["SOL-USDT"] = asyncio.Event()
    async with running(actor):
        actor.tell(ExecuteIntent(intent))
        await book.until_applied("ETH-USDT")  # committed and applied while the SOL order is still at the door
        assert [f.symbol for f in book.fills] == ["ETH-USDT"] and [o.symbol for o in venue.placed] == ["ETH-USDT"]
        record = await spread_ledger.order(client_order_id(intent.id, 1))
        assert record is not None and record.status == "pending"
        venue.held["SOL-USDT"].set()
        assert await book.outcome(intent) == "complete"
    assert [f.symbol for f in book.fills] == ["ETH-USDT", "SOL-USDT", "BTC-USDT"]
    assert [o.status for o in await spread_ledger.orders_of_intent(intent.id)] == ["filled"] * 3
    assert_consistent(book, await spread_ledger.holdings(P), await venue.balances())


@pytest.mark.asyncio
async def test_a_report_the_ledger_refuses_fails_only_its_own_leg(spread_ledger: WatchedLedger) -> None:
    venue = SlowVenue(balances=SPREAD)
    venue.wrong_side.add("SOL-USDT")
    book, sensor = CommittedBook(SPREAD, spread_ledger.path), RecordingSensor()
    actor = make_actor(venue, spread_ledger, book, FakeTime(), sensor=sensor)
    intent = make_intent(1, sell("ETH-USDT", "0.5"), sell("SOL-USDT", "5"))
    async with running(actor):
        actor.tell(ExecuteIntent(intent))
        assert await book.outcome(intent) == "partial"
    eth, sol = await spread_ledger.orders_of_intent(intent.id)
    assert (eth.status, sol.status) == ("filled", "unknown") and "bad report" in (sol.error or "")
    assert [f.symbol for f in book.fills] == ["ETH-USDT"]
    assert [r.fill.symbol for r in await spread_ledger.fills(P)] == ["ETH-USDT"]
    assert ("bad_answer",) in sensor.of("error")
    # the request with both reports was refused; then the good one was committed on its own
    reports = [op for op in spread_ledger.ops if isinstance(op, PutOrderReport)]
    assert [op.report.symbol for op in reports] == ["ETH-USDT"]


@pytest.mark.asyncio
async def test_an_order_accepted_but_not_yet_filled_is_polled_until_it_fills(spread_ledger: WatchedLedger) -> None:
    venue = SlowVenue(balances=SPREAD)
    venue.first_answer_new.add("SOL-USDT")
    clock, book, sensor = FakeTime(), CommittedBook(SPREAD, spread_ledger.path), RecordingSensor()
    actor = make_actor(venue, spread_ledger, book, clock, sensor=sensor)
    intent = make_intent(1, sell("ETH-USDT", "0.5"), sell("SOL-USDT", "5"), buy("BTC-USDT", "1500"))
    async with running(actor):
        actor.tell(ExecuteIntent(intent))
        assert await book.outcome(intent) == "complete"
    assert [f.symbol for f in book.fills] == ["ETH-USDT", "SOL-USDT", "BTC-USDT"]
    assert clock.sleeps, "the SOL order was polled"
    assert sensor.of("order").count(("SOL-USDT", "sell", "filled")) == 1
    assert [o.status for o in await spread_ledger.orders_of_intent(intent.id)] == ["filled"] * 3
    assert_consistent(book, await spread_ledger.holdings(P), await venue.balances())


@pytest.mark.asyncio
@pytest.mark.parametrize("venue_kind", [RecordingVenue, SlowVenue], ids=["answers_at_once", "concurrent"])
async def test_the_outcome_is_committed_with_the_last_fills(spread_ledger: WatchedLedger,
                                                             venue_kind: type[RecordingVenue]) -> None:
    venue = venue_kind(balances=SPREAD)
    book = CommittedBook(SPREAD, spread_ledger.path)
    actor = make_actor(venue, spread_ledger, book, FakeTime())
    intent = make_intent(1, sell("ETH-USDT", "0.5"), buy("BTC-USDT", "700"), buy("SOL-USDT", "200"))
    async with running(actor):
        actor.tell(ExecuteIntent(intent))
        assert await book.outcome(intent) == "complete"
    *reports, done = spread_ledger.committed[-1]
    assert done == SetIntentStatus(intent.id, "complete")
    assert [op.report.symbol for op in reports if isinstance(op, PutOrderReport)] == ["BTC-USDT", "SOL-USDT"]
    assert sum(isinstance(op, SetIntentStatus) for op in spread_ledger.ops) == 1
    assert await status(spread_ledger, intent) == "complete"
