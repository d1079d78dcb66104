"""The rules a keel config must follow beyond its types: names, weights summing to 1, bands, paths, secrets."""
from __future__ import annotations

import math
import re
from decimal import Decimal
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from msgspec.structs import replace

from ops.config_schema import (
    AllocationConfig,
    Config,
    FeedConfig,
    PortfolioConfig,
    RebalanceConfig,
    VenueConfig,
    toml_key,
    toml_value,
)
from strategies.allocation import AllocationError, read_supply_file
from strategies.calendar import IntervalError, parse_interval

COIN = re.compile(r"[A-Z0-9]{1,20}")
PORTFOLIO_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
EXCHANGE_ID = re.compile(r"[a-z][a-z0-9_]*")
STABLECOINS = frozenset({"USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI", "USDP", "PYUSD", "USDD", "USDE"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TARGET_TOLERANCE = 1e-9
MIN_THRESHOLD = 0.01
INTERVAL_FORMS = "15m, 1h, 4h, 1d, 7d, 1w, 1M, 3M or 1y"
_ALLOCATION_KEYS = {
    "equal": {"coins", "quote_weight"},
    "market_cap": {"coins", "quote_weight", "supply_file", "cap", "recompute_secs"},
    "core_satellite": {"core", "core_weight", "satellites", "satellite_weights"},
}
_ALLOCATION_OPTIONS = sorted(set().union(*_ALLOCATION_KEYS.values()))


class ConfigError(ValueError):
    """A config mistake: one line naming the file, the dotted key and the fix."""


def resolve_data_path(config: Config, relative: str, *, key: str = "path") -> Path:
    """A data file named relative to the config file's folder; it may not leave that folder."""
    label = config.path or "config"
    base = Path(config.path).parent if config.path else Path.cwd()
    rel = Path(relative)
    if not relative or rel.is_absolute() or ".." in rel.parts:
        raise ConfigError(
            f"{label}: {key} = {toml_value(relative)} must name a file inside the config file's folder {base} "
            "(no absolute path, no ..); move the file there and name it relative to that folder"
        )
    root = base.resolve()
    full = (root / rel).resolve()
    if not full.is_relative_to(root):
        raise ConfigError(f"{label}: {key} = {toml_value(relative)} leads outside {root} through a symlink; "
                          "copy the file into the config file's folder")
    return full


def check_rules(name: str, config: Config) -> Config:
    """Check what the types cannot say; the config back with defaults settled (e.g. target "center" -> "centre")."""
    return _Checker(name, config).run()


class _Checker:
    """The rules the types cannot say: weights sum to 1, bands, frameworks, paths, names."""

    def __init__(self, name: str, config: Config) -> None:
        self.name = name
        self.config = config

    def fail(self, text: str) -> NoReturn:
        raise ConfigError(f"{self.name}: {text}")

    def run(self) -> Config:
        c = self.config
        if c.portfolio is not None and c.portfolios:
            self.fail("both [portfolio] and [[portfolios]] are set; keep one form ([[portfolios]] for several)")
        if c.portfolio is None and not c.portfolios:
            self.fail("no portfolio; add a [portfolio] table with a name and targets ([[portfolios]] for several)")
        seen: dict[str, str] = {}
        checked = []
        for i, p in enumerate(c.all_portfolios()):
            at = "portfolio" if c.portfolio is not None else f"portfolios[{i}]"
            if p.name in seen:
                self.fail(f"{at}.name = {toml_value(p.name)} is already used by {seen[p.name]}; "
                          "give each portfolio its own name")
            seen[p.name] = at
            checked.append(self.portfolio(at, p))
        top = self.rebalance("rebalance", c.rebalance)
        users = [p for p in checked if p.rebalance is None]
        if users:
            self.override_coins("rebalance", top, set().union(*(self.basket(p) for p in users)))
        self.venue(c.venue)
        self.feed(c.feed, checked)
        self.services(c)
        if c.portfolio is not None:
            return replace(c, portfolio=checked[0], rebalance=top)
        return replace(c, portfolios=checked, rebalance=top)

    @staticmethod
    def basket(p: PortfolioConfig) -> set[str]:
        return set(p.coins()) | ({p.quote} if p.holds_quote() else set())

    def coin(self, key: str, value: str) -> None:
        if not COIN.fullmatch(value):
            self.fail(f"{key} = {toml_value(value)} is not a coin name; use 1-20 upper-case letters or digits, e.g. BTC")

    def coin_key(self, table: str, value: str) -> None:
        if not COIN.fullmatch(value):
            self.fail(f"{table} has the key {toml_key(value)}, which is not a coin name; "
                      "use 1-20 upper-case letters or digits, e.g. BTC")

    def stablecoin(self, key: str, coin: str, at: str, quote: str) -> None:
        if coin != quote and coin in STABLECOINS:
            self.fail(f"{key}: {coin} is a stablecoin other than the quote {quote}; a stablecoin sleeve must be the "
                      f"portfolio's quote: set {at}.quote = {toml_value(coin)} or hold {quote} instead")

    def symbol(self, key: str, value: str) -> None:
        base, sep, quote = value.partition("-")
        if not (sep and COIN.fullmatch(base) and COIN.fullmatch(quote)):
            self.fail(f"{key} = {toml_value(value)} is not a BASE-QUOTE symbol; write it like BTC-USDT")

    def portfolio(self, at: str, p: PortfolioConfig) -> PortfolioConfig:
        if not PORTFOLIO_NAME.fullmatch(p.name):
            self.fail(f"{at}.name = {toml_value(p.name)} is not a valid name; use 1-40 characters of "
                      'A-Z a-z 0-9 _ - (e.g. "main")')
        self.coin(f"{at}.quote", p.quote)
        if not p.capital > 0:
            self.fail(f"{at}.capital = {toml_value(p.capital)} must be > 0; set the quote amount to invest, e.g. 10000")
        if p.targets and p.allocation is not None:
            self.fail(f"{at} has both targets and allocation; keep one: fixed {at}.targets or a computed "
                      f"{at}.allocation")
        if p.allocation is not None:
            self.allocation(f"{at}.allocation", at, p, p.allocation)
        elif p.targets:
            self.targets(at, p)
        else:
            self.fail(f"{at} has no targets; add {at}.targets (e.g. {{ BTC = 0.5, ETH = 0.5 }}) or an "
                      f"{at}.allocation table")
        if not p.coins():
            self.fail(f"{at} holds only its quote {p.quote}; add at least one coin to trade against it")
        self.holdings(at, p)
        if p.rebalance is None:
            return p
        own = self.rebalance(f"{at}.rebalance", p.rebalance)
        self.override_coins(f"{at}.rebalance", own, self.basket(p))
        return replace(p, rebalance=own)

    def targets(self, at: str, p: PortfolioConfig) -> None:
        for coin, weight in p.targets.items():
            self.coin_key(f"{at}.targets", coin)
            if not 0 < weight <= 1:
                self.fail(f"{at}.targets.{coin} = {weight:g} is out of range; each target weight must be in (0, 1] "
                          "(0.2 = 20%)")
            self.stablecoin(f"{at}.targets.{coin}", coin, at, p.quote)
        total = math.fsum(p.targets.values())
        if abs(total - 1.0) > TARGET_TOLERANCE:
            terms = " + ".join(f"{c} {w:.12g}" for c, w in p.targets.items())
            self.fail(f"{at}.targets sum to {total:.12g} ({terms}); they must sum to 1 (tolerance 1e-9)")

    def allocation(self, a: str, at: str, p: PortfolioConfig, alloc: AllocationConfig) -> None:
        kind = alloc.kind
        defaults = AllocationConfig(kind=kind)
        for field in _ALLOCATION_OPTIONS:
            if field not in _ALLOCATION_KEYS[kind] and getattr(alloc, field) != getattr(defaults, field):
                owners = " or ".join(k for k, keys in _ALLOCATION_KEYS.items() if field in keys)
                self.fail(f"{a}.{field} does not apply to kind = {toml_value(kind)}; remove it (it is for kind = "
                          f"{owners})")
        if kind == "core_satellite":
            self.core_satellite(a, at, p.quote, alloc)
            return
        if not alloc.coins:
            self.fail(f'{a}.kind = "{kind}" needs {a}.coins; add e.g. coins = ["BTC", "ETH", "SOL"]')
        for i, coin in enumerate(alloc.coins):
            self.coin(f"{a}.coins[{i}]", coin)
            if coin in alloc.coins[:i]:
                self.fail(f"{a}.coins names {coin} twice; list each coin once")
            if coin == p.quote and alloc.quote_weight > 0:
                self.fail(f"{a}.coins[{i}] = {toml_value(coin)} is the quote, already held by {a}.quote_weight; "
                          "name it only once")
            self.stablecoin(f"{a}.coins[{i}]", coin, at, p.quote)
        if kind == "market_cap":
            self.market_cap(a, p.quote, alloc)

    def market_cap(self, a: str, quote: str, alloc: AllocationConfig) -> None:
        if alloc.supply_file is None:
            self.fail(f'{a}.kind = "market_cap" needs {a}.supply_file; add supply_file = "supply.csv" '
                      "(a CSV file coin,circulating_supply beside the config file)")
        path = self.data_file(f"{a}.supply_file", alloc.supply_file)
        try:
            supply = read_supply_file(path)
        except AllocationError as e:
            self.fail(f"{a}.supply_file = {toml_value(alloc.supply_file)}: {e}")
        coins = [c for c in alloc.coins if c != quote]
        missing = [c for c in coins if c not in supply]
        if missing:
            self.fail(f"{a}.supply_file = {toml_value(alloc.supply_file)} has no supply for {', '.join(missing)}; "
                      "add a line coin,circulating_supply for each")
        budget = 1.0 - alloc.quote_weight
        if alloc.cap is not None and alloc.cap * len(coins) < budget * (1 - 1e-12):
            self.fail(f"{a}.cap = {alloc.cap:g} is too low for {len(coins)} coins ({len(coins)} x {alloc.cap:g} < "
                      f"{budget:g}); raise it to at least {budget / len(coins):.4g} or add coins")

    def core_satellite(self, a: str, at: str, quote: str, alloc: AllocationConfig) -> None:
        for field, example in (("core", '"BTC"'), ("core_weight", "0.6"), ("satellites", '["ETH", "SOL"]')):
            if getattr(alloc, field) in (None, []):
                self.fail(f'{a}.kind = "core_satellite" needs {a}.{field}; add e.g. {field} = {example}')
        core = alloc.core or ""
        self.coin(f"{a}.core", core)
        self.stablecoin(f"{a}.core", core, at, quote)
        for i, coin in enumerate(alloc.satellites):
            self.coin(f"{a}.satellites[{i}]", coin)
            if coin == core or coin in alloc.satellites[:i]:
                self.fail(f"{a}.satellites[{i}] = {toml_value(coin)} is named twice (core or satellite); "
                          "name each coin once")
            self.stablecoin(f"{a}.satellites[{i}]", coin, at, quote)
        if alloc.satellite_weights:
            wrong = sorted(set(alloc.satellite_weights) ^ set(alloc.satellites))
            if wrong:
                self.fail(f"{a}.satellite_weights must name exactly the satellites "
                          f"({', '.join(alloc.satellites)}); fix {', '.join(wrong)}")
            for coin, w in alloc.satellite_weights.items():
                if not w > 0:
                    self.fail(f"{a}.satellite_weights.{coin} = {w:g} must be > 0 (shares are normalised)")

    def holdings(self, at: str, p: PortfolioConfig) -> None:
        if p.start == "holdings" and not p.holdings:
            self.fail(f'{at}.start = "holdings" needs {at}.holdings; add the quantities adopted, e.g. '
                      f"{at}.holdings = {{ BTC = 0.5, {p.quote} = 1000 }}")
        if p.start == "quote" and p.holdings:
            self.fail(f'{at}.holdings is set but {at}.start = "quote"; set {at}.start = "holdings" to adopt them, '
                      f"or remove {at}.holdings")
        allowed = {*p.coins(), p.quote}
        for coin, qty in p.holdings.items():
            self.coin_key(f"{at}.holdings", coin)
            if coin not in allowed:
                self.fail(f"{at}.holdings.{coin}: {coin} is not in the portfolio ({', '.join(sorted(allowed))}); "
                          "remove it or add it to the targets")
            if not qty >= 0:
                self.fail(f"{at}.holdings.{coin} = {toml_value(qty)} must be >= 0")

    def threshold(self, key: str, value: float, r: str, low: bool) -> None:
        if not 0 < value < 1:
            self.fail(f"{key} = {value:g} is out of range; it must be above 0 and under 1 (0.05 = 5 percentage points)")
        if value < MIN_THRESHOLD and not low:
            self.fail(f"{key} = {value:g} is under the 1% minimum; raise it to at least 0.01 "
                      f"or set {r}.allow_low_threshold = true")

    def rebalance(self, r: str, rb: RebalanceConfig) -> RebalanceConfig:
        low = rb.allow_low_threshold
        self.threshold(f"{r}.threshold", rb.threshold, r, low)
        self.band(r, rb.band, rb.abs_threshold, rb.rel_threshold, r, "band")
        for field in ("abs_threshold", "rel_threshold"):
            if (value := getattr(rb, field)) is not None:
                self.threshold(f"{r}.{field}", value, r, low)
        try:
            parse_interval(rb.interval)
            ok = rb.interval == rb.interval.strip()
        except (IntervalError, ValueError):
            ok = False
        if not ok:
            self.fail(f"{r}.interval = {toml_value(rb.interval)} does not parse; use {INTERVAL_FORMS}")
        for coin, o in rb.overrides.items():
            self.coin_key(f"{r}.overrides", coin)
            at = f"{r}.overrides.{coin}"
            kind = o.kind or rb.band
            if kind == "hybrid" and o.threshold is not None:
                self.fail(f"{at}.threshold does not apply to a hybrid band; set {at}.abs_threshold and "
                          f"{at}.rel_threshold instead")
            abs_t = o.abs_threshold if o.abs_threshold is not None else rb.abs_threshold
            rel_t = o.rel_threshold if o.rel_threshold is not None else rb.rel_threshold
            self.band(at, kind, abs_t, rel_t, r, "kind", own=(o.abs_threshold, o.rel_threshold))
            for field in ("threshold", "abs_threshold", "rel_threshold"):
                if (value := getattr(o, field)) is not None:
                    self.threshold(f"{at}.{field}", value, r, low)
        return replace(rb, target="centre") if rb.target == "center" else rb

    def band(self, at: str, kind: str, abs_t: float | None, rel_t: float | None, r: str, kind_key: str,
             own: tuple[float | None, float | None] | None = None) -> None:
        names = ("abs_threshold", "rel_threshold")
        if kind == "hybrid":
            missing = [f"{at}.{n}" for n, v in zip(names, (abs_t, rel_t), strict=True) if v is None]
            if missing:
                self.fail(f'{at}.{kind_key} = "hybrid" needs {" and ".join(missing)}; add e.g. abs_threshold = 0.05 '
                          "and rel_threshold = 0.25 (the 5/25 rule)")
            return
        for n, v in zip(names, own or (abs_t, rel_t), strict=True):
            if v is not None:
                self.fail(f'{at}.{n} only applies to a hybrid band; remove it or set {at}.{kind_key} = "hybrid"')

    def override_coins(self, r: str, rb: RebalanceConfig, basket: set[str]) -> None:
        for coin in rb.overrides:
            if coin not in basket:
                self.fail(f"{r}.overrides.{coin}: {coin} is not in the portfolio ({', '.join(sorted(basket))}); "
                          f"remove the override or add {coin} to the portfolio")

    def env_name(self, key: str, value: str) -> None:
        if not ENV_NAME.fullmatch(value) or (len(value) >= 32 and "_" not in value):
            self.fail(f"{key} must be the NAME of an environment variable (like KEEL_API_KEY) and this value is not "
                      "one (it may be a secret: never put secrets in the file); export the secret in an environment "
                      "variable and write that variable's name here")

    def data_file(self, key: str, relative: str) -> Path:
        try:
            path = resolve_data_path(self.config, relative, key=key)
        except ConfigError as e:
            self.fail(str(e).split(": ", 1)[1])
        if not path.is_file():
            self.fail(f"{key} = {toml_value(relative)}: no file at {path}; put it there (data paths are relative "
                      "to the config file's folder)")
        return path

    def venue(self, v: VenueConfig) -> None:
        if not 0 <= v.fee_rate < Decimal("0.05"):
            self.fail(f"venue.fee_rate = {toml_value(v.fee_rate)} is out of range; use a fraction in [0, 0.05), "
                      "e.g. 0.001 for 0.1%")
        rules: list[tuple[str, Decimal | None, Decimal | None]] = [("venue", v.step_size, v.min_notional)]
        for symbol, s in v.symbols.items():
            self.symbol("venue.symbols key", symbol)
            rules.append((f"venue.symbols.{symbol}", s.step_size, s.min_notional))
        for at, step, minimum in rules:
            if step is not None and not step > 0:
                self.fail(f"{at}.step_size = {toml_value(step)} must be > 0, e.g. 0.00001")
            if minimum is not None and not minimum >= 0:
                self.fail(f"{at}.min_notional = {toml_value(minimum)} must be >= 0, e.g. 5")
        if not EXCHANGE_ID.fullmatch(v.exchange):
            self.fail(f'venue.exchange = {toml_value(v.exchange)} is not a ccxt exchange id; use e.g. "binance"')
        self.env_name("venue.api_key_env", v.api_key_env)
        self.env_name("venue.api_secret_env", v.api_secret_env)
        if v.base_url is not None:
            self.base_url(v)

    def base_url(self, v: VenueConfig) -> None:
        shown = toml_value(v.base_url)
        if v.kind != "ccxt":
            self.fail('venue.base_url only applies to kind = "ccxt"; remove it or set venue.kind = "ccxt"')
        try:
            url = urlsplit(v.base_url or "")
            _ = url.port
        except ValueError:
            url = urlsplit("")
        if url.scheme not in ("http", "https") or not url.hostname:
            self.fail(f"venue.base_url = {shown} is not an http(s) URL; use e.g. http://127.0.0.1:8080")
        if url.hostname not in LOOPBACK_HOSTS and not v.sandbox:
            self.fail(f"venue.base_url = {shown} is not a local server; base_url is for a local test server "
                      "(http://127.0.0.1:PORT): remove it to trade on the real exchange, or set venue.sandbox = true")

    def feed(self, f: FeedConfig, portfolios: list[PortfolioConfig]) -> None:
        for i, symbol in enumerate(f.symbols):
            self.symbol(f"feed.symbols[{i}]", symbol)
            if symbol in f.symbols[:i]:
                self.fail(f"feed.symbols[{i}] = {toml_value(symbol)} is listed twice; list each symbol once")
        if f.symbols:
            for p in portfolios:
                for symbol in p.symbols():
                    if symbol not in f.symbols:
                        self.fail(f"feed.symbols lacks {symbol}, which portfolio {p.name} needs; add it, or remove "
                                  "feed.symbols to derive them from the portfolios")
        if f.source == "file":
            if f.file is None:
                self.fail('feed.source = "file" needs feed.file; add file = "ticks.csv" (relative to the config '
                          "file's folder)")
            self.data_file("feed.file", f.file)
        elif f.file is not None:
            self.fail('feed.file only applies to source = "file"; remove it or set feed.source = "file"')

    def services(self, c: Config) -> None:
        if not c.ledger.path.strip():
            self.fail('ledger.path is empty; use e.g. "var/keel.sqlite"')
        for key, host in (("metrics.host", c.metrics.host), ("mqtt.host", c.mqtt.host), ("feed.sim_host",
                                                                                         c.feed.sim_host)):
            if not host.strip():
                self.fail(f'{key} is empty; use e.g. "127.0.0.1"')
        m = c.mqtt
        if not m.prefix.endswith("/") or "+" in m.prefix or "#" in m.prefix:
            self.fail(f'mqtt.prefix = {toml_value(m.prefix)} must end with "/" and contain no + or #; e.g. "keel/"')
        self.env_name("mqtt.username_env", m.username_env)
        self.env_name("mqtt.password_env", m.password_env)
        if m.ca_file is not None and not m.tls:
            self.fail("mqtt.ca_file only applies with mqtt.tls = true; set tls = true or remove ca_file")
        if not m.client_id.strip():
            self.fail('mqtt.client_id is empty; use e.g. "keel"')
