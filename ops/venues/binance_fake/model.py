"""The fake's records and errors: symbols, orders, trades, and Binance's refusal form."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

EIGHT = Decimal("0.00000001")
CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
DEFAULT_ORDER_TYPES = ("LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")


class BinanceError(Exception):
    """A refusal in Binance's form: HTTP status and `{"code": ..., "msg": ...}`."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg


def insufficient_balance() -> BinanceError:
    """-2010, as Binance words it."""
    return BinanceError(400, -2010, "Account has insufficient balance for requested action.")


def filter_failure(name: str) -> BinanceError:
    """-1013 for one filter (NOTIONAL, LOT_SIZE, PRICE_FILTER)."""
    return BinanceError(400, -1013, f"Filter failure: {name}")


def mandatory(param: str) -> BinanceError:
    """-1102 for a missing parameter."""
    return BinanceError(400, -1102, f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed.")


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """One spot symbol of the fake and the filters it enforces (assets come from the `BTC-USDT` key)."""

    step_size: Decimal = Decimal("0.00001")
    min_qty: Decimal = Decimal("0.00001")
    max_qty: Decimal = Decimal("9000")
    tick_size: Decimal = Decimal("0.01")
    min_notional: Decimal = Decimal("5")
    status: str = "TRADING"
    order_types: tuple[str, ...] = DEFAULT_ORDER_TYPES


@dataclass(frozen=True, slots=True)
class FakeTrade:
    """One execution, as `myTrades` reports it."""

    trade_id: int
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_maker: bool = False


@dataclass(slots=True)
class FakeOrder:
    """One order the fake accepted; mutable while it is open."""

    order_id: int
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time_ms: int
    status: str = "NEW"
    executed_qty: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    update_ms: int = 0
    trades: list[FakeTrade] = field(default_factory=list)
    locked: Decimal = Decimal(0)


@dataclass(slots=True)
class Market:
    """One symbol of the fake with its current quote."""

    id: str
    base: str
    quote: str
    spec: SymbolSpec
    bid: Decimal | None = None
    ask: Decimal | None = None


def fmt(value: Decimal) -> str:
    """Binance's 8-decimal string form."""
    return f"{value:.8f}"


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    """Round down to a multiple of `step`."""
    return (value / step).to_integral_value(ROUND_FLOOR) * step


def on_grid(value: Decimal, step: Decimal) -> bool:
    """Whether `value` is a multiple of `step`."""
    return value % step == 0


def required(params: dict[str, str], name: str) -> str:
    """A mandatory parameter, or -1102."""
    value = params.get(name)
    if not value:
        raise mandatory(name)
    return value


def decimal_param(params: dict[str, str], name: str) -> Decimal | None:
    """An optional decimal parameter, or -1100 when it does not parse."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None
    if not value.is_finite():
        raise mandatory(name)
    return value
