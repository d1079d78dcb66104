"""Synchronous runners: the paper executor for backtests, and the plain per-tick replay loop."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Protocol

from engine.clock import ReplayClock
from engine.engine import Engine
from engine.execution import buy_orders, sell_orders
from engine.paper import paper_fill
from engine.planner import DEFAULT_RULES
from engine.types import Fill, Intent, Order, Reason, Tick, split_symbol


class FillSink(Protocol):
    """Where a synchronous run records what happened (the backtest's SQLite ledger, or a list)."""

    def on_intent(self, intent: Intent) -> None:
        """An intent was emitted."""

    def on_order(self, order: Order, status: str) -> None:
        """An order was sent and ended with this status."""

    def on_fill(self, portfolio: str, fill: Fill) -> None:
        """A fill happened (before it is applied)."""


class ListSink:
    """Keeps everything in lists (tests, benchmarks)."""

    def __init__(self) -> None:
        self.intents: list[Intent] = []
        self.orders: list[tuple[Order, str]] = []
        self.fills: list[tuple[str, Fill]] = []

    def on_intent(self, intent: Intent) -> None:
        """Record an intent."""
        self.intents.append(intent)

    def on_order(self, order: Order, status: str) -> None:
        """Record an order."""
        self.orders.append((order, status))

    def on_fill(self, portfolio: str, fill: Fill) -> None:
        """Record a fill."""
        self.fills.append((portfolio, fill))


class PaperExecutor:
    """Executes intents at once against the engine's own book: sells, then buys from the quote received."""

    def __init__(self, engine: Engine, sink: FillSink, *, slippage_bps: Decimal = Decimal(0)) -> None:
        self.engine = engine
        self.sink = sink
        self.slippage_bps = slippage_bps

    def execute(self, intents: Iterable[Intent]) -> None:
        """Run each intent to completion."""
        for intent in intents:
            self.sink.on_intent(intent)
            if intent.observe and intent.reason is not Reason.START:
                continue
            rt = self.engine.runtimes[intent.portfolio]
            p = rt.portfolio
            virtual = intent.observe
            for order in sell_orders(intent, p.holdings):
                self._fill(intent, order, virtual)
            for order in buy_orders(intent, p.holdings, p.quote, rt.spec.fee_rate if not virtual else Decimal(0),
                                    rt.spec.rules):
                self._fill(intent, order, virtual)
            self.engine.intent_done(intent.portfolio, intent)

    def _fill(self, intent: Intent, order: Order, virtual: bool) -> None:
        engine = self.engine
        rt = engine.runtimes[intent.portfolio]
        i = engine.book.index(order.symbol)
        bid, ask = engine.book.bid[i], engine.book.ask[i]
        if virtual:
            bid = ask = engine.book.mid[i]
        fill = paper_fill(
            order, bid, ask,
            quote=split_symbol(order.symbol)[1],
            fee_rate=Decimal(0) if virtual else rt.spec.fee_rate,
            slippage_bps=Decimal(0) if virtual else self.slippage_bps,
            rules=rt.spec.rules.get(order.symbol, DEFAULT_RULES),
            trade_id=f"{order.client_order_id}-1",
            ts_ns=engine.clock.now_ns(),
        )
        self.sink.on_order(order, "filled" if fill is not None else "rejected")
        if fill is not None:
            self.sink.on_fill(intent.portfolio, fill)
            engine.apply_fill(intent.portfolio, fill)


def tick_groups(ticks: Iterable[Tick]) -> Iterator[list[Tick]]:
    """Consecutive ticks that share a receive time, as lists."""
    group: list[Tick] = []
    ts = None
    for t in ticks:
        if t.ts_recv_ns != ts and group:
            yield group
            group = []
        ts = t.ts_recv_ns
        group.append(t)
    if group:
        yield group


def run_per_tick(engine: Engine, clock: ReplayClock, ticks: Iterable[Tick], executor: PaperExecutor) -> None:
    """The plain replay: per group, advance the clock (timers first), then apply and evaluate."""
    run_sequence(engine, clock, tick_groups(ticks), executor)


def run_sequence(engine: Engine, clock: ReplayClock, groups: Iterable[Sequence[Tick]], executor: PaperExecutor) -> None:
    """Replay ticks already grouped by receive time."""
    for group in groups:
        clock.advance_to(group[0].ts_recv_ns)
        executor.execute(engine.take_intents())
        executor.execute(engine.on_tick(group[0]) if len(group) == 1 else engine.on_ticks(group))
