"""Bands: per-coin thresholds, drift, breaches and nearest-edge targets."""
from __future__ import annotations

import math

import pytest

from strategies.bands import (
    BandError,
    BandOverride,
    BandSpec,
    breached,
    drift,
    edge_targets,
    effective_thresholds,
)

TARGETS = {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}


def test_absolute_thresholds_are_the_threshold() -> None:
    assert effective_thresholds(BandSpec("absolute", 0.05), TARGETS) == dict.fromkeys(TARGETS, 0.05)


def test_default_band_is_absolute_five_points() -> None:
    assert effective_thresholds(BandSpec(), {"BTC": 1.0}) == {"BTC": 0.05}


def test_relative_thresholds_scale_with_target() -> None:
    got = effective_thresholds(BandSpec("relative", 0.25), TARGETS)
    assert got == pytest.approx({"BTC": 0.125, "ETH": 0.075, "SOL": 0.05})


def test_hybrid_takes_the_tighter_of_the_two() -> None:
    spec = BandSpec("hybrid", abs_threshold=0.05, rel_threshold=0.25)
    got = effective_thresholds(spec, {"BTC": 0.6, "ETH": 0.3, "SOL": 0.1})
    # 5/25 rule: large targets use 5 points, small ones 25% of the target.
    assert got == pytest.approx({"BTC": 0.05, "ETH": 0.05, "SOL": 0.025})


def test_overrides_inherit_unset_fields() -> None:
    spec = BandSpec(
        "absolute",
        0.05,
        abs_threshold=0.04,
        rel_threshold=0.5,
        overrides={
            "ETH": BandOverride(threshold=0.02),
            "SOL": BandOverride(kind="relative"),
            "DOGE": BandOverride(kind="hybrid", rel_threshold=0.25),
        },
    )
    got = effective_thresholds(spec, {"BTC": 0.4, "ETH": 0.3, "SOL": 0.2, "DOGE": 0.1})
    assert got == pytest.approx({"BTC": 0.05, "ETH": 0.02, "SOL": 0.01, "DOGE": 0.025})


def test_override_for_a_coin_without_target_is_an_error() -> None:
    spec = BandSpec(overrides={"XRP": BandOverride(threshold=0.1)})
    with pytest.raises(BandError, match="XRP"):
        effective_thresholds(spec, TARGETS)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BandSpec("absolute", 0.0), "threshold must be finite and > 0"),
        (lambda: BandSpec("relative", math.nan), "threshold must be finite and > 0"),
        (lambda: BandSpec("hybrid", abs_threshold=0.05), "needs rel_threshold"),
        (lambda: BandSpec("hybrid", rel_threshold=0.2), "needs abs_threshold"),
        (lambda: BandSpec("hybrid", abs_threshold=-1.0, rel_threshold=0.2), "abs_threshold must be"),
        (lambda: BandSpec("band", 0.05), "not one of absolute, relative, hybrid"),  # type: ignore[arg-type]
        (lambda: BandSpec(overrides={"SOL": BandOverride(kind="hybrid")}), "override for SOL.*needs abs"),
        (lambda: BandSpec(overrides={"SOL": BandOverride(threshold=-0.1)}), "override for SOL"),
        (lambda: BandSpec(overrides={"SOL": 0.1}), "must be a BandOverride"),  # type: ignore[dict-item]
    ],
)
def test_band_spec_validation(make: object, message: str) -> None:
    with pytest.raises(BandError, match=message):
        make()  # type: ignore[operator]


def test_relative_band_needs_positive_targets() -> None:
    with pytest.raises(BandError, match="target > 0"):
        effective_thresholds(BandSpec("relative", 0.2), {"BTC": 1.0, "ETH": 0.0})
    assert effective_thresholds(BandSpec("absolute", 0.2), {"BTC": 1.0, "ETH": 0.0})["ETH"] == 0.2
    with pytest.raises(BandError, match=r"in \[0, 1\]"):
        effective_thresholds(BandSpec(), {"BTC": 1.5})


def test_drift_absolute_and_relative() -> None:
    weights = {"BTC": 0.55, "ETH": 0.27, "SOL": 0.18}
    assert drift(weights, TARGETS, "absolute") == pytest.approx(0.05)
    assert drift(weights, TARGETS, "hybrid") == pytest.approx(0.05)
    assert drift(weights, TARGETS, "relative") == pytest.approx(0.1)  # 0.05/0.5, 0.03/0.3, 0.02/0.2
    assert drift(TARGETS, TARGETS, "relative") == 0.0


def test_drift_counts_a_held_coin_without_target() -> None:
    weights = {"BTC": 0.9, "USDT": 0.1}
    assert drift(weights, {"BTC": 1.0}, "absolute") == pytest.approx(0.1)
    assert drift(weights, {"BTC": 1.0}, "relative") == math.inf
    with pytest.raises(BandError):
        drift(weights, {"BTC": 1.0}, "bogus")  # type: ignore[arg-type]


def test_xt_example_is_due_at_a_four_point_band() -> None:
    # ETH worth 6,000 and BTC 5,000: ETH is at 54.5%.
    weights = {"BTC": 5000 / 11000, "ETH": 6000 / 11000}
    targets = {"BTC": 0.5, "ETH": 0.5}
    assert breached(weights, targets, dict.fromkeys(targets, 0.05)) == []
    assert breached(weights, targets, dict.fromkeys(targets, 0.04)) == ["BTC", "ETH"]


def test_breach_is_inclusive_at_the_threshold() -> None:
    assert breached({"A": 0.75, "B": 0.25}, {"A": 0.5, "B": 0.5}, {"A": 0.25, "B": 0.3}) == ["A"]
    with pytest.raises(BandError, match="no band threshold for B"):
        breached({"A": 0.75, "B": 0.25}, {"A": 0.5, "B": 0.5}, {"A": 0.25})


def test_edge_targets_move_towards_the_centre() -> None:
    weights = {"BTC": 0.60, "ETH": 0.25, "SOL": 0.15}
    thresholds = effective_thresholds(BandSpec("absolute", 0.05), TARGETS)
    got = edge_targets(weights, TARGETS, thresholds, margin=0.1)
    # BTC breaches by 0.10: lam = 0.9 * 0.05 / 0.10 = 0.45.
    assert got == pytest.approx({"BTC": 0.545, "ETH": 0.2775, "SOL": 0.1775}, abs=1e-15)
    assert math.fsum(got.values()) == pytest.approx(1.0, abs=1e-15)
    assert breached(got, TARGETS, thresholds) == []


def test_edge_targets_limited_by_the_tightest_breach() -> None:
    # Relative band: SOL's band (0.05) is breached harder than BTC's (0.125).
    thresholds = effective_thresholds(BandSpec("relative", 0.25), TARGETS)
    weights = {"BTC": 0.62, "ETH": 0.28, "SOL": 0.10}
    got = edge_targets(weights, TARGETS, thresholds, margin=0.2)
    lam = 0.8 * min(0.125 / 0.12, 0.05 / 0.10)
    assert got == pytest.approx({c: TARGETS[c] + lam * (weights[c] - TARGETS[c]) for c in TARGETS})
    for c in TARGETS:
        assert abs(got[c] - TARGETS[c]) < thresholds[c]
    assert abs(got["SOL"] - 0.2) == pytest.approx(0.8 * 0.05)


def test_edge_targets_without_a_breach_keep_the_weights() -> None:
    weights = {"BTC": 0.52, "ETH": 0.29, "SOL": 0.19}
    thresholds = dict.fromkeys(TARGETS, 0.05)
    got = edge_targets(weights, TARGETS, thresholds)
    assert got == weights
    assert got is not weights


def test_edge_targets_margin_one_is_the_centre() -> None:
    got = edge_targets({"A": 0.8, "B": 0.2}, {"A": 0.5, "B": 0.5}, {"A": 0.1, "B": 0.1}, margin=1.0)
    assert got == {"A": 0.5, "B": 0.5}


def test_edge_targets_validation() -> None:
    t = {"A": 0.5, "B": 0.5}
    th = {"A": 0.1, "B": 0.1}
    with pytest.raises(BandError, match="margin"):
        edge_targets({"A": 0.8, "B": 0.2}, t, th, margin=0.0)
    with pytest.raises(BandError, match="weights sum to"):
        edge_targets({"A": 0.8, "B": 0.3}, t, th)
    with pytest.raises(BandError, match="targets sum to"):
        edge_targets({"A": 0.8, "B": 0.2}, {"A": 0.5, "B": 0.6}, th)
    with pytest.raises(BandError, match="thresholds must be >= 0"):
        edge_targets({"A": 0.8, "B": 0.2}, t, {"A": -0.1, "B": 0.1})
    with pytest.raises(BandError, match="weights must be finite"):
        edge_targets({"A": math.nan, "B": 0.2}, t, th)
