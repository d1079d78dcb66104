"""The execution actor on a real SQLite ledger, with the paper venue and with ccxt against the fake Binance."""
from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from engine.execution import client_order_id, fill_deltas, intent_id
from engine.sensor import Sensor
from engine.types import Fill, Intent, Leg, Order, Reason, Side, SymbolRules, Transfer
from ops.actor import ExecutionActor
from ops.actor_messages import ExecuteIntent, MailboxFull, Reconcile, Stop
from ops.ledger import Ledger
from ops.ledger_sync import PutIntent, PutOrderReport, PutOrders, SetIntentStatus, WriteOp
from ops.venues.base import OrderReport, OrderStatus, OrderUnknownState, VenueUnavailable
from ops.venues.binance_fake import ORDER, BinanceFake, Fault, SymbolSpec
from ops.venues.ccxt_venue import CcxtVenue
from ops.venues.paper import PaperVenue
from tests.builders import T0

P = "main"
USDT = "USDT"
FEE = Decimal("0.001")
RULES = {"BTC-USDT": SymbolRules(Decimal("0.00001"), Decimal("5")), "ETH-USDT": SymbolRules(Decimal("0.0001"), Decimal("10")),
         "SOL-USDT": SymbolRules(Decimal("0.001"), Decimal("5"))}
PRICES = {"BTC-USDT": (50000.0, 50010.0), "ETH-USDT": (3000.0, 3001.0), "SOL-USDT": (100.0, 100.1)}
START = {"USDT": Decimal("100"), "ETH": Decimal("2")}


class FakeTime:
    """The actor's sleep and monotonic clock: sleeping advances time at once and records the wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, secs: float) -> None:
        self.sleeps.append(secs)
        self.now += secs
        await asyncio.sleep(0)


class WatchedLedger(Ledger):
    """The real ledger, plus a way to await a committed write."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ops: list[object] = []
        self.committed: list[list[object]] = []  # the ops of each committed request
        self.changed = asyncio.Condition()

    async def submit(self, ops: Any) -> list[Any]:
        ops = list(ops)
        result = await super().submit(ops)
        self.ops.extend(ops)
        self.committed.append(ops)
        async with self.changed:
            self.changed.notify_all()
        return result

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), 10)


class Book:
    """The engine's side of the actor: holdings applied from committed fills, and outcomes."""

    def __init__(self, holdings: dict[str, Decimal]) -> None:
        self.holdings = {P: dict(holdings)}
        self.fills: list[Fill] = []
        self.lowest_quote = holdings[USDT]
        self.outcomes: dict[str, str] = {}
        self.finished: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._done: dict[str, asyncio.Future[str]] = {}

    def on_fill(self, portfolio: str, fill: Fill) -> None:
        held = self.holdings[portfolio]
        for asset, delta in fill_deltas(fill, USDT).items():
            held[asset] = held.get(asset, Decimal(0)) + delta
        self.lowest_quote = min(self.lowest_quote, held[USDT])
        self.fills.append(fill)

    def on_done(self, intent: Intent, outcome: str) -> None:
        self.outcomes[intent.id] = outcome
        self.finished.put_nowait((intent.id, outcome))
        future = self._future(intent.id)
        if not future.done():
            future.set_result(outcome)

    def _future(self, key: str) -> asyncio.Future[str]:
        return self._done.setdefault(key, asyncio.get_running_loop().create_future())

    async def outcome(self, intent: Intent) -> str:
        return await asyncio.wait_for(self._future(intent.id), 20)


class RecordingVenue(PaperVenue):
    """The paper venue, recording what it is asked to place; a closed `gate` holds orders at the door."""

    def __init__(self, *, half_sells: bool = False, lose_next: int = 0, **kw: Any) -> None:
        super().__init__(PRICES.__getitem__, fee_rate=FEE, rules=RULES, **kw)
        self.placed: list[Order] = []
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.half_sells = half_sells
        self.lose_next = lose_next

    async def place_order(self, order: Order) -> OrderReport:
        self.placed.append(order)
        self.entered.set()
        await self.gate.wait()
        if self.lose_next:
            self.lose_next -= 1
            raise OrderUnknownState(f"paper: the request for {order.client_order_id} was lost on the way")
        if self.half_sells and order.side is Side.SELL:
            report = await super().place_order(replace(order, quantity=order.quantity / 2))
            return replace(report, status=OrderStatus.EXPIRED)
        return await super().place_order(order)


def sell(symbol: str, quantity: str) -> Leg:
    price = Decimal(repr(PRICES[symbol][0]))
    return Leg(symbol, Side.SELL, Decimal(quantity), price, Decimal(quantity) * price)


def buy(symbol: str, notional: str) -> Leg:
    price = Decimal(repr(PRICES[symbol][1]))
    return Leg(symbol, Side.BUY, Decimal(notional) / price, price, Decimal(notional))


def make_intent(seq: int, *legs: Leg, observe: bool = False) -> Intent:
    return Intent(intent_id(P, seq, T0 + seq), P, T0 + seq, Reason.THRESHOLD, 0.07, {}, {}, legs, observe=observe)


async def open_ledger(path: Path, holdings: dict[str, Decimal] = START) -> WatchedLedger:
    ledger = await WatchedLedger.open(path)
    await ledger.record_portfolio(P, USDT)
    for asset, amount in holdings.items():
        await ledger.record_transfer(Transfer(f"capital-{asset}", P, asset, amount, T0), "capital")
    return ledger  # type: ignore[return-value]


class RecordingSensor(Sensor):
    """Keeps what the actor reports."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_order(self, portfolio: str, symbol: str, side: str, status: str) -> None:
        self.calls.append(("order", symbol, side, status))

    def on_fill(self, portfolio: str, fill: Fill, fee_quote: float, latency_ns: int) -> None:
        self.calls.append(("fill", fill.trade_id, fee_quote, latency_ns))

    def on_execution_error(self, portfolio: str, kind: str) -> None:
        self.calls.append(("error", kind))

    def on_rebalance_done(self, portfolio: str, intent_id: str, outcome: str) -> None:
        self.calls.append(("done", intent_id, outcome))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.calls if c[0] == kind]


def make_actor(venue: Any, ledger: Ledger, book: Book, clock: FakeTime, **kw: Any) -> ExecutionActor:
    return ExecutionActor(venue, ledger, holdings_of=book.holdings.__getitem__, on_fill=book.on_fill,
                          on_done=book.on_done, quote_of={P: USDT}.__getitem__, fee_rate_of=lambda p: FEE,
                          rules_of=lambda p: RULES, sleep=clock.sleep, monotonic=clock.monotonic,
                          rng=random.Random(7), **kw)


@contextlib.asynccontextmanager
async def running(actor: ExecutionActor, stop: bool = True) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(actor.run())
    try:
        yield task
    finally:
        if stop:
            actor.tell(Stop())
        await asyncio.wait_for(task, 20)


async def status(ledger: Ledger, intent: Intent) -> str:
    record = await ledger.intent(intent.id)
    return record.status if record is not None else "absent"


@pytest_asyncio.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[WatchedLedger]:
    book = await open_ledger(tmp_path / "keel.sqlite")
    yield book
    await book.close()


# paper venue ------------------------------------------------------------------------------------------


def assert_consistent(book: Book, held: dict[str, Decimal], venue_balances: dict[str, Decimal]) -> None:
    """Engine holdings == ledger holdings == what the venue holds, for every asset of the portfolio."""
    assets = set(held) | set(book.holdings[P]) | {a for a in venue_balances if venue_balances[a]}
    for asset in assets:
        zero = Decimal(0)
        assert held.get(asset, zero) == book.holdings[P].get(asset, zero) == venue_balances.get(asset, zero), asset


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
async def test_recover_records_fills_of_a_pending_order_once_and_marks_unknown_ones_not_placed(
        tmp_path: Path, ledger: WatchedLedger) -> None:
    journal = tmp_path / "paper.sqlite"
    intent = make_intent(1, sell("ETH-USDT", "0.5"), buy("BTC-USDT", "50"))
    sent = Order(client_order_id(intent.id, 0), intent.id, P, 0, "ETH-USDT", Side.SELL, Decimal("0.5"))
    never = Order(client_order_id(intent.id, 1), intent.id, P, 1, "BTC-USDT", Side.BUY, Decimal("0.001"),
                  quote_quantity=Decimal(50))
    await ledger.submit([PutIntent(intent, "executing"), PutOrders((sent, never))])
    crashed = RecordingVenue(journal=journal, balances=START)
    await crashed.place_order(sent)  # the process died after sending, before recording the report
    venue = RecordingVenue(journal=journal, balances={})  # restarted: the journal knows what happened
    book = Book(await ledger.holdings(P))
    actor = make_actor(venue, ledger, book, FakeTime())
    summary = await actor.recover()
    assert (summary.orders_checked, summary.fills_recorded, summary.not_placed, summary.settled,
            summary.intents_interrupted) == (2, 1, 1, 1, 1)
    again = await actor.recover()
    assert (again.orders_checked, again.fills_recorded, again.intents_interrupted) == (0, 0, 0)
    assert [f.client_order_id for f in book.fills] == [sent.client_order_id]
    assert [(o.status, o.filled) for o in await ledger.orders_of_intent(intent.id)] == [
        ("filled", Decimal("0.5")), ("not_placed", Decimal(0))]
    assert await status(ledger, intent) == "interrupted"
    assert_consistent(book, await ledger.holdings(P), await venue.balances())
    await venue.close()
    await crashed.close()


@pytest.mark.asyncio
async def test_an_order_lost_in_flight_is_never_resent_and_reconcile_settles_it(ledger: WatchedLedger) -> None:
    venue, book, clock = RecordingVenue(balances=START, lose_next=1), Book(START), FakeTime()
    actor = make_actor(venue, ledger, book, clock, max_retry_secs=5.0)
    intent = make_intent(1, sell("ETH-USDT", "1"))
    [order] = (Order(client_order_id(intent.id, 0), intent.id, P, 0, "ETH-USDT", Side.SELL, Decimal(1)),)
    async with running(actor):
        actor.tell(ExecuteIntent(intent))
        assert await book.outcome(intent) == "partial"
        record = await ledger.order(order.client_order_id)
        assert record is not None and record.status == "unknown" and "lost on the way" in (record.error or "")
        assert len(venue.placed) == 1 and 4.0 < clock.now <= 5.0  # looked up with backoff, never sent again
        await RecordingVenue.place_order(venue, order)  # the lost request reaches the exchange after all
        actor.tell(Reconcile())
        await ledger.until(lambda: any(isinstance(op, PutOrderReport) for op in ledger.ops))
    record = await ledger.order(order.client_order_id)
    assert record is not None and record.status == "filled"
    assert [f.client_order_id for f in book.fills] == [order.client_order_id]
    assert_consistent(book, await ledger.holdings(P), await venue.balances())


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


class DownVenue(RecordingVenue):
    """A venue that cannot be reached for lookups while `down`."""

    down = True

    async def fetch_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        if self.down:
            raise VenueUnavailable("paper: connection refused")
        return await super().fetch_order(client_order_id, symbol)


@pytest.mark.asyncio
async def test_recovery_while_the_venue_is_down_leaves_orders_open_instead_of_guessing(ledger: WatchedLedger) -> None:
    intent = make_intent(1, sell("ETH-USDT", "0.5"))
    sent = Order(client_order_id(intent.id, 0), intent.id, P, 0, "ETH-USDT", Side.SELL, Decimal("0.5"))
    await ledger.submit([PutIntent(intent, "executing"), PutOrders((sent,))])
    venue, book, clock = DownVenue(balances=START), Book(START), FakeTime()
    await RecordingVenue.place_order(venue, sent)
    actor = make_actor(venue, ledger, book, clock, max_retry_secs=3.0)
    summary = await actor.recover()
    assert (summary.orders_checked, summary.not_placed, summary.still_open, summary.fills_recorded) == (1, 0, 1, 0)
    record = await ledger.order(sent.client_order_id)
    assert record is not None and record.status == "pending" and clock.now > 2.0
    venue.down = False
    summary = await actor.reconcile()
    assert (summary.settled, summary.fills_recorded, summary.not_placed) == (1, 1, 0)
    assert_consistent(book, await ledger.holdings(P), await venue.balances())


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


# ccxt venue against the fake Binance ----------------------------------------------------------------

KEY = "keel-actor-key-7XpQ2"
SECRET = "keel-actor-secret-9WmZ4"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[BinanceFake]:
    server = BinanceFake(KEY, SECRET, dict(START), {
        "BTC-USDT": SymbolSpec(step_size=Decimal("0.00001"), tick_size=Decimal("0.01"), min_notional=Decimal("5")),
        "ETH-USDT": SymbolSpec(step_size=Decimal("0.0001"), tick_size=Decimal("0.01"), min_notional=Decimal("10")),
    }, fee_rate=FEE)
    await server.start()
    server.set_price("BTC-USDT", "50000", "50010")
    server.set_price("ETH-USDT", "3000", "3001")
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def ccxt_venue(fake: BinanceFake) -> AsyncIterator[CcxtVenue]:
    venue = CcxtVenue("binance", api_key=KEY, api_secret=SECRET, base_url=fake.base_url, timeout_secs=0.5,
                      enable_rate_limit=False)
    yield venue
    await venue.close()


REBALANCE = (sell("ETH-USDT", "1"), buy("BTC-USDT", "2900"))
SELL_CID = client_order_id(make_intent(1).id, 0)


@pytest.mark.asyncio
@pytest.mark.parametrize(("fault", "outcome", "sell_status", "posts"), [
    (None, "complete", "filled", 1),
    (Fault.rate_limited(retry_after_secs=2), "complete", "filled", 2),
    (Fault.insufficient_balance(), "partial", "rejected", 1),
    (Fault.min_notional(), "partial", "rejected", 1),
    (Fault.hang(hang_secs=10, processed=True), "complete", "filled", 1),
    (Fault.partial_fill(Decimal("0.5")), "partial", "expired", 1),
    (Fault.worse_price(Decimal("100")), "complete", "filled", 1),
    (Fault.broken_json(), "complete", "filled", 1),
], ids=["clean", "429", "insufficient", "min_notional", "timeout", "partial_fill", "worse_price", "broken_json"])
async def test_ccxt_faults_keep_the_ledger_equal_to_the_exchange(
        fake: BinanceFake, ccxt_venue: CcxtVenue, ledger: WatchedLedger, fault: Fault | None, outcome: str,
        sell_status: str, posts: int) -> None:
    clock, book, sensor = FakeTime(), Book(START), RecordingSensor()
    actor = make_actor(ccxt_venue, ledger, book, clock, sensor=sensor)
    intent = make_intent(1, *REBALANCE)
    if fault is not None:
        fake.inject(fault)
    async with running(actor):
        actor.tell(ExecuteIntent(intent))
        assert await book.outcome(intent) == outcome
    sell_order, buy_order = await ledger.orders_of_intent(intent.id)
    assert sell_order.order.client_order_id == SELL_CID and sell_order.status == sell_status
    assert fake.orders_by_client_id[SELL_CID] == posts
    assert len(fake.orders_for(SELL_CID)) == (0 if sell_status == "rejected" else 1)
    ledger_fills = await ledger.fills(P)
    assert sorted(r.fill.trade_id for r in ledger_fills) == sorted(str(t.trade_id) for t in fake.trades)
    assert {(r.fill.trade_id, r.fill.price) for r in ledger_fills} == {(str(t.trade_id), t.price) for t in fake.trades}
    assert buy_order.status == "filled" and book.lowest_quote >= 0
    assert_consistent(book, await ledger.holdings(P), fake.balances)
    assert sensor.of("done") == [(intent.id, outcome)]
    assert [f[0] for f in sensor.of("fill")] == [r.fill.trade_id for r in ledger_fills]
    assert all(fee > 0 and latency > 0 for _, fee, latency in sensor.of("fill"))
    assert ("ETH-USDT", "sell", "sent") in sensor.of("order") and ("BTC-USDT", "buy", "filled") in sensor.of("order")
    expected_errors = {None: [], "rate_limited": ["rate_limited"], "insufficient_balance": ["insufficient_funds"],
                       "min_notional": ["rejected"], "hang": ["unknown_state"], "broken_json": ["bad_answer"]}
    if fault is None or fault.kind in expected_errors:
        assert [e[0] for e in sensor.of("error")] == expected_errors[fault.kind if fault else None]
    if fault is not None and fault.kind == "rate_limited":
        assert any(2.0 <= s <= 2.2 for s in clock.sleeps), clock.sleeps
    if sell_status == "rejected":
        expected = "insufficient" if fault is not None and fault.kind == "insufficient_balance" else "NOTIONAL"
        assert expected.lower() in (sell_order.error or "").lower()
        assert buy_order.order.quote_quantity is not None and buy_order.order.quote_quantity < Decimal(100)
    if sell_status == "expired":
        assert buy_order.order.quote_quantity is not None and buy_order.order.quote_quantity < Decimal(2900)


@pytest.mark.asyncio
async def test_ccxt_unlisted_symbol_is_rejected_and_nothing_else_changes(
        fake: BinanceFake, ccxt_venue: CcxtVenue, ledger: WatchedLedger) -> None:
    book = Book(START)
    actor = make_actor(ccxt_venue, ledger, book, FakeTime())
    intent = make_intent(1, buy("SOL-USDT", "50"))
    async with running(actor):
        actor.tell(ExecuteIntent(intent))
        assert await book.outcome(intent) == "failed"
    [order] = await ledger.orders_of_intent(intent.id)
    assert order.status == "rejected" and "does not list SOL-USDT" in (order.error or "")
    assert fake.requests[ORDER] == 0 and await ledger.fills() == []
    assert await ledger.holdings(P) == START == fake.balances


@pytest.mark.asyncio
async def test_ccxt_recover_settles_a_pending_order_the_exchange_filled(
        fake: BinanceFake, ccxt_venue: CcxtVenue, ledger: WatchedLedger) -> None:
    intent = make_intent(1, *REBALANCE)
    sent = Order(SELL_CID, intent.id, P, 0, "ETH-USDT", Side.SELL, Decimal("1"))
    await ledger.submit([PutIntent(intent, "executing"), PutOrders((sent,))])
    fake.inject(Fault.split_fills(3))
    await ccxt_venue.place_order(sent)  # sent, then the process died
    book = Book(await ledger.holdings(P))
    summary = await make_actor(ccxt_venue, ledger, book, FakeTime()).recover()
    assert (summary.fills_recorded, summary.settled, summary.intents_interrupted) == (3, 1, 1)
    assert (await make_actor(ccxt_venue, ledger, book, FakeTime()).recover()).fills_recorded == 0
    assert len(book.fills) == 3
    assert_consistent(book, await ledger.holdings(P), fake.balances)
