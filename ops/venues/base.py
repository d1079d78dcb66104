"""The async venue interface the execution actor talks to, and the errors venues raise."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from engine.types import Fill, Order, SymbolRules


class OrderStatus(enum.StrEnum):
    """Venue order status, normalised."""

    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"


TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED})


@dataclass(frozen=True, slots=True)
class OrderReport:
    """What a venue says about one order: its status, how much filled, and the fills it knows of."""

    client_order_id: str
    order_id: str
    symbol: str
    status: OrderStatus
    filled_quantity: Decimal
    fills: tuple[Fill, ...] = ()


class VenueError(Exception):
    """Base of every venue failure; `kind` labels the metric and the log line."""

    kind = "venue"


class RateLimited(VenueError):
    """HTTP 429/418: back off for `retry_after` seconds (None when the venue did not say)."""

    kind = "rate_limited"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InsufficientFunds(VenueError):
    """The venue refused the order for lack of balance."""

    kind = "insufficient_funds"


class OrderRejected(VenueError):
    """The venue refused the order (filter failure, minimum notional, bad symbol...)."""

    kind = "rejected"


class OrderUnknownState(VenueError):
    """The request timed out or broke after sending: the order may exist. Look it up by client id."""

    kind = "unknown_state"


class VenueUnavailable(VenueError):
    """The venue could not be reached (5xx, refused connection) before the order was accepted."""

    kind = "unavailable"


class BadVenueAnswer(VenueError):
    """The venue answered something that does not parse or does not make sense."""

    kind = "bad_answer"


class Venue(Protocol):
    """An exchange session. Implementations never retry order placement on their own.

    Optionally a venue has `answers_at_once: bool`, True when `place_order` never waits (the paper venue
    without latency or journal): the actor then sends its orders one after another rather than as tasks.
    """

    name: str

    async def load_rules(self, symbols: list[str]) -> dict[str, SymbolRules]:
        """Step size and minimum notional per symbol (`BTC-USDT`)."""
        ...

    async def balances(self) -> dict[str, Decimal]:
        """Free balance per asset."""
        ...

    async def place_order(self, order: Order) -> OrderReport:
        """Send one order (market, or limit IOC when `order.price` is set); returns its report."""
        ...

    async def fetch_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """Look an order up by client order id; None when the venue does not know it."""
        ...

    async def cancel_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """Cancel an open order; None when the venue does not know it."""
        ...

    async def close(self) -> None:
        """Release the session."""
        ...
