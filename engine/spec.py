"""What the engine needs to know about one portfolio (built from config by ops/)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from engine.types import SymbolRules

Weights = Mapping[str, float]
EdgePolicy = Callable[[Weights, Weights, Weights], dict[str, float]]
TargetPolicy = Callable[[Weights], dict[str, float]]
ThresholdPolicy = Callable[[Weights], dict[str, float]]
Schedule = Callable[[int], int]

MODES = ("threshold", "calendar", "hybrid", "observe")


@dataclass(frozen=True, slots=True)
class PortfolioSpec:
    """One portfolio's rules: targets, band thresholds (absolute weight units), trigger, venue costs."""

    name: str
    quote: str
    targets: Mapping[str, float]
    thresholds: Mapping[str, float]
    mode: str = "threshold"
    debounce_ns: int = 0
    window_ns: int = 300 * 1_000_000_000
    schedule: Schedule | None = None
    min_deviation: float = 0.03
    relative_drift: bool = False
    rebalance_to: EdgePolicy | None = None
    start: str = "quote"
    capital: Decimal = Decimal(10000)
    holdings: Mapping[str, Decimal] = field(default_factory=dict)
    fee_rate: Decimal = Decimal("0.001")
    rules: Mapping[str, SymbolRules] = field(default_factory=dict)
    target_policy: TargetPolicy | None = None
    thresholds_for: ThresholdPolicy | None = None
    recompute_ns: int = 0
    floor_value: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"portfolio {self.name}: mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.mode in ("calendar", "hybrid") and self.schedule is None:
            raise ValueError(f"portfolio {self.name}: mode {self.mode} needs a calendar schedule")
        if self.start not in ("quote", "holdings"):
            raise ValueError(f"portfolio {self.name}: start must be quote or holdings")

    @property
    def threshold_active(self) -> bool:
        """True when ticks can trigger (threshold, hybrid, observe)."""
        return self.mode in ("threshold", "hybrid", "observe")

    @property
    def symbols(self) -> list[str]:
        """The BASE-QUOTE symbols this portfolio needs prices for."""
        return [f"{c}-{self.quote}" for c in self.targets if c != self.quote]
