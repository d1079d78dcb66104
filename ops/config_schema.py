"""The typed, frozen structs keel's TOML config is loaded into (one description per key, for the docs)."""
from __future__ import annotations

import json
import math
import re
import types
from decimal import Decimal
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import msgspec
from msgspec import Meta, field

BandKind = Literal["absolute", "relative", "hybrid"]
RebalanceMode = Literal["threshold", "calendar", "hybrid", "observe"]


def _d(text: str, **bounds: float) -> Meta:
    """A field's one-line description (and numeric bounds, which msgspec enforces)."""
    meta: Meta = Meta(description=text, **bounds)  # type: ignore[call-overload]
    return meta


class BandOverride(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-coin band: any key left out falls back to the portfolio's [rebalance] value."""

    kind: Annotated[BandKind | None, _d("band kind for this coin (default: rebalance.band)")] = None
    threshold: Annotated[
        float | None, _d("band for an absolute or relative band; same 1% floor as rebalance.threshold")
    ] = None
    abs_threshold: Annotated[float | None, _d("absolute part of a hybrid band for this coin")] = None
    rel_threshold: Annotated[float | None, _d("relative part of a hybrid band for this coin")] = None


class RebalanceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When to rebalance: the trigger mode, the band and the post-rebalance window."""

    mode: Annotated[
        RebalanceMode,
        _d("threshold: on drift; calendar: at interval boundaries; hybrid: both; "
           "observe: threshold rules that compute and publish intents but never trade"),
    ] = "threshold"
    band: Annotated[
        BandKind,
        _d("absolute: |w - t| >= threshold; relative: |w - t| / t >= threshold; "
           "hybrid: either abs_threshold or rel_threshold reached"),
    ] = "absolute"
    threshold: Annotated[
        float, _d("band width in weight units (0.05 = 5 percentage points); 0.01 <= x < 1", gt=0, lt=1)
    ] = 0.05
    abs_threshold: Annotated[
        float | None, _d("absolute part of the hybrid band (needed when band = hybrid); 0.01 <= x < 1")
    ] = None
    rel_threshold: Annotated[
        float | None, _d("relative part of the hybrid band (needed when band = hybrid); 0.01 <= x < 1")
    ] = None
    allow_low_threshold: Annotated[
        bool, _d("unlock thresholds under 1% (the exchanges' minimum); then any value > 0")
    ] = False
    debounce_secs: Annotated[
        float, _d("how long a breach must persist before it fires (a single outlier tick never trades)", ge=0)
    ] = 0.0
    window_secs: Annotated[
        float, _d("post-rebalance window: no further intent until it closes", ge=0)
    ] = 300.0
    interval: Annotated[
        str, _d("calendar interval aligned to UTC: 15m, 1h, 4h, 1d, 7d, 1w, 1M, 3M or 1y (calendar, hybrid)")
    ] = "1d"
    min_deviation: Annotated[
        float, _d("calendar: rebalance at a boundary only if the drift is at least this (0 = always)", ge=0, lt=1)
    ] = 0.03
    target: Annotated[
        Literal["centre", "center", "edge"],
        _d("trade back to the band centre (the target weights) or only to the nearest band edge"),
    ] = "centre"
    edge_margin: Annotated[
        float, _d("with target = edge: go this fraction of the band inside the edge", ge=0, lt=1)
    ] = 0.1
    overrides: Annotated[
        dict[str, BandOverride], _d("per-coin band overrides, keyed by coin ([rebalance.overrides.SOL])")
    ] = {}


class AllocationConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A framework that computes the targets instead of fixed [portfolio.targets]."""

    kind: Annotated[
        Literal["equal", "market_cap", "core_satellite"],
        _d("equal: 1/n each; market_cap: price x circulating supply; core_satellite: a core and satellites"),
    ]
    coins: Annotated[list[str], _d("the basket's coins (equal, market_cap)")] = []
    quote_weight: Annotated[
        float, _d("share held in the quote as a stablecoin sleeve (equal, market_cap)", ge=0, lt=1)
    ] = 0.0
    supply_file: Annotated[
        str | None, _d("CSV `coin,circulating_supply`, relative to the config file's folder (market_cap)")
    ] = None
    cap: Annotated[
        Annotated[float, Meta(gt=0, le=1)] | None,
        _d("largest weight any one coin may get, excess redistributed (market_cap)"),
    ] = None
    recompute_secs: Annotated[
        float, _d("how often market-cap weights are recomputed (market_cap)", gt=0)
    ] = 86400.0
    core: Annotated[str | None, _d("the core coin, e.g. BTC or the quote stablecoin (core_satellite)")] = None
    core_weight: Annotated[
        Annotated[float, Meta(gt=0, lt=1)] | None, _d("the core's share (core_satellite)")
    ] = None
    satellites: Annotated[list[str], _d("the satellite coins sharing the rest (core_satellite)")] = []
    satellite_weights: Annotated[
        dict[str, float], _d("relative shares of the satellites, > 0, normalised (default: equal)")
    ] = {}


class PortfolioConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One basket: its coins and weights, its capital and how it starts."""

    name: Annotated[str, _d("1-40 characters of A-Z a-z 0-9 _ - (used in metrics, topics and the ledger)")]
    quote: Annotated[str, _d("quote currency every coin trades against (BTC-USDT)")] = "USDT"
    capital: Annotated[Decimal, _d("quote amount to buy into the targets with start = quote; > 0")] = Decimal(
        "10000"
    )
    start: Annotated[
        Literal["quote", "holdings"], _d("quote: buy into the targets; holdings: adopt [portfolio.holdings]")
    ] = "quote"
    holdings: Annotated[
        dict[str, Decimal], _d("with start = holdings: the coins adopted (quote included), >= 0")
    ] = {}
    targets: Annotated[
        dict[str, float], _d("fixed target weights per coin, each in (0, 1], summing to 1 (or use allocation)")
    ] = {}
    allocation: Annotated[
        AllocationConfig | None, _d("a framework computing the targets (instead of targets)")
    ] = None
    rebalance: Annotated[
        RebalanceConfig | None, _d("this portfolio's own trigger (default: the top-level [rebalance])")
    ] = None
    floor_value: Annotated[
        float, _d("alert when the portfolio's value (in the quote) falls below this; 0 = off", ge=0)
    ] = 0.0

    def coins(self) -> list[str]:
        """The basket's coins other than the quote, in config order."""
        if self.allocation is None:
            named = list(self.targets)
        elif self.allocation.kind == "core_satellite":
            named = [c for c in [self.allocation.core, *self.allocation.satellites] if c is not None]
        else:
            named = list(self.allocation.coins)
        return [c for c in dict.fromkeys(named) if c != self.quote]

    def symbols(self) -> list[str]:
        """The BASE-QUOTE symbols this portfolio needs prices for."""
        return [f"{c}-{self.quote}" for c in self.coins()]

    def holds_quote(self) -> bool:
        """True when the quote is a basket member (a stablecoin sleeve)."""
        a = self.allocation
        if a is None:
            return self.quote in self.targets
        if a.kind == "core_satellite":
            return self.quote in (a.core, *a.satellites)
        return a.quote_weight > 0 or self.quote in a.coins


class VenueSymbolConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Venue rules for one symbol, overriding the venue-wide ones."""

    step_size: Annotated[Decimal | None, _d("quantity step for this symbol; > 0")] = None
    min_notional: Annotated[Decimal | None, _d("smallest order notional (quote) for this symbol; >= 0")] = None


class VenueConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where orders go: the paper venue (simulated fills) or a real exchange through ccxt."""

    kind: Annotated[Literal["paper", "ccxt"], _d("paper: simulated fills at the feed's prices; ccxt: an exchange")] = (
        "paper"
    )
    fee_rate: Annotated[Decimal, _d("taker fee as a fraction of the notional; 0 <= x < 0.05")] = Decimal("0.001")
    slippage_bps: Annotated[float, _d("assumed slippage in basis points, planned for and (paper) applied", ge=0)] = 0.0
    min_notional: Annotated[Decimal, _d("smallest order notional in the quote (paper, default for every symbol)")] = (
        Decimal("0")
    )
    step_size: Annotated[Decimal, _d("quantity step (paper, default for every symbol); > 0")] = Decimal("0.00000001")
    symbols: Annotated[
        dict[str, VenueSymbolConfig], _d("per-symbol rules keyed BASE-QUOTE ([venue.symbols.BTC-USDT])")
    ] = {}
    latency_ms: Annotated[float, _d("simulated order latency (paper)", ge=0)] = 0.0
    exchange: Annotated[str, _d("ccxt exchange id (ccxt)")] = "binance"
    sandbox: Annotated[bool, _d("use the exchange's test network (ccxt)")] = False
    order_type: Annotated[
        Literal["market", "limit_ioc"], _d("market orders, or limit immediate-or-cancel orders (ccxt)")
    ] = "market"
    ioc_spread_bps: Annotated[
        float, _d("with limit_ioc: how far past the touch the limit price goes, in basis points", ge=0)
    ] = 10.0
    api_key_env: Annotated[str, _d("NAME of the environment variable holding the API key (never the key)")] = (
        "KEEL_API_KEY"
    )
    api_secret_env: Annotated[str, _d("NAME of the environment variable holding the API secret")] = (
        "KEEL_API_SECRET"
    )
    base_url: Annotated[
        str | None, _d("a local Binance-compatible REST server, http://127.0.0.1:PORT (testing only)")
    ] = None
    timeout_secs: Annotated[float, _d("timeout of one REST request (ccxt)", gt=0)] = 10.0
    fill_timeout_secs: Annotated[float, _d("how long an order may take to report its fills", gt=0)] = 30.0


LiveExchange = Literal["binance", "kraken", "okx"]  # the exchanges with a live cryptofeed adapter
LIVE_EXCHANGES: tuple[str, ...] = get_args(LiveExchange)


class FeedConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where prices come from."""

    source: Annotated[
        Literal["sim", LiveExchange, "file"],
        _d("sim: the local exchange simulator; binance/kraken/okx: live websockets; file: recorded ticks"),
    ] = "sim"
    symbols: Annotated[list[str], _d("BASE-QUOTE symbols to subscribe (default: those the portfolios need)")] = []
    stale_secs: Annotated[float, _d("a symbol without a tick for this long is stale; 0 = off", ge=0)] = 10.0
    outlier_fraction: Annotated[
        float, _d("drop a tick this far (as a fraction) from the last price; 0 = off", ge=0, lt=1)
    ] = 0.2
    price: Annotated[Literal["mid", "last"], _d("the price used for valuation")] = "mid"
    file: Annotated[str | None, _d("recorded ticks, relative to the config file's folder (source = file)")] = None
    speed: Annotated[float, _d("replay speed of a file (1 = real time)", gt=0)] = 1.0
    sim_seed: Annotated[int, _d("random seed of the simulator")] = 1
    sim_host: Annotated[str, _d("address the simulator listens on")] = "127.0.0.1"
    sim_port: Annotated[int, _d("port of the simulator; 0 = any free port", ge=0, le=65535)] = 0
    sim_rate_hz: Annotated[float, _d("ticks per second per symbol from the simulator", gt=0)] = 20.0
    sim_swing: Annotated[float, _d("size of the simulator's price swings (0.05 = 5%)", ge=0, lt=1)] = 0.05
    reconnect_max_secs: Annotated[float, _d("cap of the jittered reconnect backoff", gt=0)] = 30.0


class LedgerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The SQLite ledger: the source of truth for fills and holdings."""

    path: Annotated[str, _d("SQLite file, relative to the current directory or absolute")] = "var/keel.sqlite"


class MetricsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The Prometheus endpoint."""

    enabled: Annotated[bool, _d("serve Prometheus metrics")] = True
    host: Annotated[str, _d("address to listen on (loopback by default)")] = "127.0.0.1"
    port: Annotated[int, _d("port to listen on; 0 = any free port", ge=0, le=65535)] = 9108


class MqttConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """MQTT events, state and commands."""

    enabled: Annotated[bool, _d("publish to an MQTT broker")] = False
    host: Annotated[str, _d("broker address")] = "127.0.0.1"
    port: Annotated[int, _d("broker port", ge=1, le=65535)] = 1883
    prefix: Annotated[str, _d("topic prefix, ending with / and without + or #")] = "keel/"
    username_env: Annotated[str, _d("NAME of the environment variable holding the username")] = (
        "KEEL_MQTT_USERNAME"
    )
    password_env: Annotated[str, _d("NAME of the environment variable holding the password")] = (
        "KEEL_MQTT_PASSWORD"
    )
    tls: Annotated[bool, _d("connect with TLS")] = False
    ca_file: Annotated[str | None, _d("CA certificate for TLS (default: the system's)")] = None
    client_id: Annotated[str, _d("MQTT client identifier")] = "keel"
    drift_interval_secs: Annotated[float, _d("how often drift and weights are published", gt=0)] = 1.0
    outbox_retention_secs: Annotated[
        float, _d("how long published events stay in the ledger's outbox before they are deleted (unpublished ones"
                  " never are; fills and intents keep their own tables); 0 = keep them forever", ge=0)
    ] = 604800.0


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole config: one [portfolio] or several [[portfolios]], and the service's parts."""

    portfolio: Annotated[PortfolioConfig | None, _d("the portfolio (or use [[portfolios]])")] = None
    portfolios: Annotated[list[PortfolioConfig], _d("several portfolios, names unique")] = []
    rebalance: Annotated[RebalanceConfig, _d("the trigger of every portfolio without its own")] = field(
        default_factory=RebalanceConfig
    )
    venue: Annotated[VenueConfig, _d("the venue")] = field(default_factory=VenueConfig)
    feed: Annotated[FeedConfig, _d("the price feed")] = field(default_factory=FeedConfig)
    ledger: Annotated[LedgerConfig, _d("the ledger")] = field(default_factory=LedgerConfig)
    metrics: Annotated[MetricsConfig, _d("Prometheus metrics")] = field(default_factory=MetricsConfig)
    mqtt: Annotated[MqttConfig, _d("MQTT")] = field(default_factory=MqttConfig)
    path: Annotated[str, _d("set by the loader: the file the config came from (not written in the file)")] = ""

    def all_portfolios(self) -> list[PortfolioConfig]:
        """Every portfolio, in file order."""
        return [self.portfolio] if self.portfolio is not None else list(self.portfolios)

    def rebalance_for(self, p: PortfolioConfig) -> RebalanceConfig:
        """The portfolio's own [rebalance], else the top-level one."""
        return p.rebalance if p.rebalance is not None else self.rebalance

    def symbols(self) -> list[str]:
        """The feed's symbols: feed.symbols, or every symbol the portfolios need."""
        if self.feed.symbols:
            return list(self.feed.symbols)
        return list(dict.fromkeys(s for p in self.all_portfolios() for s in p.symbols()))


# Introspection shared by the error messages (ops.config) and the generated reference (ops.configdoc).

_NONE = type(None)


class FieldSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One key of a config table as the code declares it."""

    name: str
    annotated: Any  # the full annotation, usable with msgspec.convert
    base: Any  # the annotation without Annotated and None
    optional: bool
    description: str
    bounds: dict[str, float]
    default: Any  # msgspec.NODEFAULT when required


def unwrap(tp: Any) -> tuple[Any, bool, list[Meta]]:
    """Strip `Annotated[...]` and `| None` layers: (base type, optional, metas)."""
    metas: list[Meta] = []
    optional = False
    while True:
        if get_origin(tp) is Annotated:
            metas.extend(m for m in tp.__metadata__ if isinstance(m, Meta))
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, types.UnionType) and _NONE in get_args(tp):
            rest = [a for a in get_args(tp) if a is not _NONE]
            optional = True
            tp = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
        else:
            return tp, optional, metas


def field_specs(cls: type[msgspec.Struct]) -> list[FieldSpec]:
    """The keys of a config table, in declaration order, with descriptions, bounds and defaults."""
    hints = get_type_hints(cls, include_extras=True)
    out = []
    for f in msgspec.structs.fields(cls):
        base, optional, metas = unwrap(hints[f.name])
        description = " ".join(m.description for m in metas if m.description)
        bounds = {k: getattr(m, k) for m in metas for k in ("gt", "ge", "lt", "le") if getattr(m, k) is not None}
        default = f.default if f.default_factory is msgspec.NODEFAULT else f.default_factory()
        out.append(FieldSpec(name=f.name, annotated=hints[f.name], base=base, optional=optional,
                             description=description, bounds=bounds, default=default))
    return out


def literal_values(tp: Any) -> tuple[str, ...] | None:
    """The allowed values of a Literal type (in declaration order), else None."""
    return tuple(get_args(tp)) if get_origin(tp) is Literal else None


def is_section(tp: Any) -> bool:
    """True for a config table type."""
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def toml_value(value: Any, limit: int = 60) -> str:
    """A value written as TOML would write it (strings quoted, booleans lower-case), shortened past `limit`."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, Decimal | float) and not math.isfinite(value):
        text = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    elif isinstance(value, Decimal):
        text = format(value, "f") if abs(int(value.as_tuple().exponent)) < 30 else str(value)
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, list):
        text = "[" + ", ".join(toml_value(v, limit) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v, limit)}" for k, v in value.items()) + " }"
        text = "{}" if not value else text
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def toml_key(key: str) -> str:
    """A key as TOML writes it: bare when it can be, quoted otherwise."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)
