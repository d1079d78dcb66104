"""Faults the fake Binance server can inject, one-shot or for the next N requests to an endpoint."""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from decimal import Decimal

ORDER = "POST /api/v3/order"
QUERY_ORDER = "GET /api/v3/order"
CANCEL_ORDER = "DELETE /api/v3/order"
OPEN_ORDERS = "GET /api/v3/openOrders"
MY_TRADES = "GET /api/v3/myTrades"
ACCOUNT = "GET /api/v3/account"
EXCHANGE_INFO = "GET /api/v3/exchangeInfo"
ANY = "*"


class FaultKind(enum.StrEnum):
    """What goes wrong."""

    RATE_LIMITED = "rate_limited"
    BANNED = "banned"
    SERVER_ERROR = "server_error"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    MIN_NOTIONAL = "min_notional"
    HANG = "hang"
    PARTIAL_FILL = "partial_fill"
    WORSE_PRICE = "worse_price"
    SPLIT_FILLS = "split_fills"
    BROKEN_JSON = "broken_json"
    FILL_ON_CANCEL = "fill_on_cancel"


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault for the next `times` requests to `endpoint` (`METHOD /path`, or `*` for any).

    `processed` says whether the request takes effect (the order is placed) before the fault
    answers (server errors, hangs); `fraction` is the filled share (partial fill, fill on cancel).
    """

    kind: FaultKind
    endpoint: str = ORDER
    times: int = 1
    status: int = 503
    message: str = ""
    retry_after_secs: int | None = None
    processed: bool = False
    hang_secs: float = 30.0
    fraction: Decimal = Decimal("0.5")
    worse_bps: Decimal = Decimal(0)
    parts: int = 1

    def __post_init__(self) -> None:
        if self.times < 1:
            raise ValueError(f"fault times must be >= 1, got {self.times}")
        if not Decimal(0) <= self.fraction <= Decimal(1):
            raise ValueError(f"fault fraction must be within [0, 1], got {self.fraction}")
        if self.parts < 1:
            raise ValueError(f"fault parts must be >= 1, got {self.parts}")

    @classmethod
    def rate_limited(cls, retry_after_secs: int | None = 3, endpoint: str = ORDER, times: int = 1) -> Fault:
        """HTTP 429 (-1003) with a `Retry-After` header (omitted when None)."""
        return cls(FaultKind.RATE_LIMITED, endpoint, times, status=429, retry_after_secs=retry_after_secs)

    @classmethod
    def banned(cls, retry_after_secs: int | None = 120, endpoint: str = ORDER, times: int = 1) -> Fault:
        """HTTP 418 (IP banned, -1003) with a `Retry-After` header (omitted when None)."""
        return cls(FaultKind.BANNED, endpoint, times, status=418, retry_after_secs=retry_after_secs)

    @classmethod
    def server_error(
        cls,
        status: int = 503,
        *,
        processed: bool = False,
        message: str = "",
        endpoint: str = ORDER,
        times: int = 1,
    ) -> Fault:
        """HTTP 5xx; with `processed` the order is placed first (Binance's "execution status unknown")."""
        if not 500 <= status <= 599:
            raise ValueError(f"server error status must be 5xx, got {status}")
        return cls(FaultKind.SERVER_ERROR, endpoint, times, status=status, processed=processed, message=message)

    @classmethod
    def insufficient_balance(cls, endpoint: str = ORDER, times: int = 1) -> Fault:
        """-2010 "Account has insufficient balance for requested action." whatever the balances."""
        return cls(FaultKind.INSUFFICIENT_BALANCE, endpoint, times, status=400)

    @classmethod
    def min_notional(cls, endpoint: str = ORDER, times: int = 1) -> Fault:
        """-1013 "Filter failure: NOTIONAL" whatever the order."""
        return cls(FaultKind.MIN_NOTIONAL, endpoint, times, status=400)

    @classmethod
    def hang(
        cls, hang_secs: float = 30.0, *, processed: bool = True, endpoint: str = ORDER, times: int = 1
    ) -> Fault:
        """Hold the answer for `hang_secs` (or until the server stops); `processed`: place the order first."""
        return cls(FaultKind.HANG, endpoint, times, processed=processed, hang_secs=hang_secs)

    @classmethod
    def partial_fill(cls, fraction: Decimal = Decimal("0.5"), endpoint: str = ORDER, times: int = 1) -> Fault:
        """Fill only `fraction` of the order (rounded down to the step); the rest expires."""
        return cls(FaultKind.PARTIAL_FILL, endpoint, times, fraction=fraction)

    @classmethod
    def worse_price(cls, bps: Decimal, endpoint: str = ORDER, times: int = 1) -> Fault:
        """Fill `bps` basis points worse than the book (never past a limit price)."""
        return cls(FaultKind.WORSE_PRICE, endpoint, times, worse_bps=bps)

    @classmethod
    def split_fills(cls, parts: int, endpoint: str = ORDER, times: int = 1) -> Fault:
        """Report the execution as `parts` trades instead of one."""
        return cls(FaultKind.SPLIT_FILLS, endpoint, times, parts=parts)

    @classmethod
    def broken_json(cls, endpoint: str = ORDER, times: int = 1) -> Fault:
        """Process the request, then answer 200 with a body cut in half (not JSON)."""
        return cls(FaultKind.BROKEN_JSON, endpoint, times, status=200, processed=True)

    @classmethod
    def fill_on_cancel(cls, fraction: Decimal = Decimal(1), times: int = 1) -> Fault:
        """A cancel races a fill: `fraction` of what is open fills just before the cancel lands."""
        return cls(FaultKind.FILL_ON_CANCEL, CANCEL_ORDER, times, fraction=fraction)


@dataclass(frozen=True, slots=True)
class FillTweaks:
    """How the faults of one order request change its execution."""

    fraction: Decimal = Decimal(1)
    worse_bps: Decimal = Decimal(0)
    parts: int = 1

    @classmethod
    def from_faults(cls, faults: list[Fault]) -> FillTweaks:
        """Combine the execution-shaping faults taken for one request."""
        tweaks = cls()
        for fault in faults:
            if fault.kind is FaultKind.PARTIAL_FILL:
                tweaks = replace(tweaks, fraction=fault.fraction)
            elif fault.kind is FaultKind.WORSE_PRICE:
                tweaks = replace(tweaks, worse_bps=fault.worse_bps)
            elif fault.kind is FaultKind.SPLIT_FILLS:
                tweaks = replace(tweaks, parts=fault.parts)
        return tweaks


@dataclass(slots=True)
class _Armed:
    fault: Fault
    left: int


class FaultPlan:
    """Armed faults in injection order; each matching request takes one use of every fault it matches."""

    def __init__(self) -> None:
        self._armed: list[_Armed] = []

    def inject(self, fault: Fault) -> None:
        """Arm `fault` for its next `times` matching requests."""
        self._armed.append(_Armed(fault, fault.times))

    def take(self, endpoint: str) -> list[Fault]:
        """The faults that apply to one request to `endpoint` (each use is consumed)."""
        taken: list[Fault] = []
        for armed in self._armed:
            if armed.fault.endpoint in (endpoint, ANY):
                armed.left -= 1
                taken.append(armed.fault)
        self._armed = [armed for armed in self._armed if armed.left > 0]
        return taken

    def pending(self) -> int:
        """Uses of armed faults not yet taken."""
        return sum(armed.left for armed in self._armed)

    def clear(self) -> None:
        """Disarm everything."""
        self._armed.clear()
