"""A fleet: up to millions of threshold portfolios in numpy arrays, decided exactly like the engine.

Each portfolio holds 2..K coins of one quote, float holdings, targets, absolute thresholds, a
post-rebalance window and a trigger state (idle, or cooldown until a time; no debounce). Per
(portfolio, coin) a price band `[lo, hi]` (the engine's `Portfolio.compute_box`, vectorised) says
where that portfolio cannot cross its threshold; `BandIndex` finds, per tick, the portfolios whose
band the tick leaves. Only those get the canonical check (`fleet_math.rows_breached`, the float
arithmetic of `Portfolio.breached`); they fire (the engine's planner and intent ids) or get new bands.
Window ends sit in a heap and re-check at once when time reaches them.

Decisions equal a plain loop that checks every priced, idle portfolio on every tick: after every
event each idle portfolio is either unbreached with all its prices inside its band, or waiting for a
first price, or flagged for the next check (a fill while idle). Ticks are evaluated one by one (no
grouping of equal timestamps); a portfolio fires at most once per window; fills are applied by the
caller through `apply_fill`. Inactive portfolios (`deactivate`, or another worker's partition) are
ignored entirely.
"""
from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from engine.clock import TimeWentBackwards
from engine.execution import fill_deltas
from engine.fleet_index import BandIndex
from engine.fleet_load import FleetArrays, FleetPortfolio, arrays_from_portfolios
from engine.fleet_math import add_exact, build_intent, row_values, rows_breached, rows_grow
from engine.planner import dec
from engine.types import Fill, Intent, SymbolRules, split_symbol

log = logging.getLogger(__name__)

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]
BUILD_CHUNK = 1 << 16
_NO_INTENTS: list[Intent] = []


class Fleet:
    """N portfolios as arrays; `on_tick` returns the intents a full per-tick evaluation would give."""

    def __init__(self, arrays: FleetArrays, *, fee_rate: Decimal = Decimal("0.001"),
                 rules: Mapping[str, SymbolRules] | None = None, prices: F64 | None = None, now_ns: int = 0,
                 active: BOOL | None = None, record_quiet_checks: bool = False) -> None:
        a = arrays
        self.symbols: tuple[str, ...] = a.symbols
        self.quote = a.quote
        self.names = a.names
        self.bases = [split_symbol(s)[0] for s in a.symbols]
        self.base_index = {b: i for i, b in enumerate(self.bases)}
        self.n = len(a.names)
        self.width = int(a.slot_sym.shape[1])
        self.unit = len(a.symbols)  # the price index that is always 1.0 (quote slot and padding)
        self.slot_sym = a.slot_sym
        self.ncoins = a.ncoins
        self.q = a.holdings
        self.tgt = a.targets
        self.thr = a.thresholds
        self.window_ns = a.window_ns
        self.fee_rate = fee_rate
        self.rules: Mapping[str, SymbolRules] = dict(rules or {})
        self.px: F64 = np.full(self.unit + 1, math.nan)
        self.px[self.unit] = 1.0
        if prices is not None:
            self.px[:self.unit] = prices
        self.bid: F64 = self.px[:self.unit].copy()
        self.ask: F64 = self.px[:self.unit].copy()
        self.cooling: BOOL = np.zeros(self.n, dtype=bool)
        self.until_ns: I64 = np.zeros(self.n, dtype=np.int64)
        self.seq: I64 = np.zeros(self.n, dtype=np.int64)
        self.last_intent_ns: I64 = np.full(self.n, -1, dtype=np.int64)
        self.window_from_ns: I64 = np.full(self.n, -1, dtype=np.int64)  # start of the last window, intent or not
        # checks that fired but found nothing to trade, as (row, time): each starts a window that a durable
        # record must hold too, or a takeover inside it would re-check at once (`take_quiet_checks`)
        self.quiet_checks: list[tuple[int, int]] | None = [] if record_quiet_checks else None
        self.active: BOOL = np.ones(self.n, dtype=bool) if active is None else active.astype(bool).copy()
        self.ver = np.zeros(self.n, dtype=np.uint32)
        self.now_ns = now_ns
        self.rejected = 0
        self.index = BandIndex(self.unit)
        self._heap: list[tuple[int, int]] = []
        self._dirty: set[int] = set()
        self._build()

    # construction ---------------------------------------------------------------------------------

    @classmethod
    def from_arrays(cls, symbols: Sequence[str], names: Sequence[str], coins: npt.ArrayLike, holdings: npt.ArrayLike,
                    targets: npt.ArrayLike, thresholds: npt.ArrayLike, window_ns: npt.ArrayLike | int, **kw: object) -> Fleet:
        """A fleet from columns: `coins` [N, K] symbol indices (-1 pads at the end), the other [N, K+1]
        with the quote in the last column (quote threshold +inf when the quote is not a member)."""
        arrays = FleetArrays.build(symbols, names, coins, holdings, targets, thresholds, window_ns)
        return cls(arrays, **kw)  # type: ignore[arg-type]

    @classmethod
    def load(cls, portfolios: Sequence[FleetPortfolio], symbols: Sequence[str] | None = None, **kw: object) -> Fleet:
        """A fleet from portfolio records (one quote for all)."""
        return cls(arrays_from_portfolios(portfolios, symbols), **kw)  # type: ignore[arg-type]

    def _build(self) -> None:
        """Bands for every active portfolio at once, then the index (vectorised, in chunks)."""
        parts: list[tuple[I32, I32, F64, F64]] = []
        for a in range(0, self.n, BUILD_CHUNK):
            rows = np.arange(a, min(self.n, a + BUILD_CHUNK), dtype=np.int32)
            rows = rows[self.active[rows]]
            if rows.shape[0]:
                breached, sym, pidx, lo, hi = self._bands(rows)
                self._dirty.update(breached.tolist())  # due at the first event, as a per-tick loop would see it
                parts.append((sym, pidx, lo, hi))
        if parts:
            sym = np.concatenate([p[0] for p in parts])
            pidx = np.concatenate([p[1] for p in parts])
            self.index.build(sym, pidx, self.ver[pidx], np.concatenate([p[2] for p in parts]),
                             np.concatenate([p[3] for p in parts]))

    # ticks and time ----------------------------------------------------------------------------------

    def on_tick(self, symbol_index: int, bid: float, ask: float, ts_ns: int) -> list[Intent]:
        """Apply one tick at `ts_ns`: window ends due first, then the portfolios whose band it left."""
        out = self.advance_to(ts_ns) if ts_ns != self.now_ns or self._heap_due(ts_ns) else []
        if not (bid > 0.0 and ask >= bid and math.isfinite(ask)):
            self.rejected += 1
            return out
        mid = (bid + ask) * 0.5
        self.bid[symbol_index] = bid
        self.ask[symbol_index] = ask
        self.px[symbol_index] = mid
        cand = self.index.leaving(symbol_index, mid, self.ver)
        if self._dirty:
            cand = np.union1d(cand, np.fromiter(self._dirty, dtype=np.int32, count=len(self._dirty)))
            self._dirty.clear()
        if cand.shape[0]:
            intents = self._evaluate(cand, ts_ns)
            if intents:
                out = out + intents if out else intents
        return out

    def _heap_due(self, ts_ns: int) -> bool:
        return bool(self._heap) and self._heap[0][0] <= ts_ns

    def advance_to(self, ts_ns: int) -> list[Intent]:
        """Move time to `ts_ns`: every window that ends by then closes and re-checks at its end time."""
        if ts_ns < self.now_ns:
            raise TimeWentBackwards(f"fleet time {self.now_ns} -> {ts_ns}")
        out: list[Intent] = []
        heap = self._heap
        while heap and heap[0][0] <= ts_ns:
            until = heap[0][0]
            due: list[int] = []
            while heap and heap[0][0] == until:
                _, p = heapq.heappop(heap)
                if self.active[p] and self.cooling[p] and self.until_ns[p] == until:
                    self.cooling[p] = False
                    due.append(p)
            if due:
                self.now_ns = until
                out.extend(self._evaluate(np.array(due, dtype=np.int32), until))
        self.now_ns = ts_ns
        return out

    def check_now(self) -> list[Intent]:
        """Evaluate at once the portfolios flagged for a check (activated, or filled while idle)."""
        if not self._dirty:
            return []
        cand = np.array(sorted(self._dirty), dtype=np.int32)
        self._dirty.clear()
        return self._evaluate(cand, self.now_ns)

    def pending_checks(self) -> int:
        """How many portfolios wait for a check at the next event (breached at load, filled while idle)."""
        return len(self._dirty)

    def set_price(self, symbol_index: int, bid: float, ask: float) -> None:
        """Seed a price without evaluating (only for a symbol no active idle portfolio is banded on)."""
        self.bid[symbol_index] = bid
        self.ask[symbol_index] = ask
        self.px[symbol_index] = (bid + ask) * 0.5

    # evaluation -------------------------------------------------------------------------------------

    def _evaluate(self, cand: I32, now_ns: int) -> list[Intent]:
        """The canonical check for sorted portfolios: fire (in index order), band, or wait for prices."""
        cand = cand[self.active[cand] & ~self.cooling[cand]]
        if not cand.shape[0]:
            return _NO_INTENTS
        self.ver[cand] += 1
        fire = self._band_rows(cand)
        if not fire.shape[0]:
            return _NO_INTENTS
        intents = []
        for p in fire.tolist():
            intent = self._fire(p, now_ns)
            if intent is not None:
                intents.append(intent)
        return intents

    def _band_rows(self, rows: I32) -> I32:
        """Check rows, add the bands of the unbreached ones to the index; returns the breached rows."""
        breached, sym, pidx, lo, hi = self._bands(rows)
        self.index.add(sym, pidx, self.ver[pidx], lo, hi, self.ver)
        return breached

    def _bands(self, rows: I32) -> tuple[I32, I32, I32, F64, F64]:
        """The breached rows, and flat band entries (symbol, portfolio, lo, hi) of the others."""
        ss = self.slot_sym[rows]
        mids = self.px[ss]
        v, total = row_values(self.q[rows], mids)
        tgt, thr = self.tgt[rows], self.thr[rows]
        breached = rows_breached(v, total, tgt, thr)
        unpriced = np.isnan(total)
        keep = ~breached & (unpriced | (total > 0.0))  # an empty portfolio changes only through a fill
        grow, empty = rows_grow(v, total, tgt, thr)
        with np.errstate(invalid="ignore"):
            lo = mids / grow[:, None]
            hi = mids * grow[:, None]
        lo[empty] = math.inf
        hi[empty] = -math.inf
        coin = (ss < self.unit) & keep[:, None]
        waiting = unpriced[:, None] & coin
        coin &= ~unpriced[:, None] | np.isnan(mids)  # unpriced: only the coins still without a price
        lo[waiting] = math.inf
        hi[waiting] = -math.inf
        pidx = np.broadcast_to(rows[:, None], ss.shape)[coin]
        return rows[breached], ss[coin].astype(np.int32), pidx.astype(np.int32), lo[coin], hi[coin]

    def _fire(self, p: int, now_ns: int) -> Intent | None:
        n = int(self.ncoins[p])
        ss = self.slot_sym[p, :n].tolist()
        w = self.width - 1
        assets = [*(self.bases[s] for s in ss), self.quote]
        q = [*self.q[p, :n].tolist(), float(self.q[p, w])]
        px = [*(float(self.px[s]) for s in ss), 1.0]
        tgt = self.tgt[p]
        targets = {assets[k]: float(tgt[k]) for k in range(n)}
        if math.isfinite(self.thr[p, w]):
            targets[self.quote] = float(tgt[w])
        intent = build_intent(self.names[p], int(self.seq[p]) + 1, now_ns, assets, self.quote, q, px, targets,
                              self.fee_rate, self.rules)
        until = now_ns + int(self.window_ns[p])
        self.cooling[p] = True
        self.until_ns[p] = until
        self.window_from_ns[p] = now_ns
        heapq.heappush(self._heap, (until, p))
        if intent is None:
            log.info("%s: threshold check found nothing to trade", self.names[p])
            if self.quiet_checks is not None:
                self.quiet_checks.append((p, now_ns))
            return None
        self.seq[p] += 1
        self.last_intent_ns[p] = now_ns
        return intent

    # fills and partitions ------------------------------------------------------------------------------

    def apply_fill(self, portfolio_index: int, fill: Fill) -> None:
        """Apply a committed fill to a portfolio's holdings (call once per new fill)."""
        p = portfolio_index
        for asset, delta in fill_deltas(fill, self.quote).items():
            k = self._slot(p, asset)
            self.q[p, k] = add_exact(float(self.q[p, k]), delta, f"{self.names[p]}: holding of {asset}")
        if self.active[p] and not self.cooling[p]:
            self.ver[p] += 1
            self._dirty.add(p)

    def _slot(self, p: int, asset: str) -> int:
        if asset == self.quote:
            return self.width - 1
        s = self.base_index.get(asset, -1)
        hits = np.flatnonzero(self.slot_sym[p] == s) if s >= 0 else np.zeros(0, dtype=np.intp)
        if not hits.shape[0]:
            raise ValueError(f"{self.names[p]}: {asset} is not an asset of this portfolio")
        return int(hits[0])

    def holdings(self, portfolio_index: int) -> dict[str, Decimal]:
        """Holdings of one portfolio as exact decimals of its floats (coins, then the quote)."""
        p = portfolio_index
        n = int(self.ncoins[p])
        out = {self.bases[s]: dec(float(x)) for s, x in zip(self.slot_sym[p, :n].tolist(), self.q[p, :n].tolist(),
                                                                 strict=True)}
        out[self.quote] = dec(float(self.q[p, self.width - 1]))
        return out

    def symbols_of(self, rows: npt.ArrayLike) -> list[int]:
        """Symbol indices held by these portfolios (sorted)."""
        ss = np.unique(self.slot_sym[np.asarray(rows, dtype=np.int64)])
        return [int(s) for s in ss.tolist() if s < self.unit]

    def take_quiet_checks(self) -> list[tuple[int, int]]:
        """The (row, time) of checks that found nothing to trade since the last call (each started a window)."""
        out = self.quiet_checks or []
        if self.quiet_checks is not None:
            self.quiet_checks = []
        return out

    def activate(self, rows: Sequence[int], *, holdings: F64 | None = None, seq: Sequence[int] | None = None,
                 window_from_ns: Sequence[int] | None = None) -> list[Intent]:
        """Start deciding for these portfolios (a partition taken over): set their rebuilt state (holdings,
        intent count, the start of their last window: the later of their last intent and their last quiet
        check, -1 for none), resume a window still open at `now_ns`, and check the others at once."""
        idx = np.asarray(rows, dtype=np.int64)
        if holdings is not None:
            self.q[idx] = holdings
        if seq is not None:
            self.seq[idx] = np.asarray(seq, dtype=np.int64)
        if window_from_ns is not None:
            self.window_from_ns[idx] = np.asarray(window_from_ns, dtype=np.int64)
        self.active[idx] = True
        self.ver[idx] += 1
        for p in idx.tolist():
            last = int(self.window_from_ns[p])
            until = last + int(self.window_ns[p])
            if last >= 0 and until > self.now_ns:
                self.cooling[p] = True
                self.until_ns[p] = until
                heapq.heappush(self._heap, (until, p))
            else:
                self.cooling[p] = False
                self._dirty.add(p)
        return self.check_now()

    def deactivate(self, rows: Sequence[int]) -> None:
        """Stop deciding for these portfolios (a partition released or lost)."""
        idx = np.asarray(rows, dtype=np.int64)
        self.active[idx] = False
        self.cooling[idx] = False
        self.ver[idx] += 1
        self._dirty.difference_update(idx.tolist())

    def state(self, portfolio_index: int) -> str:
        """`idle`, `cooldown` or `inactive`."""
        if not self.active[portfolio_index]:
            return "inactive"
        return "cooldown" if self.cooling[portfolio_index] else "idle"
