"""Builders for tests: ticks, specs and engines without giant fixtures."""
from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from engine.clock import ReplayClock
from engine.engine import Engine
from engine.runner import ListSink, PaperExecutor
from engine.spec import PortfolioSpec
from engine.types import Tick

SEC = 1_000_000_000
T0 = 1_704_067_200 * SEC  # 2024-01-01T00:00:00Z


def make_tick(symbol: str, price: float, ts_ns: int, spread: float = 0.0) -> Tick:
    """A tick at `price` (bid = ask unless a spread is given)."""
    return Tick(symbol, price - spread / 2, price + spread / 2, ts_ns, ts_ns)


def make_spec(targets: Mapping[str, float] | None = None, *, threshold: float = 0.05, name: str = "core",
              quote: str = "USDT", fee_rate: str = "0", **kw: object) -> PortfolioSpec:
    """A threshold-mode spec with an absolute band."""
    targets = dict(targets or {"BTC": 0.5, "ETH": 0.5})
    return PortfolioSpec(name=name, quote=quote, targets=targets,
                         thresholds={a: threshold for a in targets}, fee_rate=Decimal(fee_rate), **kw)  # type: ignore[arg-type]


def make_engine(*specs: PortfolioSpec, clock: ReplayClock | None = None, **kw: object) -> tuple[Engine, ReplayClock, ListSink, PaperExecutor]:
    """An engine on a replay clock at T0 with a paper executor recording into a ListSink."""
    clock = clock or ReplayClock(T0)
    engine = Engine(clock, list(specs) or [make_spec()], **kw)  # type: ignore[arg-type]
    sink = ListSink()
    return engine, clock, sink, PaperExecutor(engine, sink)
