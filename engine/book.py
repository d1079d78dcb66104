"""The in-memory price book: last good bid/ask/mid per symbol, validation, outlier guard, staleness."""
from __future__ import annotations

import math

from engine.sensor import NULL_SENSOR, Sensor
from engine.types import Tick

# Prices outside this range are refused: they cover every listed coin with many orders of magnitude to
# spare, and keep exact 28-digit Decimal money arithmetic exact to far below a cent.
MIN_PRICE = 1e-12
MAX_PRICE = 1e12


class PriceBook:
    """Prices per symbol index. Bad ticks (not finite, not positive, crossed, going back in time, a mid
    outside [MIN_PRICE, MAX_PRICE]) are counted and dropped; a jump beyond `outlier_fraction`
    from the last good mid is held until a second tick confirms it (0 disables the guard)."""

    __slots__ = (
        "_held", "_index", "ask", "bid", "last_ts", "mid", "outlier_fraction", "rejected", "sensor", "symbols",
    )

    def __init__(self, symbols: list[str], *, outlier_fraction: float = 0.0, sensor: Sensor = NULL_SENSOR) -> None:
        self.symbols: list[str] = list(symbols)
        self._index = {s: i for i, s in enumerate(self.symbols)}
        n = len(self.symbols)
        self.bid = [math.nan] * n
        self.ask = [math.nan] * n
        self.mid = [math.nan] * n
        self.last_ts = [-1] * n
        self._held: list[float | None] = [None] * n
        self.outlier_fraction = outlier_fraction
        self.rejected: dict[str, int] = {}
        self.sensor = sensor

    def index(self, symbol: str) -> int:
        """Index of a known symbol, or -1."""
        return self._index.get(symbol, -1)

    def has_price(self, i: int) -> bool:
        """True once the symbol has a good price."""
        return self.last_ts[i] >= 0

    def _reject(self, symbol: str, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.sensor.on_bad_tick(symbol, reason)

    def apply(self, tick: Tick) -> int:
        """Apply one tick; returns the symbol index when the price changed, else -1 (dropped or held)."""
        i = self._index.get(tick.symbol, -1)
        if i < 0:
            self._reject(tick.symbol, "unknown_symbol")
            return -1
        bid, ask = tick.bid, tick.ask
        if not (math.isfinite(bid) and math.isfinite(ask)):
            self._reject(tick.symbol, "nan")
            return -1
        if bid <= 0.0 or ask <= 0.0:
            self._reject(tick.symbol, "non_positive")
            return -1
        if bid > ask:
            self._reject(tick.symbol, "crossed")
            return -1
        if tick.ts_recv_ns < self.last_ts[i]:
            self._reject(tick.symbol, "backwards")
            return -1
        mid = (bid + ask) * 0.5
        if not MIN_PRICE <= mid <= MAX_PRICE:
            self._reject(tick.symbol, "out_of_range")
            return -1
        f = self.outlier_fraction
        if f > 0.0 and self.last_ts[i] >= 0:
            held = self._held[i]
            if abs(mid / self.mid[i] - 1.0) > f and (held is None or abs(mid / held - 1.0) > f):
                if held is not None:
                    self._reject(tick.symbol, "outlier")
                self._held[i] = mid
                return -1
            if held is not None:
                self._held[i] = None
                if abs(mid / self.mid[i] - 1.0) <= f:
                    self._reject(tick.symbol, "outlier")
        self.bid[i] = bid
        self.ask[i] = ask
        self.mid[i] = mid
        self.last_ts[i] = tick.ts_recv_ns
        self.sensor.on_tick(tick.symbol, tick.ts_recv_ns)
        return i

    def set_price(self, i: int, bid: float, ask: float, ts_ns: int) -> None:
        """Set a validated price directly (bulk replay)."""
        self.bid[i] = bid
        self.ask[i] = ask
        self.mid[i] = (bid + ask) * 0.5
        self.last_ts[i] = ts_ns
