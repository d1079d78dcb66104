"""Columnar replay: the same engine, with stretches of ticks that cannot change a decision skipped.

Between two events the engine's state can only change where a portfolio leaves its price box
(`Portfolio.compute_box`), where an armed or unstarted portfolio sees one of its ticks, or where a
timer is due. One vectorised scan finds the first such tick; the book is brought up to it in bulk,
and the engine's ordinary per-tick code evaluates it. Every decision is therefore the one the
per-tick path makes; `tests/property` checks that on random markets.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from engine.book import MAX_PRICE, MIN_PRICE
from engine.clock import ReplayClock
from engine.columns import TickColumns
from engine.engine import Engine, PortfolioRuntime
from engine.trigger import TriggerState
from engine.types import Intent

Executor = Callable[[list[Intent]], None]
MIN_CHUNK = 2048
MAX_CHUNK = 1 << 20


def _count(rejected: dict[str, int], reason: str, n: int) -> None:
    if n:
        rejected[reason] = rejected.get(reason, 0) + n


def accepted_mask(cols: TickColumns, sym: npt.NDArray[np.intp], outlier_fraction: float,
                  rejected: dict[str, int]) -> npt.NDArray[np.bool_] | None:
    """Which ticks the book would accept (its own rules, in bulk); None when all of them."""
    bid, ask = cols.bid, cols.ask
    with np.errstate(all="ignore"):
        mid = (bid + ask) * 0.5
        in_range = (mid >= MIN_PRICE) & (mid <= MAX_PRICE)
        ok = (sym >= 0) & (bid > 0.0) & (bid <= ask) & (ask < math.inf) & in_range
    if outlier_fraction <= 0 and bool(ok.all()):
        return None
    known = sym >= 0
    _count(rejected, "unknown_symbol", int((~known).sum()))
    finite = np.isfinite(bid) & np.isfinite(ask)
    _count(rejected, "nan", int((known & ~finite).sum()))
    rest = known & finite
    with np.errstate(invalid="ignore"):
        positive = (bid > 0) & (ask > 0)
    _count(rejected, "non_positive", int((rest & ~positive).sum()))
    rest &= positive
    crossed = rest & (bid > ask)
    _count(rejected, "crossed", int(crossed.sum()))
    _count(rejected, "out_of_range", int((rest & ~crossed & ~in_range).sum()))
    if outlier_fraction > 0:
        _outliers(mid, sym, ok, outlier_fraction, rejected)
    return ok


def _outliers(mid: npt.NDArray[np.float64], sym: npt.NDArray[np.intp], ok: npt.NDArray[np.bool_], f: float,
              rejected: dict[str, int]) -> None:
    """The book's hold-until-confirmed guard; Python runs only around jumps."""
    present = np.bincount(sym[ok]) if bool(ok.any()) else np.zeros(0, np.intp)
    for s in np.flatnonzero(present).tolist():
        idx = np.flatnonzero(ok & (sym == s))
        m = mid[idx]
        if len(m) < 2:
            continue
        jumps = (np.abs(m[1:] / m[:-1] - 1.0) > f).nonzero()[0] + 1
        keep = np.ones(len(m), dtype=bool)
        done = 0
        for j in jumps.tolist():
            if j < done:
                continue
            g = m[j - 1]
            held: float | None = None
            x = j
            while x < len(m):
                v = float(m[x])
                if abs(v / g - 1.0) > f and (held is None or abs(v / held - 1.0) > f):
                    if held is not None:
                        rejected["outlier"] = rejected.get("outlier", 0) + 1
                    held = v
                    keep[x] = False
                    x += 1
                    continue
                if held is not None and abs(v / g - 1.0) <= f:
                    rejected["outlier"] = rejected.get("outlier", 0) + 1
                break
            done = x + 1
        ok[idx[~keep]] = False


class ColumnarReplay:
    """Replays `TickColumns` through an engine on a replay clock, handing intents to `execute`."""

    def __init__(self, engine: Engine, clock: ReplayClock, cols: TickColumns, execute: Executor) -> None:
        self.engine = engine
        self.clock = clock
        self.execute = execute
        book = engine.book
        known = np.array([book.index(s) for s in cols.symbols] or [-1], dtype=np.intp)
        if len(cols) == 0:
            sym = np.zeros(0, np.intp)
        elif bool(np.array_equal(known, np.arange(len(known)))):
            sym = cols.sym.astype(np.intp)
        else:
            sym = known[cols.sym]
        ok = accepted_mask(cols, sym, book.outlier_fraction, book.rejected)
        self.nsym = len(book.symbols)
        if ok is not None:  # rejected ticks still move time; they point at a symbol no bound watches
            sym = np.where(ok, sym, self.nsym)
        self.ts, self.sym, self.bid, self.ask = cols.ts_ns, sym, cols.bid, cols.ask
        with np.errstate(all="ignore"):
            self.mid = (self.bid + self.ask) * 0.5
        self.n = int(self.ts.shape[0])
        self.upto = -1  # every tick up to here is in the book
        self._pos: list[npt.NDArray[np.intp]] | None = None

    @property
    def pos(self) -> list[npt.NDArray[np.intp]]:
        """Per symbol, the positions of its ticks (computed on first use)."""
        if self._pos is None:
            self._pos = [np.flatnonzero(self.sym == s) for s in range(self.nsym)]
        return self._pos

    def run(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Replay every tick; `progress(done, total)` is called now and then."""
        engine, clock, ts, n = self.engine, self.clock, self.ts, self.n
        i = 0
        chunk = MIN_CHUNK
        steps = 0
        while i < n:
            steps += 1
            if progress is not None and steps % 256 == 0:
                progress(i, n)
            deadline = clock.next_deadline()
            j_timer = n if deadline is None else max(i, int(np.searchsorted(ts, deadline, "left")))
            x, chunk = self._next_event(i, j_timer, chunk)
            if x < 0:
                if j_timer >= n:
                    self._apply_to(n - 1)
                    break
                if j_timer > i:
                    self._apply_to(j_timer - 1)
                clock.advance_to(int(ts[j_timer]))
                self.execute(engine.take_intents())
                i = j_timer
                continue
            g = int(np.searchsorted(ts, ts[x], "right")) - 1  # the end of x's group
            clock.advance_to(int(ts[g]))
            self.execute(engine.take_intents())
            changed = self._apply_to(g)
            if changed:
                engine._evaluate_symbols(changed)
            self.execute(engine.take_intents())
            i = g + 1
        if progress is not None:
            progress(n, n)

    def _apply_to(self, x: int) -> list[int]:
        """Bring the book up to tick x (inclusive); returns the symbols whose price changed."""
        first = self.upto + 1
        if x < first:
            return []
        self.upto = x
        need = set(range(self.nsym))
        found: list[tuple[int, int]] = []
        hi = x + 1
        width = 64
        sym = self.sym
        while need and hi > first:
            a = max(first, hi - width)
            seg = sym[a:hi]
            for s in list(need):
                idx = np.flatnonzero(seg == s)
                if len(idx):
                    found.append((s, a + int(idx[-1])))
                    need.discard(s)
            hi = a
            width *= 4
        book = self.engine.book
        for s, j in sorted(found):
            book.set_price(s, float(self.bid[j]), float(self.ask[j]), int(self.ts[j]))
        return sorted(s for s, _ in found)

    def _bounds(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Per symbol, the price range inside which no portfolio needs a look (intersection of boxes)."""
        lo = np.full(self.nsym + 1, -math.inf)
        hi = np.full(self.nsym + 1, math.inf)
        for rt in self.engine.runtimes.values():
            self._add_bounds(rt, lo, hi)
        return lo, hi

    @staticmethod
    def _add_bounds(rt: PortfolioRuntime, lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64]) -> None:
        p = rt.portfolio
        state = rt.trigger.state
        if rt.started and (rt.paused or not rt.spec.threshold_active or state is TriggerState.COOLDOWN
                           or rt.inflight is not None):
            return
        watch_all = not rt.started or state is TriggerState.ARMED
        for k, s in enumerate(p.sym[:-1]):
            if watch_all:
                lo[s], hi[s] = math.inf, -math.inf
            else:
                lo[s] = max(lo[s], p.box_lo[k])
                hi[s] = min(hi[s], p.box_hi[k])

    def _next_event(self, i: int, end: int, chunk: int) -> tuple[int, int]:
        """First tick in [i, end) outside the bounds, or -1; and the next chunk size."""
        lo, hi = self._bounds()
        if bool(np.all(lo[:-1] == -math.inf)) and bool(np.all(hi[:-1] == math.inf)):
            return -1, chunk
        mid, sym = self.mid, self.sym
        a = i
        while a < end:
            b = min(end, a + chunk)
            s = sym[a:b]
            m = mid[a:b]
            out = (m < lo[s]) | (m > hi[s])
            k = int(out.argmax())
            if out[k]:
                return a + k, max(MIN_CHUNK, chunk >> 2)
            a = b
            chunk = min(MAX_CHUNK, chunk << 1)
        return -1, chunk
