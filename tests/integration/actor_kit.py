"""Builders for the execution actor's integration tests: a watched ledger, the engine's book, a recording
paper venue and sensor, and time that advances when the actor sleeps."""
from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.execution import fill_deltas, intent_id
from engine.sensor import Sensor
from engine.types import Fill, Intent, Leg, Order, Reason, Side, SymbolRules, Transfer
from ops.actor import ExecutionActor
from ops.actor_messages import Stop
from ops.ledger import Ledger
from ops.venues.base import OrderReport, OrderStatus, OrderUnknownState
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
    """A sell leg of `quantity` at the bid."""
    price = Decimal(repr(PRICES[symbol][0]))
    return Leg(symbol, Side.SELL, Decimal(quantity), price, Decimal(quantity) * price)


def buy(symbol: str, notional: str) -> Leg:
    """A buy leg spending `notional` of the quote at the ask."""
    price = Decimal(repr(PRICES[symbol][1]))
    return Leg(symbol, Side.BUY, Decimal(notional) / price, price, Decimal(notional))


def make_intent(seq: int, *legs: Leg, observe: bool = False) -> Intent:
    """An intent of portfolio P, numbered `seq`, made of `legs`."""
    return Intent(intent_id(P, seq, T0 + seq), P, T0 + seq, Reason.THRESHOLD, 0.07, {}, {}, legs, observe=observe)


async def open_ledger(path: Path, holdings: dict[str, Decimal] = START) -> WatchedLedger:
    """A fresh ledger at `path` holding portfolio P funded with `holdings`."""
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
    """An actor wired to `book` and `clock`, with seeded jitter; `kw` goes to ExecutionActor."""
    return ExecutionActor(venue, ledger, holdings_of=book.holdings.__getitem__, on_fill=book.on_fill,
                          on_done=book.on_done, quote_of={P: USDT}.__getitem__, fee_rate_of=lambda p: FEE,
                          rules_of=lambda p: RULES, sleep=clock.sleep, monotonic=clock.monotonic,
                          rng=random.Random(7), **kw)


@contextlib.asynccontextmanager
async def running(actor: ExecutionActor, stop: bool = True) -> AsyncIterator[asyncio.Task[None]]:
    """Run the actor for the block; Stop it at the end (unless `stop` is false) and await its task."""
    task = asyncio.create_task(actor.run())
    try:
        yield task
    finally:
        if stop:
            actor.tell(Stop())
        await asyncio.wait_for(task, 20)


async def status(ledger: Ledger, intent: Intent) -> str:
    """The intent's status in the ledger, or "absent"."""
    record = await ledger.intent(intent.id)
    return record.status if record is not None else "absent"


def assert_consistent(book: Book, held: dict[str, Decimal], venue_balances: dict[str, Decimal]) -> None:
    """Engine holdings == ledger holdings == what the venue holds, for every asset of the portfolio."""
    assets = set(held) | set(book.holdings[P]) | {a for a in venue_balances if venue_balances[a]}
    for asset in assets:
        zero = Decimal(0)
        assert held.get(asset, zero) == book.holdings[P].get(asset, zero) == venue_balances.get(asset, zero), asset
