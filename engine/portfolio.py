"""Portfolio state: holdings, values and weights kept incrementally, and the canonical band check.

The canonical check (`breached`) is the one function every path decides with: the per-tick live
path, the columnar replay (which repeats its arithmetic element-wise in numpy, bit for bit) and the
reference in the tests. `price_box` gives, per symbol, a price range inside which the check cannot
come out true, so ticks inside it need no evaluation.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal

from engine.types import split_symbol

BOX_SLACK = 1e-9  # weight units the box keeps away from each band, far above float rounding


class InvariantError(RuntimeError):
    """A broken engine invariant (negative holding, NaN value): the engine must stop."""


class Portfolio:
    """Holdings and incremental valuation of one basket against the book's mid prices."""

    __slots__ = (
        "assets", "book_mid", "box_hi", "box_lo", "holdings", "members", "name", "q", "quote", "sym",
        "symbols", "targets", "thresholds", "total", "values",
    )

    def __init__(
        self,
        name: str,
        quote: str,
        targets: Mapping[str, float],
        thresholds: Mapping[str, float],
        symbol_index: Mapping[str, int],
        book_mid: list[float],
    ) -> None:
        self.name = name
        self.quote = quote
        coins = [c for c in targets if c != quote]
        self.assets: list[str] = [*coins, quote]
        self.symbols: list[str] = [f"{c}-{quote}" for c in coins]
        for s in self.symbols:
            split_symbol(s)
        self.sym: list[int] = [symbol_index[s] for s in self.symbols] + [-1]
        self.book_mid = book_mid
        self.targets: list[float] = []
        self.thresholds: list[float] = []
        self.members: list[int] = []
        self.set_targets(targets, thresholds)
        self.holdings: dict[str, Decimal] = {a: Decimal(0) for a in self.assets}
        self.q: list[float] = [0.0] * len(self.assets)
        self.values: list[float] = [0.0] * len(self.assets)
        self.total = 0.0
        self.box_lo: list[float] = [math.inf] * len(self.symbols)
        self.box_hi: list[float] = [-math.inf] * len(self.symbols)

    def set_targets(self, targets: Mapping[str, float], thresholds: Mapping[str, float]) -> None:
        """Replace target weights and per-asset thresholds (absolute weight units)."""
        self.targets = [float(targets.get(a, 0.0)) for a in self.assets]
        self.thresholds = [float(thresholds[a]) if a in targets else math.inf for a in self.assets]
        self.members = [k for k, a in enumerate(self.assets) if a in targets]
        self.box_lo = [math.inf] * len(self.symbols)
        self.box_hi = [-math.inf] * len(self.symbols)

    # holdings -----------------------------------------------------------------------------------

    def set_holding(self, asset: str, quantity: Decimal) -> None:
        """Set one asset's quantity exactly (negative is an invariant error)."""
        if quantity < 0:
            raise InvariantError(f"{self.name}: holding of {asset} would be negative ({quantity})")
        k = self.assets.index(asset)
        self.holdings[asset] = quantity
        self.q[k] = float(quantity)
        self.revalue()

    def add_holding(self, asset: str, delta: Decimal) -> None:
        """Change one asset's quantity by an exact delta."""
        if asset not in self.holdings:
            raise InvariantError(f"{self.name}: {asset} is not an asset of this portfolio")
        self.set_holding(asset, self.holdings[asset] + delta)

    # valuation ----------------------------------------------------------------------------------

    def priced(self) -> bool:
        """True when every coin has a price."""
        mids = self.book_mid
        return all(s < 0 or mids[s] == mids[s] for s in self.sym)

    def revalue(self) -> None:
        """Recompute every value and the total from scratch."""
        mids = self.book_mid
        total = 0.0
        for k, s in enumerate(self.sym):
            v = self.q[k] * mids[s] if s >= 0 else self.q[k]
            self.values[k] = v
            total += v
        self.total = total
        self.box_lo = [math.inf] * len(self.symbols)
        self.box_hi = [-math.inf] * len(self.symbols)

    def on_price(self, k: int, mid: float) -> None:
        """Incremental update after coin k's price changed: its value and the total."""
        v = self.q[k] * mid
        self.total += v - self.values[k]
        self.values[k] = v

    def value(self) -> float:
        """Total value in the quote (canonical sum)."""
        mids = self.book_mid
        total = 0.0
        for k, s in enumerate(self.sym):
            total += self.q[k] * mids[s] if s >= 0 else self.q[k]
        return total

    def weights(self) -> dict[str, float]:
        """Current weight of every asset (incremental values)."""
        total = self.total
        if not total > 0.0:
            return {a: 0.0 for a in self.assets}
        return {a: v / total for a, v in zip(self.assets, self.values, strict=True)}

    # the canonical check -------------------------------------------------------------------------

    def breached(self) -> bool:
        """True when any member's |w - t| reaches its threshold. The one decision function."""
        mids = self.book_mid
        q = self.q
        vals = []
        total = 0.0
        for k, s in enumerate(self.sym):
            v = q[k] * mids[s] if s >= 0 else q[k]
            vals.append(v)
            total += v
        if not total > 0.0:
            if total != total:
                raise InvariantError(f"{self.name}: portfolio value is NaN")
            return False
        t = self.targets
        e = self.thresholds
        for k in self.members:
            if abs(vals[k] / total - t[k]) >= e[k]:
                return True
        return False

    def canonical_values(self) -> list[float]:
        """q * mid per asset (the quote at 1), from scratch, in asset order."""
        mids = self.book_mid
        return [self.q[k] * mids[s] if s >= 0 else self.q[k] for k, s in enumerate(self.sym)]

    def canonical_weights(self) -> list[float]:
        """Weights from the canonical values (0 when the portfolio is worth nothing)."""
        vals = self.canonical_values()
        total = sum(vals)
        return [v / total if total > 0 else 0.0 for v in vals]

    def deviations(self) -> dict[str, float]:
        """w - t per member (canonical values)."""
        vals = self.canonical_values()
        total = sum(vals)
        if not total > 0.0:
            return {self.assets[k]: -self.targets[k] for k in self.members}
        return {self.assets[k]: vals[k] / total - self.targets[k] for k in self.members}

    def drift(self, relative: bool = False) -> float:
        """max |d| (or max |d| / t) over members."""
        dev = self.deviations()
        if relative:
            return max((abs(d) / self.targets[self.assets.index(a)] for a, d in dev.items()), default=0.0)
        return max((abs(d) for d in dev.values()), default=0.0)

    # the price box ---------------------------------------------------------------------------------

    def compute_box(self) -> None:
        """Per coin, the price range inside which `breached()` stays False (all ranges at once)."""
        mids = self.book_mid
        vals = self.canonical_values()
        total = 0.0
        for v in vals:
            total += v
        n = len(self.symbols)
        if not total > 0.0:
            self.box_lo = [math.inf] * n
            self.box_hi = [-math.inf] * n
            return
        kmax = math.inf
        for k in self.members:
            v = vals[k]
            e = self.thresholds[k] - BOX_SLACK
            up = self.targets[k] + e
            lo = self.targets[k] - e
            w = v / total
            if w >= up or (lo > 0.0 and w <= lo):
                kmax = 1.0
                break
            rest = total - v
            if up < 1.0 and v > 0.0:
                kmax = min(kmax, up * rest / (v * (1.0 - up)))
            if lo > 0.0 and rest > 0.0:
                kmax = min(kmax, v * (1.0 - lo) / (lo * rest))
        if kmax <= 1.0:
            self.box_lo = [math.inf] * n
            self.box_hi = [-math.inf] * n
            return
        grow = math.sqrt(kmax) if kmax < math.inf else math.inf
        self.box_lo = [mids[s] / grow for s in self.sym[:n]]
        self.box_hi = [mids[s] * grow for s in self.sym[:n]]

    def inside_box(self, k: int, mid: float) -> bool:
        """True when coin k's price is inside its box (no check needed)."""
        return self.box_lo[k] <= mid <= self.box_hi[k]


def drift_of(weights: Mapping[str, float], targets: Mapping[str, float], relative: bool) -> float:
    """`Portfolio.drift` from weights already computed (the same arithmetic: max |w - t|, or / t)."""
    if relative:
        return max((abs(weights[a] - t) / t for a, t in targets.items()), default=0.0)
    return max((abs(weights[a] - t) for a, t in targets.items()), default=0.0)
