"""Rebalance bands: when a coin's deviation from its target makes a rebalance due.

A coin is due when `|w_i - t_i| >= thresholds[i]`, with the per-coin threshold in absolute
weight units from `effective_thresholds`: absolute -> `threshold`, relative ->
`threshold * t_i`, hybrid (the "5/25 rule") -> `min(abs_threshold, rel_threshold * t_i)`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

BandKind = Literal["absolute", "relative", "hybrid"]
BAND_KINDS: tuple[str, ...] = get_args(BandKind)
_SUM_TOLERANCE = 1e-9


class BandError(ValueError):
    """A band, its targets or the weights it is applied to are invalid."""


@dataclass(frozen=True, slots=True)
class BandOverride:
    """A per-coin band; any field left None is inherited from the portfolio's `BandSpec`."""

    kind: BandKind | None = None
    threshold: float | None = None
    abs_threshold: float | None = None
    rel_threshold: float | None = None


@dataclass(frozen=True, slots=True)
class BandSpec:
    """The portfolio's band: `threshold` for absolute/relative, `abs_threshold`/`rel_threshold` for hybrid."""

    kind: BandKind = "absolute"
    threshold: float = 0.05
    abs_threshold: float | None = None
    rel_threshold: float | None = None
    overrides: Mapping[str, BandOverride] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_band("the band", self.kind, self.threshold, self.abs_threshold, self.rel_threshold)
        for coin, o in self.overrides.items():
            if not isinstance(o, BandOverride):
                raise BandError(f"band override for {coin} must be a BandOverride, got {type(o).__name__}")
            _check_band(f"the band override for {coin}", *_resolve(self, o))


def _resolve(spec: BandSpec, o: BandOverride | None) -> tuple[BandKind, float, float | None, float | None]:
    if o is None:
        return spec.kind, spec.threshold, spec.abs_threshold, spec.rel_threshold
    return (
        o.kind if o.kind is not None else spec.kind,
        o.threshold if o.threshold is not None else spec.threshold,
        o.abs_threshold if o.abs_threshold is not None else spec.abs_threshold,
        o.rel_threshold if o.rel_threshold is not None else spec.rel_threshold,
    )


def _check_band(
    what: str, kind: str, threshold: float, abs_threshold: float | None, rel_threshold: float | None
) -> None:
    if kind not in BAND_KINDS:
        raise BandError(f"{what}: kind {kind!r} is not one of {', '.join(BAND_KINDS)}")
    if kind == "hybrid":
        for name, value in (("abs_threshold", abs_threshold), ("rel_threshold", rel_threshold)):
            if value is None:
                raise BandError(f"{what}: a hybrid band needs {name}")
            _check_positive(what, name, value)
    else:
        _check_positive(what, "threshold", threshold)


def _check_positive(what: str, name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0.0):
        raise BandError(f"{what}: {name} must be finite and > 0, got {value!r}")


def effective_thresholds(spec: BandSpec, targets: Mapping[str, float]) -> dict[str, float]:
    """Per coin, the deviation |w_i - t_i| (absolute weight units) at which that coin is due."""
    unknown = sorted(set(spec.overrides) - set(targets))
    if unknown:
        raise BandError(f"band overrides name coins that have no target: {', '.join(unknown)}")
    out: dict[str, float] = {}
    for coin, t in targets.items():
        kind, threshold, abs_threshold, rel_threshold = _resolve(spec, spec.overrides.get(coin))
        if not (math.isfinite(t) and 0.0 <= t <= 1.0):
            raise BandError(f"target of {coin} must be in [0, 1], got {t!r}")
        if kind != "absolute" and t == 0.0:
            raise BandError(f"a {kind} band needs a target > 0, and {coin} has target 0")
        if kind == "absolute":
            out[coin] = threshold
        elif kind == "relative":
            out[coin] = threshold * t
        elif abs_threshold is None or rel_threshold is None:
            raise BandError(f"the hybrid band of {coin} needs abs_threshold and rel_threshold")
        else:
            out[coin] = min(abs_threshold, rel_threshold * t)
    return out


def drift(weights: Mapping[str, float], targets: Mapping[str, float], kind: BandKind) -> float:
    """The portfolio's drift for display: max |d_i| (absolute, hybrid) or max |d_i| / t_i (relative).

    A coin missing from either mapping counts as weight or target 0.
    """
    if kind not in BAND_KINDS:
        raise BandError(f"kind {kind!r} is not one of {', '.join(BAND_KINDS)}")
    worst = 0.0
    for coin in _coins(weights, targets):
        t = targets.get(coin, 0.0)
        d = abs(weights.get(coin, 0.0) - t)
        if kind == "relative":
            if d == 0.0:
                continue
            d = d / t if t > 0.0 else math.inf
        worst = max(worst, d)
    return worst


def breached(
    weights: Mapping[str, float], targets: Mapping[str, float], thresholds: Mapping[str, float]
) -> list[str]:
    """The coins whose deviation has reached their threshold (|d_i| >= thresholds[i] and d_i != 0)."""
    out = []
    for coin in _coins(weights, targets):
        if coin not in thresholds:
            raise BandError(f"no band threshold for {coin}")
        d = abs(weights.get(coin, 0.0) - targets.get(coin, 0.0))
        if d > 0.0 and d >= thresholds[coin]:
            out.append(coin)
    return out


def edge_targets(
    weights: Mapping[str, float],
    targets: Mapping[str, float],
    thresholds: Mapping[str, float],
    margin: float = 0.1,
) -> dict[str, float]:
    """The nearest-band-edge rebalance target: w* = t + lam * (w - t), every coin inside its band.

    `lam = (1 - margin) * min over breached coins of thresholds_i / |w_i - t_i|`, so the
    coin that limits the move lands `margin` of its band inside the edge and every other
    coin is closer still. With nothing breached the current weights are returned.
    """
    if not (math.isfinite(margin) and 0.0 < margin <= 1.0):
        raise BandError(f"edge margin must be in (0, 1], got {margin!r}")
    for name, m in (("weights", weights), ("targets", targets)):
        bad = {c: v for c, v in m.items() if not (math.isfinite(v) and v >= 0.0)}
        if bad:
            raise BandError(f"{name} must be finite and >= 0: {bad}")
        total = math.fsum(m.values())
        if abs(total - 1.0) > _SUM_TOLERANCE:
            raise BandError(f"{name} sum to {total!r}, not 1")
    negative = {c: v for c, v in thresholds.items() if not v >= 0.0}
    if negative:
        raise BandError(f"band thresholds must be >= 0: {negative}")
    coins = _coins(weights, targets)
    due = breached(weights, targets, thresholds)
    if not due:
        return {c: weights.get(c, 0.0) for c in coins}
    ratio = min(thresholds[c] / abs(weights.get(c, 0.0) - targets.get(c, 0.0)) for c in due)
    lam = min(1.0, max(0.0, (1.0 - margin) * ratio))
    out = {}
    for c in coins:
        t = targets.get(c, 0.0)
        out[c] = t + lam * (weights.get(c, 0.0) - t)
    return out


def _coins(weights: Mapping[str, float], targets: Mapping[str, float]) -> list[str]:
    """Targets' coins in order, then any held coin without a target."""
    return list(dict.fromkeys([*targets, *weights]))
