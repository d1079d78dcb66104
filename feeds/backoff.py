"""Capped exponential backoff with jitter: one policy for everything that reconnects or retries (the feed
supervisor, the MQTT bridge, the execution actor's polls and retries)."""
from __future__ import annotations

import random
from dataclasses import dataclass

MAX_DOUBLINGS = 64  # past this the cap has long been reached; keeps factor ** n finite


@dataclass(frozen=True, slots=True)
class Backoff:
    """The wait after n failures in a row (n >= 0): min(cap, initial * factor ** n), times a uniform 0.5-1."""

    initial_secs: float = 0.5
    cap_secs: float = 30.0
    factor: float = 2.0

    def delay_secs(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the next attempt (jitter from `rng`, else the module's generator)."""
        base = min(self.cap_secs, self.initial_secs * self.factor ** min(max(failures, 0), MAX_DOUBLINGS))
        return base * (rng.uniform(0.5, 1.0) if rng is not None else random.uniform(0.5, 1.0))
