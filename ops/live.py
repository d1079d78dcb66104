"""The live driver: the engine's clock follows the ticks' receive times; timers wake the event loop.

Engine time only moves forward and every tick gets its own instant: a tick stamped before the
clock (read before a timer fired but processed after it) or sharing a stamp with the previous one
is applied a nanosecond later, and recorded that way, so a replay of the recording takes exactly
the live run's decisions.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from engine.clock import ReplayClock, TimerCallback, TimerHandle
from engine.engine import Engine
from engine.types import Intent, Tick, new_tick

log = logging.getLogger(__name__)

Dispatch = Callable[[list[Intent], int], None]


class LiveClock(ReplayClock):
    """A replay clock that also asks the event loop to wake it when the next timer is due."""

    __slots__ = ("_loop", "_on_wake", "_wake", "_wake_at")

    def __init__(self, loop: asyncio.AbstractEventLoop, start_ns: int | None = None) -> None:
        super().__init__(time.time_ns() if start_ns is None else start_ns)
        self._loop = loop
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at: int | None = None
        self._on_wake: Callable[[], None] = lambda: None

    def set_on_wake(self, fn: Callable[[], None]) -> None:
        """Called after timers fired from a loop wake-up (to drain the engine's intents)."""
        self._on_wake = fn

    def call_at(self, ts_ns: int, callback: TimerCallback) -> TimerHandle:
        """Schedule a timer and make sure the loop wakes for it."""
        handle = super().call_at(ts_ns, callback)
        self.rearm()
        return handle

    def rearm(self) -> None:
        """Point the loop's wake-up at the earliest live timer."""
        deadline = self.next_deadline()
        if deadline == self._wake_at:
            return
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        self._wake_at = deadline
        if deadline is not None:
            delay = max(0.0, (deadline - time.time_ns()) / 1e9)
            self._wake = self._loop.call_later(delay, self._fire, deadline)

    def _fire(self, deadline: int) -> None:
        self._wake = None
        self._wake_at = None
        if deadline > self.now_ns():
            self.advance_to(deadline)
        else:
            self.advance_to(self.now_ns())
        self._on_wake()
        self.rearm()

    def close(self) -> None:
        """Stop waking the loop."""
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None


class LiveDriver:
    """Feeds live ticks to the engine on a `LiveClock` and hands the intents on."""

    def __init__(self, engine: Engine, clock: LiveClock, dispatch: Dispatch,
                 record: Callable[[Tick], None] | None = None) -> None:
        self.engine = engine
        self.clock = clock
        self.dispatch = dispatch
        self.record = record
        self.ticks = 0
        self.last_tick_ns = 0
        clock.set_on_wake(self._drain_timers)

    def _drain_timers(self) -> None:
        intents = self.engine.take_intents()
        if intents:
            self.dispatch(intents, self.clock.now_ns())

    def on_tick(self, tick: Tick) -> None:
        """One live tick: move time (timers first), apply, dispatch what was decided.

        The loop's wake-up is re-aimed only when timers left the heap here: a timer scheduled while the
        tick is applied re-aims it itself (`LiveClock.call_at`), and one cancelled leaves a wake-up that
        finds nothing due and re-aims then."""
        clock = self.clock
        now = clock.now_ns()
        ts = tick.ts_recv_ns
        if ts < now or ts <= self.last_tick_ns:  # strictly increasing: one tick, one group
            ts = max(now, self.last_tick_ns + 1)
            tick = new_tick(tick.symbol, tick.bid, tick.ask, tick.ts_event_ns, ts)
        self.last_tick_ns = ts
        if ts > now and clock.advance_to(ts):
            self._drain_timers()
            clock.rearm()
        self.ticks += 1
        if self.record is not None:
            self.record(tick)
        intents = self.engine.on_tick(tick)
        if intents:
            self.dispatch(intents, ts)
