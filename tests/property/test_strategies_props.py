"""Properties of the pure policies: allocations, nearest-edge targets, calendar boundaries."""
from __future__ import annotations

import itertools
import math

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from strategies.allocation import AllocationError, core_satellite, equal, market_cap
from strategies.bands import BandOverride, BandSpec, breached, edge_targets, effective_thresholds
from strategies.calendar import Interval, boundaries_between, next_boundary

COINS = [f"C{i}" for i in range(12)]
positive = st.floats(min_value=1e-6, max_value=1e12, allow_nan=False, allow_infinity=False)
TS = st.integers(min_value=-(2**62), max_value=2**62)  # about years 1823 to 2116


def assert_valid(weights: dict[str, float]) -> None:
    assert abs(math.fsum(weights.values()) - 1.0) <= 1e-12
    assert all(w > 0.0 for w in weights.values())


@given(n=st.integers(1, 12), qw=st.sampled_from([0.0, 0.05, 0.2, 0.5]))
def test_equal_sums_to_one(n: int, qw: float) -> None:
    w = equal(COINS[:n], quote="USDT", quote_weight=qw)
    assert_valid(w)
    assert len(w) == n + (qw > 0)


@given(
    caps=st.lists(st.tuples(positive, positive), min_size=1, max_size=12),
    cap=st.none() | st.floats(min_value=0.01, max_value=1.0),
    qw=st.sampled_from([0.0, 0.1, 0.3]),
)
def test_market_cap_sums_to_one_and_respects_the_cap(
    caps: list[tuple[float, float]], cap: float | None, qw: float
) -> None:
    coins = COINS[: len(caps)]
    prices = {c: p for c, (p, _) in zip(coins, caps, strict=True)}
    supply = {c: s for c, (_, s) in zip(coins, caps, strict=True)}
    try:
        w = market_cap(prices, supply, cap=cap, quote="USDT", quote_weight=qw)
    except AllocationError as e:
        assert cap is not None and cap * len(coins) < 1.0 - qw, e
        return
    assert_valid(w)
    mc = {c: prices[c] * supply[c] for c in coins}
    if cap is not None:
        assert all(w[c] <= cap + 1e-12 for c in coins)
        # Uncapped coins keep their market-cap proportions among themselves.
        free = [c for c in coins if w[c] < cap - 1e-9]
        for a, b in itertools.pairwise(free):
            assert math.isclose(w[a] / w[b], mc[a] / mc[b], rel_tol=1e-9)
    # A larger market cap never gets a smaller weight.
    for a in coins:
        for b in coins:
            if mc[a] > mc[b]:
                assert w[a] >= w[b] - 1e-12


@given(
    cw=st.floats(min_value=1e-3, max_value=0.999),
    sats=st.lists(positive, min_size=1, max_size=11),
    weighted=st.booleans(),
)
def test_core_satellite_sums_to_one(cw: float, sats: list[float], weighted: bool) -> None:
    names = COINS[1 : 1 + len(sats)]
    sw = dict(zip(names, sats, strict=True)) if weighted else None
    w = core_satellite(COINS[0], cw, names, sw)
    assert_valid(w)
    assert math.isclose(w[COINS[0]], cw, rel_tol=1e-12)


def simplex(n: int) -> st.SearchStrategy[list[float]]:
    """n weights > 0 summing to 1."""
    return st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=n, max_size=n).map(
        lambda xs: [x / math.fsum(xs) for x in xs]
    )


@st.composite
def drifted(draw: st.DrawFn) -> tuple[dict[str, float], dict[str, float], BandSpec]:
    n = draw(st.integers(2, 8))
    coins = COINS[:n]
    targets = dict(zip(coins, draw(simplex(n)), strict=True))
    weights = dict(zip(coins, draw(simplex(n)), strict=True))
    kind = draw(st.sampled_from(["absolute", "relative", "hybrid"]))
    spec = BandSpec(
        kind,
        draw(st.floats(min_value=0.01, max_value=0.5)),
        abs_threshold=draw(st.floats(min_value=0.01, max_value=0.2)),
        rel_threshold=draw(st.floats(min_value=0.05, max_value=1.0)),
        overrides={coins[0]: BandOverride(kind="absolute", threshold=draw(st.floats(0.005, 0.3)))},
    )
    return weights, targets, spec


@given(case=drifted(), margin=st.floats(min_value=0.01, max_value=1.0))
def test_edge_targets_sum_to_one_and_lie_inside_every_band(
    case: tuple[dict[str, float], dict[str, float], BandSpec], margin: float
) -> None:
    weights, targets, spec = case
    thresholds = effective_thresholds(spec, targets)
    got = edge_targets(weights, targets, thresholds, margin=margin)
    assert abs(math.fsum(got.values()) - 1.0) <= 1e-9
    assert all(v >= 0.0 for v in got.values())
    assert breached(got, targets, thresholds) == []
    for c in targets:
        assert abs(got[c] - targets[c]) < thresholds[c] or got[c] == targets[c]
        # Never past the target: each coin moves towards its target or stays.
        assert abs(got[c] - targets[c]) <= abs(weights[c] - targets[c]) + 1e-15
    if breached(weights, targets, thresholds):
        # The limiting coin ends `margin` of its band inside the edge.
        assert any(
            math.isclose(abs(got[c] - targets[c]), (1 - margin) * thresholds[c], rel_tol=1e-6, abs_tol=1e-12)
            for c in targets
        )
    else:
        assert got == weights


INTERVALS = st.one_of(
    st.builds(Interval, st.just("m"), st.just("m"), st.sampled_from([1, 5, 15, 30, 45, 90])),
    st.builds(Interval, st.just("h"), st.just("h"), st.integers(1, 48)),
    st.builds(Interval, st.just("d"), st.just("d"), st.integers(1, 30)),
    st.builds(Interval, st.just("w"), st.just("w"), st.integers(1, 8)),
    st.builds(Interval, st.just("M"), st.just("M"), st.integers(1, 24)),
    st.builds(Interval, st.just("y"), st.just("y"), st.integers(1, 10)),
)


@given(interval=INTERVALS, ts=TS)
def test_next_boundary_of_a_boundary_is_the_next_one(interval: Interval, ts: int) -> None:
    b = next_boundary(interval, ts)
    assert b > ts
    assume(b < 2**62)
    b2 = next_boundary(interval, b)
    assert b2 > b
    # Nothing lies strictly between: every time in [b, b2) leads to b2, just before b leads to b.
    assert next_boundary(interval, b - 1) == b
    assert next_boundary(interval, b2 - 1) == b2
    assert next_boundary(interval, (b + b2) // 2) == b2
    assert next_boundary(interval, ts + (b - ts) // 2) == b


@settings(max_examples=50)
@given(interval=INTERVALS, ts=TS, span=st.integers(0, 400 * 86_400 * 10**9))
def test_boundaries_between_are_the_chain_of_next_boundaries(interval: Interval, ts: int, span: int) -> None:
    assume(ts + span < 2**62)
    got = boundaries_between(interval, ts, ts + span)
    chain = []
    b = next_boundary(interval, ts)
    while b <= ts + span:
        chain.append(b)
        b = next_boundary(interval, b)
    assert got == chain
