"""The execution actor's closed set of messages, its bounded mailbox, and its small values and pure rules."""
from __future__ import annotations

import asyncio
import enum
import re
from collections import deque
from dataclasses import dataclass, field

from engine.types import Fill, Intent, split_symbol
from feeds.backoff import Backoff
from ops.venues.base import (
    TERMINAL,
    InsufficientFunds,
    OrderRejected,
    OrderReport,
    OrderStatus,
    OrderUnknownState,
    VenueError,
)

_INTENT_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True, slots=True)
class ExecuteIntent:
    """Execute this intent (a newer one for the same portfolio replaces it while it has not started)."""

    intent: Intent


@dataclass(frozen=True, slots=True)
class Reconcile:
    """Look up every open order (pending, new, partially filled, unknown) at the venue and settle it."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the actor. park: finish the order step in flight, start no new legs, park the intents;
    otherwise finish every accepted intent first."""

    park: bool = True


ActorMessage = ExecuteIntent | Reconcile | Stop


class MailboxFull(Exception):
    """The mailbox is full and the message may be dropped (only `Reconcile` ever is)."""


class Mailbox:
    """A FIFO bounded for droppable messages; intents and Stop are never refused (call from the loop's thread)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"mailbox size must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._items: deque[ActorMessage] = deque()
        self._ready = asyncio.Event()
        self._reconcile_queued = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, msg: ActorMessage) -> None:
        """Queue a message; MailboxFull only for a droppable one when full (a queued Reconcile absorbs another)."""
        if isinstance(msg, Reconcile):
            if self._reconcile_queued:
                return
            if len(self._items) >= self.maxsize:
                raise MailboxFull(f"execution actor mailbox full ({len(self._items)} messages): Reconcile dropped")
            self._reconcile_queued = True
        elif not isinstance(msg, ExecuteIntent | Stop):
            raise TypeError(f"the execution actor does not take {type(msg).__name__}")
        self._items.append(msg)
        self._ready.set()

    def get_nowait(self) -> ActorMessage | None:
        """The next message, or None when empty."""
        if not self._items:
            return None
        msg = self._items.popleft()
        if isinstance(msg, Reconcile):
            self._reconcile_queued = False
        return msg

    async def get(self) -> ActorMessage:
        """Wait for the next message."""
        while True:
            msg = self.get_nowait()
            if msg is not None:
                return msg
            self._ready.clear()
            await self._ready.wait()


class LegOutcome(enum.StrEnum):
    """How one leg (order) of an intent ended."""

    FILLED = "filled"
    PARTIAL = "partial"
    FAILED = "failed"
    UNKNOWN = "unknown"
    PARKED = "parked"


@dataclass(frozen=True, slots=True)
class RecoverySummary:
    """What `recover()` (or a Reconcile) found and did."""

    orders_checked: int = 0
    fills_recorded: int = 0
    not_placed: int = 0
    settled: int = 0
    still_open: int = 0
    intents_interrupted: int = 0


ORDER_BACKOFF = Backoff(initial_secs=0.05, cap_secs=2.0)  # polls and retries of one order: fast, capped at 2 s


class ActorCallbackFailed(RuntimeError):
    """`on_fill` or `on_done` raised: the engine no longer matches the ledger, so the actor stops."""


@dataclass(slots=True)
class LegProgress:
    """What one leg has reported so far: statuses sent to the sensor, new fills committed."""

    client_order_id: str
    side: str
    seen: set[str] = field(default_factory=set)
    new_fills: int = 0


def refused(exc: VenueError) -> bool:
    """The venue refused the order outright, so nothing is live (auth is the ccxt venue's `VenueAuthFailed`)."""
    return not isinstance(exc, OrderUnknownState) and (
        isinstance(exc, InsufficientFunds | OrderRejected) or exc.kind == "auth")


def leg_outcome(report: OrderReport) -> LegOutcome:
    """How a leg ended, from the venue's last report."""
    if report.status is OrderStatus.FILLED:
        return LegOutcome.FILLED
    if report.status not in TERMINAL:
        return LegOutcome.UNKNOWN
    return LegOutcome.PARTIAL if report.filled_quantity > 0 or report.fills else LegOutcome.FAILED


def intent_outcome(planned_legs: int, results: list[LegOutcome], parked: bool) -> str:
    """complete (every planned leg filled) | partial (something traded or may have) | failed | parked."""
    if parked or LegOutcome.PARKED in results:
        return "parked"
    if len(results) == planned_legs and all(r is LegOutcome.FILLED for r in results):
        return "complete"
    if any(r in (LegOutcome.FILLED, LegOutcome.PARTIAL, LegOutcome.UNKNOWN) for r in results):
        return "partial"
    return "failed"


def fee_in_quote(fill: Fill) -> float:
    """The fill's fee valued in its symbol's quote (0 for a fee paid in a third asset)."""
    base, quote = split_symbol(fill.symbol)
    if fill.fee_asset == quote:
        return float(fill.fee)
    return float(fill.fee * fill.price) if fill.fee_asset == base else 0.0


def intent_problem(intent: Intent, quote: str | None) -> str | None:
    """Why an intent cannot be executed (None when it can); `quote` is None for an unknown portfolio."""
    if not _INTENT_ID.match(intent.id):
        return f"intent id {intent.id!r} is not 16 hex digits"
    if quote is None:
        return f"unknown portfolio {intent.portfolio!r}"
    for leg in intent.legs:
        try:
            _, leg_quote = split_symbol(leg.symbol)
        except ValueError as exc:
            return str(exc)
        if leg_quote != quote:
            return f"leg {leg.symbol} is not in the portfolio's quote {quote}"
        if not (leg.quantity.is_finite() and leg.quantity >= 0 and leg.expected_price.is_finite()
                and leg.expected_price > 0 and leg.notional.is_finite() and leg.notional >= 0):
            return f"leg {leg.symbol}: quantity {leg.quantity}, price {leg.expected_price}, notional {leg.notional}"
    return None
