"""The column layout of a `Fleet` and its validation: from arrays (vectorised) or from records."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from engine.types import split_symbol

TARGET_SUM_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class FleetPortfolio:
    """One portfolio of a fleet: coins and maybe the quote as targets, absolute thresholds, float holdings."""

    name: str
    targets: Mapping[str, float]
    thresholds: Mapping[str, float]
    holdings: Mapping[str, float] = field(default_factory=dict)
    window_ns: int = 300 * 1_000_000_000
    quote: str = "USDT"


@dataclass(frozen=True, slots=True)
class FleetArrays:
    """Validated columns: per portfolio `width` slots, coins first, the quote last (see `fleet_math`)."""

    symbols: tuple[str, ...]
    quote: str
    names: list[str]
    slot_sym: npt.NDArray[np.int16]
    ncoins: npt.NDArray[np.int8]
    holdings: npt.NDArray[np.float64]
    targets: npt.NDArray[np.float64]
    thresholds: npt.NDArray[np.float64]
    window_ns: npt.NDArray[np.int64]

    @staticmethod
    def build(symbols: Sequence[str], names: Sequence[str], coins: npt.ArrayLike, holdings: npt.ArrayLike,
              targets: npt.ArrayLike, thresholds: npt.ArrayLike, window_ns: npt.ArrayLike | int) -> FleetArrays:
        """Check and lay out the columns; raises ValueError naming the first bad portfolio."""
        symbols = tuple(symbols)
        quotes = {split_symbol(s)[1] for s in symbols}
        if len(quotes) != 1:
            raise ValueError(f"a fleet has one quote; symbols have {sorted(quotes)}")
        if len(set(symbols)) != len(symbols) or len(symbols) > 32000:
            raise ValueError("fleet symbols must be unique (and fewer than 32000)")
        nsym = len(symbols)
        c = np.asarray(coins, dtype=np.int64)
        if c.ndim != 2:
            raise ValueError("coins must be [N, K]")
        n, k = c.shape
        if len(names) != n:
            raise ValueError(f"{len(names)} names for {n} portfolios")
        if len(set(names)) != n:
            raise ValueError("portfolio names must be unique")
        width = k + 1
        q = np.array(holdings, dtype=np.float64)
        t = np.array(targets, dtype=np.float64)
        e = np.array(thresholds, dtype=np.float64)
        for label, arr in (("holdings", q), ("targets", t), ("thresholds", e)):
            if arr.shape != (n, width):
                raise ValueError(f"{label} must be [N, K+1] = {(n, width)}, got {arr.shape}")
        present = c >= 0
        ncoins = present.sum(axis=1)
        _fail_any(present[:, 1:] & ~present[:, :-1], names, "coins must be packed left (-1 pads at the end)")
        _fail_any(c >= nsym, names, "coin symbol index out of range")
        _fail_any(ncoins < 1, names, "a portfolio needs at least one coin")
        srt = np.sort(np.where(present, c, -1 - np.arange(k)), axis=1)
        _fail_any(srt[:, 1:] == srt[:, :-1], names, "a coin appears twice")
        slot_present = np.concatenate([present, np.ones((n, 1), dtype=bool)], axis=1)
        q[~slot_present] = 0.0
        _fail_any(~np.isfinite(q) | (q < 0), names, "holdings must be finite and >= 0")
        t[~slot_present] = 0.0
        _fail_any(~np.isfinite(t) | (t < 0) | (t > 1), names, "targets must be in [0, 1]")
        _fail_any(np.abs(t.sum(axis=1) - 1.0) > TARGET_SUM_TOLERANCE, names, "targets must sum to 1")
        member = slot_present.copy()
        member[:, k] = np.isfinite(e[:, k])  # the quote is a member when it has a threshold
        _fail_any((t[:, k] > 0) & ~member[:, k], names, "a quote with a target needs a threshold")
        e[~member] = np.inf
        _fail_any(member & ~((e > 0) & (e <= 1)), names, "thresholds must be in (0, 1] for every member")
        w = np.broadcast_to(np.asarray(window_ns, dtype=np.int64), (n,)).copy()
        _fail_any((w <= 0)[:, None], names, "the post-rebalance window must be > 0")
        slot_sym = np.full((n, width), nsym, dtype=np.int16)
        slot_sym[:, :k] = np.where(present, c, nsym)
        return FleetArrays(symbols, quotes.pop(), list(names), slot_sym, ncoins.astype(np.int8), q, t, e, w)


def _fail_any(bad: npt.NDArray[np.bool_], names: Sequence[str], what: str) -> None:
    rows = np.flatnonzero(bad.any(axis=1) if bad.ndim == 2 else bad)
    if rows.shape[0]:
        raise ValueError(f"portfolio {names[int(rows[0])]}: {what} ({rows.shape[0]} portfolios)")


def arrays_from_portfolios(portfolios: Sequence[FleetPortfolio], symbols: Sequence[str] | None = None) -> FleetArrays:
    """Columns from records; `symbols` defaults to every BASE-QUOTE the records hold, sorted."""
    quotes = {p.quote for p in portfolios}
    if len(quotes) > 1:
        raise ValueError(f"a fleet has one quote; portfolios have {sorted(quotes)}")
    quote = quotes.pop() if quotes else "USDT"
    coin_lists = [[c for c in p.targets if c != quote] for p in portfolios]
    if symbols is None:
        symbols = sorted({f"{c}-{quote}" for cl in coin_lists for c in cl})
    index = {s: i for i, s in enumerate(symbols)}
    k = max((len(cl) for cl in coin_lists), default=1)
    n = len(portfolios)
    coins = np.full((n, k), -1, dtype=np.int64)
    q = np.zeros((n, k + 1))
    t = np.zeros((n, k + 1))
    e = np.full((n, k + 1), np.inf)
    window = np.zeros(n, dtype=np.int64)
    for r, (p, cl) in enumerate(zip(portfolios, coin_lists, strict=True)):
        missing = [a for a in p.targets if a not in p.thresholds]
        if missing:
            what = "a quote with a target needs a threshold" if missing == [quote] else "thresholds missing"
            raise ValueError(f"portfolio {p.name}: {what} ({', '.join(missing)})")
        for j, c in enumerate(cl):
            sym = f"{c}-{quote}"
            if sym not in index:
                raise ValueError(f"portfolio {p.name}: symbol {sym} is not in the fleet's symbols")
            coins[r, j] = index[sym]
            q[r, j] = p.holdings.get(c, 0.0)
            t[r, j] = p.targets[c]
            e[r, j] = p.thresholds[c]
        q[r, k] = p.holdings.get(quote, 0.0)
        if quote in p.targets:
            t[r, k] = p.targets[quote]
            e[r, k] = p.thresholds[quote]
        window[r] = p.window_ns
    return FleetArrays.build(symbols, [p.name for p in portfolios], coins, q, t, e, window)
