"""Messages of the core: ticks, intents, legs, orders and fills (frozen, slotted, orjson-ready)."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal


class Side(enum.StrEnum):
    """Order side."""

    BUY = "buy"
    SELL = "sell"


class Reason(enum.StrEnum):
    """Why an intent was emitted."""

    START = "start"
    THRESHOLD = "threshold"
    CALENDAR = "calendar"
    MANUAL = "manual"
    DEPOSIT = "deposit"
    WITHDRAW = "withdraw"
    TERMINATE = "terminate"


@dataclass(frozen=True, slots=True)
class Tick:
    """One price update for one symbol (`BTC-USDT`); times are ns since the epoch."""

    symbol: str
    bid: float
    ask: float
    ts_event_ns: int
    ts_recv_ns: int

    @property
    def mid(self) -> float:
        """Mid price."""
        return (self.bid + self.ask) * 0.5


@dataclass(frozen=True, slots=True)
class Leg:
    """One planned order of an intent; quantities and money are exact."""

    symbol: str
    side: Side
    quantity: Decimal
    expected_price: Decimal
    notional: Decimal


@dataclass(frozen=True, slots=True)
class Intent:
    """A decision to rebalance one portfolio, with what it saw and what it plans."""

    id: str
    portfolio: str
    ts_ns: int
    reason: Reason
    drift: float
    prices: dict[str, float]
    weights: dict[str, float]
    legs: tuple[Leg, ...]
    expected_residual_drift: float = 0.0
    observe: bool = False
    quote_reserve: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class Order:
    """An order sent (or to be sent) to a venue for one leg."""

    client_order_id: str
    intent_id: str
    portfolio: str
    leg: int
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal | None = None
    quote_quantity: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Fill:
    """An executed trade as the venue reported it; fee is in `fee_asset`."""

    trade_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str
    ts_ns: int
    order_id: str = ""


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """Venue rules for one symbol: quantity step and minimum order notional (quote)."""

    step_size: Decimal = Decimal("0.00000001")
    min_notional: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class Transfer:
    """A deposit (positive) or withdrawal (negative) of one asset into a portfolio."""

    id: str
    portfolio: str
    asset: str
    amount: Decimal
    ts_ns: int
    note: str = field(default="")


def split_symbol(symbol: str) -> tuple[str, str]:
    """`BTC-USDT` -> (`BTC`, `USDT`); raises ValueError on anything else."""
    base, sep, quote = symbol.partition("-")
    if not sep or not base or not quote or "-" in quote:
        raise ValueError(f"symbol {symbol!r} is not BASE-QUOTE (for example BTC-USDT)")
    return base, quote


@dataclass(frozen=True, slots=True)
class PortfolioSnapshot:
    """A read-only view of one portfolio at one instant (for metrics, MQTT state, the terminal view)."""

    name: str
    mode: str
    quote: str
    value: float
    hodl_value: float
    weights: dict[str, float]
    targets: dict[str, float]
    deviations: dict[str, float]
    thresholds: dict[str, float]
    holdings: dict[str, Decimal]
    drift: float
    trigger_state: str
    window_remaining_secs: float
    paused: bool
    stale: bool
    floor_value: float = 0.0
