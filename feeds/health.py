"""Feed health per symbol: last tick, age, ticks per second, and stale/fresh transitions.

`seen` is O(1) and runs per tick; staleness is checked on loop timers, so a symbol that never sent a
tick since `run` started is reported stale too (cryptofeed's own watchdog misses that case).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

NS = 1_000_000_000
RATE_WINDOW_SECS = 10
MIN_CHECK_SECS = 0.01


@dataclass(frozen=True, slots=True)
class SymbolHealth:
    """One symbol's feed health at one instant."""

    symbol: str
    last_tick_ns: int | None
    age_secs: float
    stale: bool
    ticks: int
    ticks_per_sec: float


class _SymbolState:
    __slots__ = ("bucket_counts", "bucket_secs", "last_ns", "stale", "ticks")

    def __init__(self) -> None:
        self.last_ns: int | None = None
        self.stale = False
        self.ticks = 0
        self.bucket_secs = [-1] * RATE_WINDOW_SECS
        self.bucket_counts = [0] * RATE_WINDOW_SECS


class FeedHealth:
    """Tracks ticks per symbol and calls `on_change(symbol, stale)` when a symbol goes stale or fresh."""

    def __init__(
        self,
        symbols: Sequence[str],
        stale_secs: float,
        now_ns: Callable[[], int],
        on_change: Callable[[str, bool], None],
    ) -> None:
        if not stale_secs > 0:
            raise ValueError(f"stale_secs must be > 0, got {stale_secs}")
        self.stale_secs = stale_secs
        self._stale_ns = int(stale_secs * NS)
        self._now_ns = now_ns
        self._on_change = on_change
        self._states = {s: _SymbolState() for s in dict.fromkeys(symbols)}
        self._since_ns = now_ns()

    def seen(self, symbol: str, ts_recv_ns: int) -> None:
        """Record one tick of `symbol` (O(1)); reports the symbol fresh again if it was stale."""
        st = self._states.get(symbol)
        if st is None:
            return
        st.last_ns = ts_recv_ns
        st.ticks += 1
        sec = ts_recv_ns // NS
        b = sec % RATE_WINDOW_SECS
        if st.bucket_secs[b] != sec:
            st.bucket_secs[b] = sec
            st.bucket_counts[b] = 0
        st.bucket_counts[b] += 1
        if st.stale:
            st.stale = False
            log.info("feed for %s is fresh again", symbol)
            self._on_change(symbol, False)

    async def run(self) -> None:
        """Check for stale symbols on timers until cancelled; symbols never seen count from this call."""
        self._since_ns = self._now_ns()
        while True:
            next_due_ns = self.check()
            delay = max(MIN_CHECK_SECS, (next_due_ns - self._now_ns()) / NS)
            await asyncio.sleep(min(delay, self.stale_secs))

    def check(self) -> int:
        """Report symbols that went stale; returns the time (ns) of the next possible transition."""
        now = self._now_ns()
        next_due = now + self._stale_ns
        for symbol, st in self._states.items():
            if st.stale:
                continue
            due = (st.last_ns if st.last_ns is not None else self._since_ns) + self._stale_ns
            if now >= due:
                st.stale = True
                log.warning("feed for %s is stale: no tick for %.1f s", symbol, (now - due) / NS + self.stale_secs)
                self._on_change(symbol, True)
            elif due < next_due:
                next_due = due
        return next_due

    def status(self) -> dict[str, SymbolHealth]:
        """Health of every symbol now: last tick, age, stale flag, tick count, ticks/s over the last 10 s."""
        now = self._now_ns()
        now_sec = now // NS
        window_start_ns = max(self._since_ns, now - RATE_WINDOW_SECS * NS)
        span_secs = min(float(RATE_WINDOW_SECS), max(1.0, (now - window_start_ns) / NS))
        out = {}
        for symbol, st in self._states.items():
            recent = sum(
                c for s, c in zip(st.bucket_secs, st.bucket_counts, strict=True)
                if now_sec - RATE_WINDOW_SECS < s <= now_sec
            )
            ref = st.last_ns if st.last_ns is not None else self._since_ns
            out[symbol] = SymbolHealth(symbol, st.last_ns, max(0.0, (now - ref) / NS), st.stale, st.ticks,
                                       recent / span_secs)
        return out
