"""Config -> engine: one `PortfolioSpec` per configured portfolio, wiring the strategies in."""
from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from functools import partial

from engine.spec import PortfolioSpec
from engine.types import SymbolRules
from ops.config import Config, PortfolioConfig, RebalanceConfig, resolve_data_path
from strategies import allocation
from strategies.bands import BandOverride, BandSpec, edge_targets, effective_thresholds
from strategies.calendar import next_boundary, parse_interval

SEC = 1_000_000_000


def band_spec(r: RebalanceConfig) -> BandSpec:
    """The band of a [rebalance] section."""
    return BandSpec(
        kind=r.band,
        threshold=r.threshold,
        abs_threshold=r.abs_threshold,
        rel_threshold=r.rel_threshold,
        overrides={c: BandOverride(o.kind, o.threshold, o.abs_threshold, o.rel_threshold)
                   for c, o in r.overrides.items()},
    )


def initial_targets(config: Config, p: PortfolioConfig) -> dict[str, float]:
    """Target weights that need no prices (market cap starts equal and is recomputed on the first prices)."""
    a = p.allocation
    if a is None:
        return allocation.custom(p.targets)
    if a.kind == "equal":
        return allocation.equal(a.coins, p.quote, a.quote_weight)
    if a.kind == "core_satellite":
        assert a.core is not None and a.core_weight is not None
        return allocation.core_satellite(a.core, a.core_weight, a.satellites, a.satellite_weights or None)
    return allocation.equal(a.coins, p.quote, a.quote_weight)


def symbol_rules(config: Config, symbols: list[str]) -> dict[str, SymbolRules]:
    """Step size and minimum notional per symbol from [venue] (per-symbol overrides first)."""
    v = config.venue
    rules = {}
    for s in symbols:
        o = v.symbols.get(s)
        step = o.step_size if o is not None and o.step_size is not None else v.step_size
        notional = o.min_notional if o is not None and o.min_notional is not None else v.min_notional
        rules[s] = SymbolRules(Decimal(step), Decimal(notional))
    return rules


def portfolio_spec(config: Config, p: PortfolioConfig, rules: Mapping[str, SymbolRules] | None = None) -> PortfolioSpec:
    """The engine's view of one configured portfolio."""
    r = config.rebalance_for(p)
    band = band_spec(r)
    targets = initial_targets(config, p)
    thresholds_for = partial(effective_thresholds, band)
    schedule = None
    if r.mode in ("calendar", "hybrid"):
        schedule = partial(next_boundary, parse_interval(r.interval))
    target_policy = None
    recompute_ns = 0
    a = p.allocation
    if a is not None and a.kind == "market_cap":
        assert a.supply_file is not None
        supply = allocation.read_supply_file(resolve_data_path(config, a.supply_file, key="allocation.supply_file"))
        target_policy = partial(allocation.market_cap, supply=supply, cap=a.cap, quote=p.quote,
                                quote_weight=a.quote_weight, coins=list(a.coins))
        recompute_ns = int(a.recompute_secs * SEC)
    rebalance_to = None
    if r.target == "edge":
        rebalance_to = partial(_edge, margin=r.edge_margin)
    symbols = [f"{c}-{p.quote}" for c in targets if c != p.quote]
    return PortfolioSpec(
        name=p.name,
        quote=p.quote,
        targets=targets,
        thresholds=thresholds_for(targets),
        mode=r.mode,
        debounce_ns=round(r.debounce_secs * SEC),
        window_ns=round(r.window_secs * SEC),
        schedule=schedule,
        min_deviation=r.min_deviation,
        relative_drift=r.band == "relative",
        rebalance_to=rebalance_to,
        start=p.start,
        capital=p.capital,
        holdings=dict(p.holdings),
        fee_rate=config.venue.fee_rate,
        rules=dict(rules) if rules is not None else symbol_rules(config, symbols),
        target_policy=target_policy,
        thresholds_for=thresholds_for,
        recompute_ns=recompute_ns,
        floor_value=p.floor_value,
    )


def _edge(weights: Mapping[str, float], targets: Mapping[str, float], thresholds: Mapping[str, float],
          margin: float) -> dict[str, float]:
    return edge_targets(weights, targets, thresholds, margin=margin)


def portfolio_specs(config: Config) -> list[PortfolioSpec]:
    """Every configured portfolio as an engine spec."""
    return [portfolio_spec(config, p) for p in config.all_portfolios()]
