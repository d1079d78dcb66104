"""The trigger: a pure state machine over time, idle -> armed(since) -> cooldown(until).

It never reads a clock and never schedules anything: the engine feeds it `now_ns` and the
result of the band check, and arranges timers from the deadlines it reports.
"""
from __future__ import annotations

import enum


class TriggerState(enum.StrEnum):
    """Where the trigger is."""

    IDLE = "idle"
    ARMED = "armed"
    COOLDOWN = "cooldown"


class Action(enum.Enum):
    """What the engine must do after feeding the trigger."""

    NONE = 0
    ARM = 1  # schedule a debounce timer at `deadline_ns`
    FIRE = 2  # emit an intent now; then call `fired(now_ns)`
    HEALED = 3


class Trigger:
    """Debounce and the post-rebalance window for one portfolio."""

    __slots__ = ("debounce_ns", "since_ns", "state", "until_ns", "window_ns")

    def __init__(self, debounce_ns: int, window_ns: int) -> None:
        if debounce_ns < 0 or window_ns < 0:
            raise ValueError("debounce and window must be >= 0")
        self.debounce_ns = debounce_ns
        self.window_ns = window_ns
        self.state = TriggerState.IDLE
        self.since_ns = 0
        self.until_ns = 0

    @property
    def deadline_ns(self) -> int:
        """The debounce deadline (armed) or the window end (cooldown)."""
        if self.state is TriggerState.ARMED:
            return self.since_ns + self.debounce_ns
        return self.until_ns

    def on_check(self, now_ns: int, breached: bool) -> Action:
        """Feed one band check made at `now_ns`."""
        state = self.state
        if state is TriggerState.COOLDOWN:
            return Action.NONE
        if state is TriggerState.IDLE:
            if not breached:
                return Action.NONE
            if self.debounce_ns == 0:
                return Action.FIRE
            self.state = TriggerState.ARMED
            self.since_ns = now_ns
            return Action.ARM
        if not breached:
            self.state = TriggerState.IDLE
            return Action.HEALED
        if now_ns >= self.since_ns + self.debounce_ns:
            return Action.FIRE
        return Action.NONE

    def on_debounce_timer(self, now_ns: int, breached: bool, since: int) -> Action:
        """The debounce timer armed at `since_ns` fired; stale timers (re-armed since) do nothing."""
        if self.state is not TriggerState.ARMED or self.since_ns != since:
            return Action.NONE
        if breached:
            return Action.FIRE
        self.state = TriggerState.IDLE
        return Action.HEALED

    def fired(self, now_ns: int) -> None:
        """An intent went out at `now_ns`: the post-rebalance window starts."""
        self.state = TriggerState.COOLDOWN
        self.until_ns = now_ns + self.window_ns

    def on_window_end(self, now_ns: int) -> bool:
        """The window timer fired; True when the trigger is idle again and must re-check at once."""
        if self.state is TriggerState.COOLDOWN and now_ns >= self.until_ns:
            self.state = TriggerState.IDLE
            return True
        return False

    def in_window(self, now_ns: int) -> bool:
        """True inside the post-rebalance window."""
        return self.state is TriggerState.COOLDOWN and now_ns < self.until_ns

    def remaining_secs(self, now_ns: int) -> float:
        """Seconds left in the post-rebalance window (0 outside it)."""
        if self.state is not TriggerState.COOLDOWN:
            return 0.0
        return max(0.0, (self.until_ns - now_ns) / 1e9)
