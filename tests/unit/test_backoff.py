"""The one backoff policy: doubling from `initial`, capped, jittered between half and all of the wait."""
from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from feeds.backoff import Backoff


@given(st.floats(0.001, 10.0), st.floats(0.01, 100.0), st.floats(1.1, 4.0), st.integers(-3, 500), st.integers(0, 2**32))
def test_every_wait_is_between_half_and_all_of_the_capped_exponential(
        initial: float, cap: float, factor: float, failures: int, seed: int) -> None:
    backoff = Backoff(initial, cap, factor)
    base = min(cap, initial * factor ** min(max(failures, 0), 64))
    delay = backoff.delay_secs(failures, random.Random(seed))
    assert 0.5 * base <= delay <= base


def test_the_waits_double_until_the_cap_and_a_seeded_jitter_repeats() -> None:
    backoff = Backoff(initial_secs=0.5, cap_secs=30.0)
    no_jitter = [backoff.delay_secs(n, _Top()) for n in range(9)]
    assert no_jitter == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert [backoff.delay_secs(3, random.Random(7)) for _ in range(2)] == [backoff.delay_secs(3, random.Random(7))] * 2


class _Top(random.Random):
    """A generator whose jitter is always the top of its range (uniform(a, b) -> b)."""

    def uniform(self, a: float, b: float) -> float:
        return b
