"""Prometheus metrics: a sensor for the core's events and a scrape-time collector for its state."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from engine.sensor import Sensor
from engine.types import Fill, Intent, PortfolioSnapshot, Reason

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
TRIGGER_STATES = ("idle", "armed", "cooldown", "paused")
OUTCOMES = ("complete", "partial", "failed", "parked")
REBALANCED_OUTCOMES = frozenset({"complete", "partial"})
BAD_TICK_REASONS = ("nan", "non_positive", "crossed", "backwards", "unknown_symbol", "outlier")
ORDER_STATUSES = ("sent", "filled", "partially_filled", "rejected", "expired", "canceled", "unknown")
EXECUTION_ERROR_KINDS = (  # the `kind` of ops.venues.base.VenueError subclasses, plus what the actor adds
    "rate_limited", "insufficient_funds", "rejected", "unknown_state", "unavailable", "bad_answer", "auth",
    "ledger", "bad_intent", "internal",
)
SIDES = ("buy", "sell")
UNKNOWN_REASON = "unknown"
MAX_TRACKED_INTENTS = 4096


def _label(value: object) -> str:
    """A label value from a str or a str enum (`str(Side.BUY)` would give `Side.BUY`)."""
    return str(getattr(value, "value", value))


class _TickCounts:
    """keel_ticks_total{symbol} read at scrape time from plain counters (about 60 ns a tick)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        """The counter family."""
        fam = CounterMetricFamily("keel_ticks", "Ticks applied to the book.", labels=["symbol"])
        for symbol, n in list(self.counts.items()):
            fam.add_metric([symbol], n)
        yield fam


class PrometheusSensor(Sensor):
    """The core's events as Prometheus counters and histograms, in a registry of its own."""

    __slots__ = (
        "_bad_tick_children", "_bad_ticks", "_commit_seconds", "_errors", "_fees", "_fill_children",
        "_fills", "_intent_reasons", "_intent_to_fill", "_intents", "_ledger_commits", "_ledger_errors",
        "_ledger_rows", "_orders", "_outcomes", "_rebalances", "_reconnects", "_tick_children",
        "_tick_to_intent", "_ticks", "_transitions", "_turnover", "registry",
    )

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._ticks = _TickCounts()  # plain ints on the hot path, a counter family at scrape time
        r.register(self._ticks)
        self._bad_ticks = Counter("keel_bad_ticks", "Ticks rejected, by reason.", ["symbol", "reason"], registry=r)
        self._reconnects = Counter("keel_feed_reconnects", "Feed reconnections.", ["exchange"], registry=r)
        self._intents = Counter("keel_intents", "Intents emitted.", ["portfolio", "reason"], registry=r)
        self._rebalances = Counter(
            "keel_rebalances", "Rebalances done (complete or partial), by intent reason.",
            ["portfolio", "reason"], registry=r,
        )
        self._outcomes = Counter(
            "keel_rebalance_outcomes", "Finished intents, by outcome.", ["portfolio", "outcome"], registry=r,
        )
        self._transitions = Counter(
            "keel_trigger_transitions", "Trigger state changes, by new state.", ["portfolio", "state"], registry=r,
        )
        self._orders = Counter(
            "keel_orders", "Order status changes.", ["portfolio", "symbol", "side", "status"], registry=r,
        )
        self._fills = Counter("keel_fills", "Fills committed.", ["portfolio", "symbol", "side"], registry=r)
        self._fees = Counter("keel_fees_quote", "Fees paid, in the quote currency.", ["portfolio"], registry=r)
        self._turnover = Counter(
            "keel_turnover_quote", "Filled notional, in the quote currency.", ["portfolio"], registry=r,
        )
        self._errors = Counter(
            "keel_execution_errors", "Venue and ledger errors, by kind.", ["portfolio", "kind"], registry=r,
        )
        self._ledger_commits = Counter("keel_ledger_commits", "Ledger transactions committed.", registry=r)
        self._ledger_rows = Counter("keel_ledger_rows", "Ledger rows committed.", registry=r)
        self._ledger_errors = Counter("keel_ledger_errors", "Ledger errors.", registry=r)
        self._tick_to_intent = Histogram(
            "keel_tick_to_intent_seconds", "From the receive time of a tick to the intent it caused.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self._intent_to_fill = Histogram(
            "keel_intent_to_fill_seconds", "From an intent to each of its fills.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self._commit_seconds = Histogram(
            "keel_ledger_commit_seconds", "Duration of a ledger commit.", buckets=LATENCY_BUCKETS, registry=r,
        )
        self._tick_children: dict[str, Counter] = {}
        self._bad_tick_children: dict[tuple[str, str], Counter] = {}
        self._fill_children: dict[tuple[str, str, str], Counter] = {}
        self._intent_reasons: dict[str, str] = {}

    def prepare(
        self, portfolios: Iterable[str], symbols: Iterable[str], exchanges: Iterable[str] = (),
    ) -> None:
        """Create the labelled series at zero so that rate() and increase() work from the first scrape."""
        portfolios = list(portfolios)
        symbols = list(symbols)
        for symbol in symbols:
            self._tick_child(symbol)
            for reason in BAD_TICK_REASONS:
                self._bad_tick_child(symbol, reason)
        for exchange in exchanges:
            self._reconnects.labels(exchange)
        for p in portfolios:
            for reason in Reason:
                self._intents.labels(p, reason.value)
                self._rebalances.labels(p, reason.value)
            for outcome in OUTCOMES:
                self._outcomes.labels(p, outcome)
            for state in TRIGGER_STATES:
                self._transitions.labels(p, state)
            for kind in EXECUTION_ERROR_KINDS:
                self._errors.labels(p, kind)
            self._fees.labels(p)
            self._turnover.labels(p)
            for symbol in symbols:
                for side in SIDES:
                    self._fill_child(p, symbol, side)
                    for status in ORDER_STATUSES:
                        self._orders.labels(p, symbol, side, status)

    def _tick_child(self, symbol: str) -> None:
        self._ticks.counts.setdefault(symbol, 0)

    def _bad_tick_child(self, symbol: str, reason: str) -> Counter:
        child = self._bad_tick_children[(symbol, reason)] = self._bad_ticks.labels(symbol, reason)
        return child

    def _fill_child(self, portfolio: str, symbol: str, side: str) -> Counter:
        child = self._fill_children[(portfolio, symbol, side)] = self._fills.labels(portfolio, symbol, side)
        return child

    def on_tick(self, symbol: str, ts_recv_ns: int) -> None:
        """Count a tick (hot path: a plain int in a dict; Prometheus reads it at scrape time)."""
        counts = self._ticks.counts
        counts[symbol] = counts.get(symbol, 0) + 1

    def on_bad_tick(self, symbol: str, reason: str) -> None:
        """Count a rejected tick by reason."""
        try:
            self._bad_tick_children[(symbol, reason)].inc()
        except KeyError:
            self._bad_tick_child(symbol, reason).inc()

    def on_trigger_state(self, portfolio: str, state: str) -> None:
        """Count a trigger transition (the current state itself is read at scrape time)."""
        self._transitions.labels(portfolio, state).inc()

    def on_intent(self, intent: Intent, latency_ns: int) -> None:
        """Count an intent and remember its reason until it is done."""
        reason = _label(intent.reason)
        self._intents.labels(intent.portfolio, reason).inc()
        self._tick_to_intent.observe(max(latency_ns, 0) / 1e9)
        reasons = self._intent_reasons
        if len(reasons) >= MAX_TRACKED_INTENTS:
            del reasons[next(iter(reasons))]
        reasons[intent.id] = reason

    def on_order(self, portfolio: str, symbol: str, side: str, status: str) -> None:
        """Count an order status change."""
        self._orders.labels(portfolio, symbol, _label(side), status).inc()

    def on_fill(self, portfolio: str, fill: Fill, fee_quote: float, latency_ns: int) -> None:
        """Count a committed fill, its fee and its notional."""
        side = _label(fill.side)
        try:
            child = self._fill_children[(portfolio, fill.symbol, side)]
        except KeyError:
            child = self._fill_child(portfolio, fill.symbol, side)
        child.inc()
        if fee_quote > 0:
            self._fees.labels(portfolio).inc(fee_quote)
        self._turnover.labels(portfolio).inc(float(fill.quantity * fill.price))
        self._intent_to_fill.observe(max(latency_ns, 0) / 1e9)

    def on_execution_error(self, portfolio: str, kind: str) -> None:
        """Count an execution error; kinds starting with `ledger` also count as ledger errors."""
        self._errors.labels(portfolio, kind).inc()
        if kind.startswith("ledger"):
            self._ledger_errors.inc()

    def on_rebalance_done(self, portfolio: str, intent_id: str, outcome: str) -> None:
        """Count an outcome; complete and partial ones count as rebalances by their intent's reason."""
        reason = self._intent_reasons.pop(intent_id, UNKNOWN_REASON)
        self._outcomes.labels(portfolio, outcome).inc()
        if outcome in REBALANCED_OUTCOMES:
            self._rebalances.labels(portfolio, reason).inc()

    def on_ledger_commit(self, rows: int, seconds: float) -> None:
        """Count a ledger commit and time it."""
        self._ledger_commits.inc()
        self._ledger_rows.inc(rows)
        self._commit_seconds.observe(seconds)

    def on_reconnect(self, exchange: str) -> None:
        """Count a feed reconnection."""
        self._reconnects.labels(exchange).inc()


@dataclass(frozen=True, slots=True)
class SymbolHealthView:
    """What the collector needs to know about one symbol's feed."""

    last_tick_ts_ns: int | None
    stale: bool
    ticks: int


def _build_version() -> str:
    try:
        return metadata.version("keel")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def band_usage(s: PortfolioSnapshot) -> float:
    """max |deviation| / band over the coins: the engine's own check (a coin is due at 1) in one number."""
    usage = 0.0
    for coin, deviation in s.deviations.items():
        band = s.thresholds.get(coin, math.inf)
        if band > 0.0 and math.isfinite(band):
            usage = max(usage, abs(deviation) / band)
    return usage


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class KeelCollector:
    """Reads portfolio and feed state at scrape time, so ticks pay nothing for these gauges."""

    def __init__(
        self,
        snapshots: Callable[[], list[PortfolioSnapshot]],
        symbol_health: Callable[[], dict[str, SymbolHealthView]],
        mailbox_depth: Callable[[], int],
        halted: Callable[[], bool],
        *,
        now_ns: Callable[[], int] = time.time_ns,
        version: str | None = None,
    ) -> None:
        self._snapshots = snapshots
        self._symbol_health = symbol_health
        self._mailbox_depth = mailbox_depth
        self._halted = halted
        self._now_ns = now_ns
        self._version = version if version is not None else _build_version()

    def describe(self) -> list[Metric]:
        """The families this collector exports (no samples; lets the registry catch name clashes)."""
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        """The families with their samples, read from the state now."""
        fam = self._families()
        for s in self._snapshots():
            self._add_portfolio(fam, s)
        now_ns = self._now_ns()
        for symbol, h in self._symbol_health().items():
            fam["stale"].add_metric([symbol], 1.0 if h.stale else 0.0)
            if h.last_tick_ts_ns is not None and h.ticks > 0:
                fam["last_tick"].add_metric([symbol], h.last_tick_ts_ns / 1e9)
                fam["tick_age"].add_metric([symbol], max(now_ns - h.last_tick_ts_ns, 0) / 1e9)
        fam["mailbox"].add_metric([], float(self._mailbox_depth()))
        fam["halted"].add_metric([], 1.0 if self._halted() else 0.0)
        fam["build"].add_metric([self._version], 1.0)
        yield from fam.values()

    @staticmethod
    def _add_portfolio(fam: dict[str, GaugeMetricFamily], s: PortfolioSnapshot) -> None:
        p = s.name
        fam["value"].add_metric([p], s.value)
        fam["hodl"].add_metric([p], s.hodl_value)
        if s.hodl_value > 0 and math.isfinite(s.value):
            fam["premium"].add_metric([p], s.value / s.hodl_value - 1.0)
        fam["drift"].add_metric([p], s.drift)
        fam["band"].add_metric([p], max(s.thresholds.values(), default=0.0))
        fam["window"].add_metric([p], max(s.window_remaining_secs, 0.0))
        states = TRIGGER_STATES if s.trigger_state in TRIGGER_STATES else (*TRIGGER_STATES, s.trigger_state)
        for state in states:
            fam["state"].add_metric([p, state], 1.0 if state == s.trigger_state else 0.0)
        fam["observe"].add_metric([p], 1.0 if s.mode == "observe" else 0.0)
        fam["paused"].add_metric([p], 1.0 if s.paused else 0.0)
        fam["pstale"].add_metric([p], 1.0 if s.stale else 0.0)
        fam["floor"].add_metric([p], s.floor_value)
        fam["info"].add_metric([p, s.mode, s.quote], 1.0)
        for coin, target in s.targets.items():
            fam["target"].add_metric([p, coin], target)
        for coin, weight in s.weights.items():
            fam["weight"].add_metric([p, coin], weight)
        for coin, deviation in s.deviations.items():
            fam["deviation"].add_metric([p, coin], deviation)
        for coin, threshold in s.thresholds.items():
            fam["coin_band"].add_metric([p, coin], threshold)
        fam["usage"].add_metric([p], band_usage(s))
        for asset, quantity in s.holdings.items():
            fam["holdings"].add_metric([p, asset], float(quantity))

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        pc = ("portfolio", "coin")
        return {
            "value": _gauge("keel_portfolio_value_quote", "Portfolio value in its quote currency.", ["portfolio"]),
            "hodl": _gauge(
                "keel_portfolio_hodl_value_quote", "Value of simply holding the starting coins.", ["portfolio"],
            ),
            "premium": _gauge("keel_portfolio_premium_ratio", "Value over HODL value, minus 1.", ["portfolio"]),
            "weight": _gauge("keel_portfolio_weight_ratio", "Current weight of a coin.", pc),
            "target": _gauge("keel_portfolio_target_weight_ratio", "Target weight of a coin.", pc),
            "deviation": _gauge("keel_portfolio_deviation_ratio", "Weight minus target.", pc),
            "drift": _gauge("keel_portfolio_drift_ratio", "Portfolio drift (in its band's units).", ["portfolio"]),
            "band": _gauge("keel_portfolio_band_ratio", "Largest per-coin band threshold.", ["portfolio"]),
            "coin_band": _gauge("keel_portfolio_coin_band_ratio", "Band threshold of a coin.", pc),
            "usage": _gauge("keel_portfolio_band_usage_ratio",
                            "Largest |deviation| / band over the coins: 1 or more is outside the band.", ["portfolio"]),
            "window": _gauge(
                "keel_portfolio_window_remaining_seconds", "Time left in the post-rebalance window.", ["portfolio"],
            ),
            "state": _gauge(
                "keel_portfolio_trigger_state", "1 for the trigger's current state.", ["portfolio", "state"],
            ),
            "observe": _gauge("keel_portfolio_observe_mode", "1 when the portfolio only observes.", ["portfolio"]),
            "paused": _gauge("keel_portfolio_paused", "1 when the portfolio is paused.", ["portfolio"]),
            "pstale": _gauge("keel_portfolio_stale", "1 when a price of the portfolio is stale.", ["portfolio"]),
            "floor": _gauge("keel_portfolio_floor_value_quote", "Value floor (0: none).", ["portfolio"]),
            "holdings": _gauge("keel_portfolio_holdings", "Quantity held of an asset.", ["portfolio", "asset"]),
            "info": _gauge("keel_portfolio_info", "Portfolio mode and quote currency.", ["portfolio", "mode", "quote"]),
            "last_tick": _gauge(
                "keel_last_tick_timestamp_seconds", "Receive time of the last tick of a symbol.", ["symbol"],
            ),
            "tick_age": _gauge("keel_tick_age_seconds", "Time since the last tick of a symbol.", ["symbol"]),
            "stale": _gauge("keel_feed_stale", "1 when a symbol's feed is stale.", ["symbol"]),
            "mailbox": _gauge("keel_mailbox_depth", "Messages waiting in the execution actor's mailbox."),
            "halted": _gauge("keel_halted", "1 when the service has halted trading."),
            "build": _gauge("keel_build_info", "keel's version.", ["version"]),
        }
