"""Time for the engine: a `Clock` protocol and the replay clock whose timers fire in time order."""
from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Protocol

TimerCallback = Callable[[int], None]


class TimerHandle:
    """A scheduled callback; `cancel()` makes it a no-op."""

    __slots__ = ("callback", "cancelled", "seq", "ts_ns")

    def __init__(self, ts_ns: int, seq: int, callback: TimerCallback) -> None:
        self.ts_ns = ts_ns
        self.seq = seq
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Stop this timer from firing."""
        self.cancelled = True

    def __lt__(self, other: TimerHandle) -> bool:
        return (self.ts_ns, self.seq) < (other.ts_ns, other.seq)


class Clock(Protocol):
    """What the engine may know about time: now, and named timers."""

    def now_ns(self) -> int:
        """Current time in ns since the epoch."""
        ...

    def call_at(self, ts_ns: int, callback: TimerCallback) -> TimerHandle:
        """Run `callback(ts_ns)` when time reaches `ts_ns`."""
        ...


class TimeWentBackwards(ValueError):
    """A clock was asked to move to an earlier time."""


class ReplayClock:
    """A clock moved only by `advance_to`; due timers fire in (time, insertion) order first."""

    __slots__ = ("_heap", "_now", "_seq")

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns
        self._heap: list[TimerHandle] = []
        self._seq = 0

    def now_ns(self) -> int:
        """Current time in ns."""
        return self._now

    def call_at(self, ts_ns: int, callback: TimerCallback) -> TimerHandle:
        """Schedule `callback(ts_ns)`; a time already past fires at the next advance."""
        self._seq += 1
        handle = TimerHandle(ts_ns, self._seq, callback)
        heapq.heappush(self._heap, handle)
        return handle

    def next_deadline(self) -> int | None:
        """When the earliest live timer is due, or None."""
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        return heap[0].ts_ns if heap else None

    def advance_to(self, ts_ns: int) -> int:
        """Fire every timer due up to `ts_ns` in time order, then move time to `ts_ns`; returns how many
        timers left the heap (fired or cancelled ones)."""
        if ts_ns < self._now:
            raise TimeWentBackwards(f"clock asked to go back from {self._now} to {ts_ns}")
        heap = self._heap
        popped = 0
        while heap and heap[0].ts_ns <= ts_ns:
            handle = heapq.heappop(heap)
            popped += 1
            if handle.cancelled:
                continue
            if handle.ts_ns > self._now:
                self._now = handle.ts_ns
            handle.callback(handle.ts_ns)
        self._now = ts_ns
        return popped
