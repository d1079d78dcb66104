"""The band index of a `Fleet`: per symbol, the (portfolio, coin) price bands sorted by `lo` and by `hi`.

A tick at mid `m` for a symbol leaves exactly the bands with `lo > m` (a suffix of the `lo`-sorted
array) and those with `hi < m` (a prefix of the `hi`-sorted array): two binary searches find them.

Why lazy deletion with shrinking ends plus a small unsorted pending buffer (and not bucketed arrays):
every band a tick leaves is consumed at once (its portfolio is re-checked, then either fires and
drops out of the index for its window, or gets new bands), so the consumed suffix and prefix can be
cut off by moving two integers; nothing is ever deleted from the middle. A band that went stale
because its portfolio was re-banded through another symbol stays in place and is recognised by its
version number when a cut reaches it (each entry is met at most twice). New bands go to a pending
buffer that each tick of the symbol scans with one vectorised comparison; when the buffer outgrows
a fraction of the sorted arrays, it is merged in (the live sorted entries plus the sorted pending
ones form two runs, which numpy's stable sort merges in linear time). Per tick the cost is two
`searchsorted`, one scan of at most `merge_at` pending entries, and work proportional to the bands
left; the merges are amortised over the insertions that caused them.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]

MERGE_MIN = 2048  # pending entries a symbol may hold before a merge, whatever its size
MERGE_FRACTION = 16  # ... or 1/16 of its sorted entries when that is more
_EMPTY_I32: I32 = np.zeros(0, dtype=np.int32)


class SymbolBands:
    """The bands of one symbol: sorted arrays with live ranges, and the pending buffer."""

    __slots__ = (
        "hi_p", "hi_start", "hi_vals", "hi_ver", "lo_end", "lo_p", "lo_vals", "lo_ver",
        "pend", "pn",
    )

    def __init__(self) -> None:
        self.lo_vals: F64 = np.zeros(0)
        self.lo_p: I32 = _EMPTY_I32
        self.lo_ver: U32 = np.zeros(0, dtype=np.uint32)
        self.lo_end = 0  # entries [lo_end:] of the lo-sorted arrays are consumed
        self.hi_vals: F64 = np.zeros(0)
        self.hi_p: I32 = _EMPTY_I32
        self.hi_ver: U32 = np.zeros(0, dtype=np.uint32)
        self.hi_start = 0  # entries [:hi_start] of the hi-sorted arrays are consumed
        self.pn = 0
        self.pend: F64 = np.zeros((64, 4))  # pending rows: portfolio, version, lo, hi (ints exact in a float)

    def set_sorted(self, p: I32, ver: U32, lo: F64, hi: F64) -> None:
        """Replace the sorted arrays with these entries (any order) and empty the pending buffer."""
        by_lo = np.argsort(lo, kind="stable")
        by_hi = np.argsort(hi, kind="stable")
        self.lo_vals, self.lo_p, self.lo_ver = lo[by_lo], p[by_lo], ver[by_lo]
        self.hi_vals, self.hi_p, self.hi_ver = hi[by_hi], p[by_hi], ver[by_hi]
        self.lo_end = int(lo.shape[0])
        self.hi_start = 0
        self.pn = 0

    def append(self, rows: F64) -> None:
        """Add pending rows `[portfolio, version, lo, hi]` (growing the buffer by doubling)."""
        n, k = self.pn, int(rows.shape[0])
        if n + k > self.pend.shape[0]:
            new = np.empty((max(2 * self.pend.shape[0], n + k), 4))
            new[:n] = self.pend[:n]
            self.pend = new
        self.pend[n:n + k] = rows
        self.pn = n + k

    def _pending(self, rows: slice | npt.NDArray[np.intp]) -> tuple[I32, U32, F64, F64]:
        block = self.pend[rows]
        return block[:, 0].astype(np.int32), block[:, 1].astype(np.uint32), block[:, 2], block[:, 3]

    def merge(self, cur_ver: U32) -> None:
        """Fold the live pending entries into the sorted arrays, dropping every stale entry."""
        pp, pver, plo, phi = self._pending(slice(0, self.pn))
        live = pver == cur_ver[pp]
        pp, pver, plo, phi = pp[live], pver[live], plo[live], phi[live]
        e = self.lo_end
        live = self.lo_ver[:e] == cur_ver[self.lo_p[:e]]
        self.lo_vals, self.lo_p, self.lo_ver = _merge_runs(
            self.lo_vals[:e][live], self.lo_p[:e][live], self.lo_ver[:e][live], plo, pp, pver)
        self.lo_end = int(self.lo_vals.shape[0])
        s = self.hi_start
        live = self.hi_ver[s:] == cur_ver[self.hi_p[s:]]
        self.hi_vals, self.hi_p, self.hi_ver = _merge_runs(
            self.hi_vals[s:][live], self.hi_p[s:][live], self.hi_ver[s:][live], phi, pp, pver)
        self.hi_start = 0
        self.pn = 0

    def leaving(self, m: float, cur_ver: U32) -> list[I32]:
        """Consume every entry whose band `m` leaves; returns the live ones' portfolios (may repeat)."""
        found: list[I32] = []
        end = self.lo_end
        if end:
            a = int(np.searchsorted(self.lo_vals[:end], m, "right"))
            if a < end:
                p = self.lo_p[a:end]
                found.append(p[self.lo_ver[a:end] == cur_ver[p]])
                self.lo_end = a
        start = self.hi_start
        if start < self.hi_vals.shape[0]:
            c = int(np.searchsorted(self.hi_vals, m, "left"))
            if c > start:
                p = self.hi_p[start:c]
                found.append(p[self.hi_ver[start:c] == cur_ver[p]])
                self.hi_start = c
        n = self.pn
        if n:
            block = self.pend[:n]
            out = (block[:, 2] > m) | (block[:, 3] < m)
            if out.any():
                idx = np.flatnonzero(out)
                p, ver, _, _ = self._pending(idx)
                found.append(p[ver == cur_ver[p]])
                block[idx, 2] = -np.inf  # consumed: a band no price can leave; the next merge drops it
                block[idx, 3] = np.inf
        return found

    def sorted_size(self) -> int:
        """Entries still inside the live range of the lo-sorted arrays (live or stale)."""
        return self.lo_end


def _merge_runs(vals: F64, p: I32, ver: U32, new_vals: F64, new_p: I32, new_ver: U32) -> tuple[F64, I32, U32]:
    """Sorted `vals` plus unsorted new entries, sorted (two runs: numpy's stable sort merges them linearly)."""
    o = np.argsort(new_vals, kind="stable")
    all_vals = np.concatenate([vals, new_vals[o]])
    order = np.argsort(all_vals, kind="stable")
    return all_vals[order], np.concatenate([p, new_p[o]])[order], np.concatenate([ver, new_ver[o]])[order]


class BandIndex:
    """Per symbol `SymbolBands`; `leaving(s, m)` gives the portfolios whose band a tick left."""

    __slots__ = ("bands", "merges")

    def __init__(self, nsym: int) -> None:
        self.bands = [SymbolBands() for _ in range(nsym)]
        self.merges = 0

    def build(self, sym: I32, p: I32, ver: U32, lo: F64, hi: F64) -> None:
        """Replace the whole index with these flat entries (one per portfolio and coin)."""
        order = np.argsort(sym, kind="stable")
        sym, p, ver, lo, hi = sym[order], p[order], ver[order], lo[order], hi[order]
        bounds = np.searchsorted(sym, np.arange(len(self.bands) + 1), "left")
        for s, bands in enumerate(self.bands):
            a, b = int(bounds[s]), int(bounds[s + 1])
            bands.set_sorted(p[a:b], ver[a:b], lo[a:b], hi[a:b])

    def add(self, sym: I32, p: I32, ver: U32, lo: F64, hi: F64, cur_ver: U32) -> None:
        """Add flat entries to their symbols' pending buffers, merging a buffer that grew too big."""
        if sym.shape[0] == 0:
            return
        order = np.argsort(sym, kind="stable")
        sym = sym[order]
        rows = np.empty((sym.shape[0], 4))
        rows[:, 0] = p[order]
        rows[:, 1] = ver[order]
        rows[:, 2] = lo[order]
        rows[:, 3] = hi[order]
        cuts = np.flatnonzero(sym[1:] != sym[:-1]) + 1
        starts = [0, *cuts.tolist()]
        ends = [*cuts.tolist(), int(sym.shape[0])]
        for a, b in zip(starts, ends, strict=True):
            bands = self.bands[int(sym[a])]
            bands.append(rows[a:b])
            if bands.pn > max(MERGE_MIN, bands.sorted_size() // MERGE_FRACTION):
                bands.merge(cur_ver)
                self.merges += 1

    def leaving(self, s: int, m: float, cur_ver: U32) -> I32:
        """Live portfolios (sorted, unique) whose band for symbol `s` a mid of `m` leaves.

        Their entries are consumed: the caller must bump their versions (re-check, then re-band or cool down).
        """
        found = self.bands[s].leaving(m, cur_ver)
        if not found:
            return _EMPTY_I32
        if len(found) == 1:
            only = found[0]
            return only if only.shape[0] <= 1 else np.unique(only)
        return np.unique(np.concatenate(found))
