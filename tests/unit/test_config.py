"""ops.config: strict loading, one-line errors naming the key, exact decimals, the generated reference."""
from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from ops.config import Config, ConfigError, explain, load_config, loads_config, resolve_data_path
from ops.configdoc import render_reference

ROOT = Path(__file__).resolve().parents[2]
BASE = '[portfolio]\nname = "main"\ntargets = { BTC = 0.5, ETH = 0.3, SOL = 0.2 }\n'
SUPPLY = "coin,circulating_supply\nBTC,19700000\nETH,120100000\nSOL,462000000\n"


def load(extra: str = "", base: str = BASE, **kw: object) -> Config:
    return loads_config(base + extra, **kw)  # type: ignore[arg-type]


def error(extra: str = "", base: str = BASE, **kw: object) -> str:
    """The ConfigError message for a config; asserts the one-line, file-first form."""
    with pytest.raises(ConfigError) as e:
        loads_config(base + extra, **kw)  # type: ignore[arg-type]
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{kw.get('name', 'keel.toml')}: ")
    return message


# ---------------------------------------------------------------- happy paths


def test_minimal_config_takes_every_default() -> None:
    c = load()
    p = c.portfolio
    assert p is not None and c.all_portfolios() == [p]
    assert p.quote == "USDT" and p.capital == Decimal("10000") and p.start == "quote"
    assert p.targets == {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}
    assert c.rebalance_for(p) is c.rebalance
    rb = c.rebalance
    assert (rb.mode, rb.band, rb.threshold, rb.window_secs, rb.interval, rb.min_deviation) == (
        "threshold", "absolute", 0.05, 300.0, "1d", 0.03)
    assert c.venue.kind == "paper" and c.venue.fee_rate == Decimal("0.001")
    assert c.venue.step_size == Decimal("0.00000001")
    assert c.feed.source == "sim" and c.ledger.path == "var/keel.sqlite"
    assert (c.metrics.enabled, c.metrics.port, c.mqtt.enabled) == (True, 9108, False)
    assert c.symbols() == ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
    assert c.path == ""


def test_structs_are_frozen() -> None:
    c = load()
    with pytest.raises(AttributeError):
        c.rebalance.threshold = 0.5  # type: ignore[misc]


def test_every_section_read_with_explicit_values(tmp_path: Path) -> None:
    (tmp_path / "ticks.csv").write_text("ts,symbol,bid,ask\n")
    c = load("""
[rebalance]
mode = "hybrid"
band = "hybrid"
abs_threshold = 0.05
rel_threshold = 0.25
debounce_secs = 1.5
window_secs = 60
interval = "4h"
min_deviation = 0
target = "center"
edge_margin = 0.2
[rebalance.overrides.SOL]
kind = "absolute"
threshold = 0.1
[venue]
kind = "ccxt"
fee_rate = 0.00075
slippage_bps = 2.5
base_url = "http://127.0.0.1:8080"
order_type = "limit_ioc"
api_key_env = "MY_KEY"
[venue.symbols.BTC-USDT]
step_size = 0.00001
min_notional = 5
[feed]
source = "file"
file = "ticks.csv"
speed = 10
price = "last"
symbols = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "BNB-USDT"]
[ledger]
path = "/tmp/x.sqlite"
[metrics]
host = "0.0.0.0"
port = 0
[mqtt]
enabled = true
port = 18830
prefix = "home/keel/"
tls = true
ca_file = "ca.pem"
""", base_dir=tmp_path)
    rb = c.rebalance
    assert (rb.mode, rb.band, rb.abs_threshold, rb.rel_threshold, rb.debounce_secs) == (
        "hybrid", "hybrid", 0.05, 0.25, 1.5)
    assert rb.target == "centre"  # "center" is read as "centre"
    assert rb.overrides["SOL"].kind == "absolute" and rb.overrides["SOL"].threshold == 0.1
    assert c.venue.symbols["BTC-USDT"].step_size == Decimal("0.00001")
    assert c.venue.symbols["BTC-USDT"].min_notional == Decimal("5")
    assert c.venue.order_type == "limit_ioc" and c.venue.api_key_env == "MY_KEY"
    assert c.feed.file == "ticks.csv" and c.feed.speed == 10.0
    assert resolve_data_path(c, c.feed.file, key="feed.file") == (tmp_path / "ticks.csv").resolve()
    assert c.symbols()[-1] == "BNB-USDT"
    assert (c.metrics.host, c.metrics.port, c.mqtt.port, c.mqtt.ca_file) == ("0.0.0.0", 0, 18830, "ca.pem")
    assert c.path == str(tmp_path.resolve() / "keel.toml")


def test_decimals_are_exact_from_the_text() -> None:
    c = load("""
[venue]
fee_rate = 0.001
step_size = 0.00000001
min_notional = 10
""", base="""[portfolio]
name = "p"
capital = 0.1
start = "holdings"
holdings = { BTC = 0.30000000000000004441, ETH = 3.3, USDT = 10000 }
targets = { BTC = 0.5, ETH = 0.5 }
""")
    p = c.portfolio
    assert p is not None
    assert isinstance(p.capital, Decimal) and str(p.capital) == "0.1"
    assert p.holdings["ETH"] == Decimal("3.3") and str(p.holdings["USDT"]) == "10000"
    assert p.holdings["BTC"] == Decimal("0.30000000000000004441")
    assert str(c.venue.fee_rate) == "0.001" and c.venue.step_size == Decimal("1e-8")
    assert c.venue.min_notional == Decimal(10)
    assert load(base='[portfolio]\nname = "p"\ncapital = "1234.5678"\ntargets = { BTC = 1 }\n').portfolio.capital == (
        Decimal("1234.5678"))


def test_several_portfolios_with_their_own_trigger() -> None:
    c = loads_config("""
[rebalance]
threshold = 0.04
[rebalance.overrides.ETH]
threshold = 0.02
[[portfolios]]
name = "a"
targets = { BTC = 0.5, ETH = 0.5 }
[[portfolios]]
name = "b"
quote = "USDC"
targets = { SOL = 0.8, USDC = 0.2 }
[portfolios.rebalance]
mode = "calendar"
interval = "1w"
""")
    a, b = c.all_portfolios()
    assert c.rebalance_for(a).threshold == 0.04
    assert c.rebalance_for(b).mode == "calendar" and c.rebalance_for(b).interval == "1w"
    assert b.holds_quote() and b.coins() == ["SOL"]
    assert c.symbols() == ["BTC-USDT", "ETH-USDT", "SOL-USDC"]


def test_allocation_frameworks(tmp_path: Path) -> None:
    (tmp_path / "supply.csv").write_text(SUPPLY)
    eq = load(base='[portfolio]\nname = "e"\n[portfolio.allocation]\nkind = "equal"\ncoins = ["BTC", "ETH"]\n'
                   "quote_weight = 0.2\n")
    assert eq.portfolio is not None and eq.portfolio.coins() == ["BTC", "ETH"] and eq.portfolio.holds_quote()
    mc = load(base='[portfolio]\nname = "m"\n[portfolio.allocation]\nkind = "market_cap"\n'
                   'coins = ["BTC", "ETH", "SOL"]\nsupply_file = "supply.csv"\ncap = 0.5\n', base_dir=tmp_path)
    assert mc.portfolio is not None and mc.portfolio.allocation is not None
    assert resolve_data_path(mc, "supply.csv") == (tmp_path / "supply.csv").resolve()
    cs = load(base='[portfolio]\nname = "c"\n[portfolio.allocation]\nkind = "core_satellite"\ncore = "BTC"\n'
                   'core_weight = 0.6\nsatellites = ["ETH", "SOL"]\nsatellite_weights = { ETH = 2, SOL = 1 }\n')
    assert cs.portfolio is not None and cs.portfolio.coins() == ["BTC", "ETH", "SOL"]


def test_allow_low_threshold_unlocks_thresholds_under_one_percent() -> None:
    assert load("[rebalance]\nthreshold = 0.005\nallow_low_threshold = true\n").rebalance.threshold == 0.005


def test_quote_may_be_a_target_as_a_stablecoin_sleeve() -> None:
    c = load(base='[portfolio]\nname = "s"\ntargets = { BTC = 0.4, ETH = 0.3, SOL = 0.1, USDT = 0.2 }\n')
    assert c.portfolio is not None and c.portfolio.holds_quote() and "USDT-USDT" not in c.symbols()


def test_remote_base_url_allowed_only_in_sandbox() -> None:
    c = load('[venue]\nkind = "ccxt"\nsandbox = true\nbase_url = "https://testnet.binance.vision"\n')
    assert c.venue.base_url == "https://testnet.binance.vision"


def test_load_config_reads_a_file_and_anchors_data_paths(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "supply.csv").write_text(SUPPLY)
    path = tmp_path / "my.toml"
    path.write_text(BASE)
    c = load_config(path)
    assert c.path == str(path.resolve())
    assert resolve_data_path(c, "data/supply.csv") == (tmp_path / "data" / "supply.csv").resolve()


# ---------------------------------------------------------------- mistakes

UNKNOWN_KEYS = [
    ("bogus = 1\n", "unknown key bogus; allowed keys: portfolio, portfolios, rebalance, venue,"),
    ("[rebalance]\nthresh = 0.1\n", "unknown key rebalance.thresh (did you mean threshold?); allowed keys: mode, band"),
    ("[rebalance.overrides.BTC]\ntreshold = 0.1\n", "unknown key rebalance.overrides.BTC.treshold"),
    ("[venue]\nfees = 0.1\n", "unknown key venue.fees"),
    ("[venue.symbols.BTC-USDT]\nstep = 1\n", "unknown key venue.symbols.BTC-USDT.step (did you mean step_size?); allowed keys: step_size, min_notional"),
    ("[feed]\nsorce = 'sim'\n", "unknown key feed.sorce (did you mean source?)"),
    ("[ledger]\nfile = 'x'\n", "unknown key ledger.file; allowed keys: path"),
    ("[metrics]\nadress = 'x'\n", "unknown key metrics.adress"),
    ("[mqtt]\ntopic = 'x'\n", "unknown key mqtt.topic"),
    ("[portfolio.rebalance]\nwindow = 1\n", "unknown key portfolio.rebalance.window (did you mean window_secs?)"),
    ("[portfolio.allocation]\nkind = 'equal'\ncoin = ['BTC']\n", "unknown key portfolio.allocation.coin"),
    ("BTC = 0.5\n", "unknown key BTC; allowed keys: portfolio,"),
]


def _error_anywhere(extra: str, base: str = BASE) -> str:
    """Top-level keys go before the first table, table snippets after the base portfolio."""
    return error(extra, base=base) if extra.startswith("[") else error(extra + base, base="")


@pytest.mark.parametrize(("extra", "expected"), UNKNOWN_KEYS)
def test_unknown_keys_at_every_level_are_named(extra: str, expected: str) -> None:
    base = BASE if "portfolio.allocation" not in extra else '[portfolio]\nname = "main"\n'
    assert expected in _error_anywhere(extra, base)


def test_unknown_key_in_a_later_portfolio_names_its_index() -> None:
    msg = error(base='[[portfolios]]\nname = "a"\ntargets = { BTC = 1 }\n[[portfolios]]\nname = "b"\nweights = 1\n')
    assert "unknown key portfolios[1].weights" in msg


def test_a_coin_written_in_the_portfolio_table_points_to_targets() -> None:
    assert "unknown key portfolio.BTC (coin weights go in portfolio.targets)" in error("BTC = 0.5\n")


MISTAKES = [
    # types
    ('[rebalance]\nthreshold = "5%"\n', 'rebalance.threshold = "5%" is a string; it must be a number'),
    ("[metrics]\nport = 9108.5\n", "metrics.port = 9108.5 is a number; it must be a whole number"),
    ('[mqtt]\nenabled = "yes"\n', 'mqtt.enabled = "yes" is a string; it must be true or false'),
    ("[rebalance]\nthreshold = true\n", "rebalance.threshold = true is a boolean; it must be a number"),
    ('[portfolio.allocation]\nkind = "equal"\ncoins = "BTC"\n',
     'portfolio.allocation.coins = "BTC" is a string; it must be an array [...]'),
    ('[portfolios]\nname = "b"\n', "portfolios is a table; it must be an array of tables: write [[portfolios]]"),
    ("rebalance = 5\n", "rebalance = 5 is a whole number; it must be a table"),
    ('[venue]\nmin_notional = "lots"\n', 'venue.min_notional = "lots" is not a number'),
    ('[rebalance]\nmode = "sometimes"\n',
     'rebalance.mode = "sometimes" is not allowed; use one of "threshold", "calendar", "hybrid", "observe"'),
    ('[rebalance.overrides.SOL]\nkind = "wide"\n', 'rebalance.overrides.SOL.kind = "wide" is not allowed'),
    ('[venue.symbols.ETH-USDT]\nstep_size = "x"\n', 'venue.symbols.ETH-USDT.step_size = "x" is not a number'),
    # ranges
    ("[rebalance]\ndebounce_secs = -1\n", "rebalance.debounce_secs = -1 is out of range; it must be >= 0"),
    ("[rebalance]\nwindow_secs = -5\n", "rebalance.window_secs = -5 is out of range; it must be >= 0"),
    ("[rebalance]\nmin_deviation = 1\n", "rebalance.min_deviation = 1 is out of range; it must be in [0, 1)"),
    ("[rebalance]\nedge_margin = 1.5\n", "rebalance.edge_margin = 1.5 is out of range"),
    ("[rebalance]\nthreshold = 1\n", "rebalance.threshold = 1 is out of range; it must be in (0, 1)"),
    ("[venue]\nslippage_bps = -1\n", "venue.slippage_bps = -1 is out of range"),
    ("[metrics]\nport = 70000\n", "metrics.port = 70000 is out of range; it must be in [0, 65535]"),
    ("[feed]\nspeed = 0\n", "feed.speed = 0 is out of range; it must be > 0"),
    ("[portfolio.rebalance]\nwindow_secs = -1\n", "portfolio.rebalance.window_secs = -1 is out of range"),
    ("[rebalance]\nthreshold = nan\n", "rebalance.threshold = nan is not a finite number"),
    ("[feed]\nstale_secs = inf\n", "feed.stale_secs = inf is not a finite number"),
    # thresholds and bands
    ("[rebalance]\nthreshold = 0.005\n",
     "rebalance.threshold = 0.005 is under the 1% minimum; raise it to at least 0.01 or set "
     "rebalance.allow_low_threshold = true"),
    ('[rebalance]\nband = "hybrid"\nabs_threshold = 0.05\n',
     'rebalance.band = "hybrid" needs rebalance.rel_threshold'),
    ('[rebalance]\nband = "hybrid"\nabs_threshold = 0.005\nrel_threshold = 0.25\n',
     "rebalance.abs_threshold = 0.005 is under the 1% minimum"),
    ("[rebalance]\nabs_threshold = 0.05\n", 'rebalance.abs_threshold only applies to a hybrid band'),
    ("[rebalance.overrides.SOL]\nthreshold = 0.001\n", "rebalance.overrides.SOL.threshold = 0.001 is under the 1%"),
    ('[rebalance.overrides.SOL]\nkind = "hybrid"\nabs_threshold = 0.05\n',
     'rebalance.overrides.SOL.kind = "hybrid" needs rebalance.overrides.SOL.rel_threshold'),
    ('[rebalance.overrides.SOL]\nkind = "hybrid"\nthreshold = 0.05\n',
     "rebalance.overrides.SOL.threshold does not apply to a hybrid band"),
    ("[rebalance.overrides.SOL]\nrel_threshold = 0.2\n", "rebalance.overrides.SOL.rel_threshold only applies"),
    ("[rebalance.overrides.DOGE]\nthreshold = 0.1\n", "rebalance.overrides.DOGE: DOGE is not in the portfolio"),
    ("[portfolio.rebalance.overrides.XRP]\nthreshold = 0.1\n",
     "portfolio.rebalance.overrides.XRP: XRP is not in the portfolio"),
    ("[rebalance.overrides.sol]\nthreshold = 0.1\n", "rebalance.overrides has the key sol, which is not a coin name"),
    # intervals
    ('[rebalance]\nmode = "calendar"\ninterval = "2x"\n',
     'rebalance.interval = "2x" does not parse; use 15m, 1h, 4h, 1d, 7d, 1w, 1M, 3M or 1y'),
    ('[rebalance]\nmode = "hybrid"\ninterval = "0d"\n', 'rebalance.interval = "0d" does not parse'),
    ('[portfolio.rebalance]\nmode = "calendar"\ninterval = "1 day"\n',
     'portfolio.rebalance.interval = "1 day" does not parse'),
    # venue
    ("[venue]\nfee_rate = 0.05\n", "venue.fee_rate = 0.05 is out of range; use a fraction in [0, 0.05)"),
    ("[venue]\nstep_size = 0\n", "venue.step_size = 0 must be > 0"),
    ("[venue]\nmin_notional = -1\n", "venue.min_notional = -1 must be >= 0"),
    ("[venue.symbols.BTCUSDT]\nstep_size = 0.1\n", 'venue.symbols key = "BTCUSDT" is not a BASE-QUOTE symbol'),
    ("[venue.symbols.BTC-USDT]\nstep_size = -0.1\n", "venue.symbols.BTC-USDT.step_size = -0.1 must be > 0"),
    ('[venue]\nexchange = "Binance US"\n', 'venue.exchange = "Binance US" is not a ccxt exchange id'),
    ('[venue]\nkind = "ccxt"\nbase_url = "https://api.binance.com"\n',
     'venue.base_url = "https://api.binance.com" is not a local server'),
    ('[venue]\nbase_url = "http://127.0.0.1:8080"\n', 'venue.base_url only applies to kind = "ccxt"'),
    ('[venue]\nkind = "ccxt"\nbase_url = "ftp://127.0.0.1"\n', "is not an http(s) URL"),
    ('[venue]\napi_key = "abc"\n', "venue.api_key is not allowed: secrets never go in the file"),
    ('[venue]\nsecret = "abc"\n', "venue.secret is not allowed"),
    ('[mqtt]\npassword = "abc"\n', "mqtt.password is not allowed: secrets never go in the file"),
    ('[mqtt]\npassword_env = "my password"\n', "mqtt.password_env must be the NAME of an environment variable"),
    # feed
    ('[feed]\nsource = "file"\n', 'feed.source = "file" needs feed.file'),
    ('[feed]\nfile = "ticks.csv"\n', 'feed.file only applies to source = "file"'),
    ('[feed]\nsymbols = ["BTC-USDT", "ETH-USDT"]\n', "feed.symbols lacks SOL-USDT, which portfolio main needs"),
    ('[feed]\nsymbols = ["BTC/USDT"]\n', 'feed.symbols[0] = "BTC/USDT" is not a BASE-QUOTE symbol'),
    ('[feed]\nsymbols = ["BTC-USDT", "BTC-USDT"]\n', "feed.symbols[1] = \"BTC-USDT\" is listed twice"),
    # services
    ('[mqtt]\nprefix = "keel/#"\n', 'mqtt.prefix = "keel/#" must end with "/" and contain no + or #'),
    ('[mqtt]\nca_file = "ca.pem"\n', "mqtt.ca_file only applies with mqtt.tls = true"),
    ('[ledger]\npath = ""\n', "ledger.path is empty"),
    ('path = "/etc/keel.toml"\n', "path is set by the loader"),
]


@pytest.mark.parametrize(("extra", "expected"), MISTAKES)
def test_each_mistake_names_its_key_and_the_fix(extra: str, expected: str) -> None:
    assert expected in _error_anywhere(extra)


PORTFOLIO_MISTAKES = [
    ('[portfolio]\nname = "a"\ntargets = { BTC = 0.5, ETH = 0.4 }\n',
     "portfolio.targets sum to 0.9 (BTC 0.5 + ETH 0.4); they must sum to 1 (tolerance 1e-9)"),
    ('[portfolio]\nname = "a"\ntargets = { BTC = 1.5, ETH = -0.5 }\n',
     "portfolio.targets.BTC = 1.5 is out of range; each target weight must be in (0, 1]"),
    ('[portfolio]\nname = "a"\ntargets = { BTC = 0, ETH = 1 }\n', "portfolio.targets.BTC = 0 is out of range"),
    ('[portfolio]\nname = "a"\ntargets = { BTC = "half" }\n', 'portfolio.targets.BTC = "half" is a string'),
    ('[portfolio]\nname = "a"\ntargets = { BTC = 0.5, ETH = 0.5, SOL = "x" }\n', "portfolio.targets.SOL = \"x\""),
    ('[portfolio]\nname = "a"\ntargets = { btc = 1 }\n', "portfolio.targets has the key btc, which is not a coin"),
    ('[portfolio]\nname = "a"\ntargets = { BTC = 0.8, USDC = 0.2 }\n',
     'portfolio.targets.USDC: USDC is a stablecoin other than the quote USDT; a stablecoin sleeve must be the '
     "portfolio's quote"),
    ('[portfolio]\nname = "a"\ntargets = { USDT = 1 }\n', "portfolio holds only its quote USDT"),
    ('[portfolio]\nname = "a b"\ntargets = { BTC = 1 }\n', 'portfolio.name = "a b" is not a valid name'),
    ('[portfolio]\nname = "a"\nquote = "usdt"\ntargets = { BTC = 1 }\n', 'portfolio.quote = "usdt" is not a coin'),
    ('[portfolio]\nname = "a"\ncapital = 0\ntargets = { BTC = 1 }\n', "portfolio.capital = 0 must be > 0"),
    ('[portfolio]\ntargets = { BTC = 1 }\n', 'portfolio.name is required; add name = "main"'),
    ('[portfolio]\nname = "a"\n', "portfolio has no targets; add portfolio.targets"),
    ('[portfolio]\nname = "a"\ntargets = { BTC = 1 }\n[portfolio.allocation]\nkind = "equal"\ncoins = ["BTC"]\n',
     "portfolio has both targets and allocation"),
    ("", "no portfolio; add a [portfolio] table"),
    ('[portfolio]\nname = "a"\ntargets = { BTC = 1 }\n[[portfolios]]\nname = "b"\ntargets = { BTC = 1 }\n',
     "both [portfolio] and [[portfolios]] are set"),
    ('[[portfolios]]\nname = "a"\ntargets = { BTC = 1 }\n[[portfolios]]\nname = "a"\ntargets = { ETH = 1 }\n',
     'portfolios[1].name = "a" is already used by portfolios[0]'),
    ('[[portfolios]]\nname = "a"\ntargets = { BTC = 0.5, ETH = 0.6 }\n', "portfolios[0].targets sum to 1.1"),
    # start and holdings
    ('[portfolio]\nname = "a"\nstart = "holdings"\ntargets = { BTC = 1 }\n',
     'portfolio.start = "holdings" needs portfolio.holdings'),
    ('[portfolio]\nname = "a"\nholdings = { BTC = 1 }\ntargets = { BTC = 1 }\n',
     'portfolio.holdings is set but portfolio.start = "quote"'),
    ('[portfolio]\nname = "a"\nstart = "holdings"\nholdings = { DOGE = 1 }\ntargets = { BTC = 1 }\n',
     "portfolio.holdings.DOGE: DOGE is not in the portfolio"),
    ('[portfolio]\nname = "a"\nstart = "holdings"\nholdings = { BTC = -1 }\ntargets = { BTC = 1 }\n',
     "portfolio.holdings.BTC = -1 must be >= 0"),
    ('[portfolio]\nname = "a"\nstart = "later"\ntargets = { BTC = 1 }\n', 'portfolio.start = "later" is not allowed'),
    # allocation
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\ncoins = ["BTC"]\n',
     'portfolio.allocation.kind is required; add kind = "equal" (one of equal, market_cap, core_satellite)'),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "equal"\n',
     'portfolio.allocation.kind = "equal" needs portfolio.allocation.coins'),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "equal"\ncoins = ["BTC", "BTC"]\n',
     "portfolio.allocation.coins names BTC twice"),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "equal"\ncoins = ["BTC", "eth"]\n',
     'portfolio.allocation.coins[1] = "eth" is not a coin name'),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "equal"\ncoins = ["BTC"]\nsupply_file = "s.csv"\n',
     'portfolio.allocation.supply_file does not apply to kind = "equal"; remove it (it is for kind = market_cap)'),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "equal"\ncoins = ["BTC"]\ncore = "BTC"\n',
     'portfolio.allocation.core does not apply to kind = "equal"'),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "market_cap"\ncoins = ["BTC"]\n',
     'portfolio.allocation.kind = "market_cap" needs portfolio.allocation.supply_file'),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "equal"\ncoins = ["BTC"]\nquote_weight = 1\n',
     "portfolio.allocation.quote_weight = 1 is out of range; it must be in [0, 1)"),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "core_satellite"\ncore_weight = 0.5\n'
     'satellites = ["ETH"]\n', 'portfolio.allocation.kind = "core_satellite" needs portfolio.allocation.core'),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "core_satellite"\ncore = "BTC"\n'
     'satellites = ["ETH"]\n', "needs portfolio.allocation.core_weight"),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "core_satellite"\ncore = "BTC"\ncore_weight = 0.5\n',
     "needs portfolio.allocation.satellites"),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "core_satellite"\ncore = "BTC"\ncore_weight = 1\n'
     'satellites = ["ETH"]\n', "portfolio.allocation.core_weight = 1 is out of range; it must be in (0, 1)"),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "core_satellite"\ncore = "BTC"\ncore_weight = 0.5\n'
     'satellites = ["ETH", "BTC"]\n', 'portfolio.allocation.satellites[1] = "BTC" is named twice'),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "core_satellite"\ncore = "BTC"\ncore_weight = 0.5\n'
     'satellites = ["ETH", "SOL"]\nsatellite_weights = { ETH = 1, ADA = 1 }\n',
     "portfolio.allocation.satellite_weights must name exactly the satellites (ETH, SOL); fix ADA, SOL"),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "core_satellite"\ncore = "BTC"\ncore_weight = 0.5\n'
     'satellites = ["ETH"]\nsatellite_weights = { ETH = 0 }\n', "portfolio.allocation.satellite_weights.ETH = 0"),
    ('[portfolio]\nname = "a"\n[portfolio.allocation]\nkind = "core_satellite"\ncore = "BTC"\ncore_weight = 0.5\n'
     'satellites = ["ETH"]\nquote_weight = 0.1\n', 'portfolio.allocation.quote_weight does not apply'),
]


@pytest.mark.parametrize(("text", "expected"), PORTFOLIO_MISTAKES)
def test_each_portfolio_mistake_names_its_key(text: str, expected: str) -> None:
    assert expected in error(base=text)


def test_market_cap_supply_file_must_exist_list_the_coins_and_fit_the_cap(tmp_path: Path) -> None:
    base = '[portfolio]\nname = "m"\n[portfolio.allocation]\nkind = "market_cap"\ncoins = ["BTC", "ETH", "ADA"]\n'
    assert "portfolio.allocation.supply_file = \"supply.csv\": no file at" in error(
        'supply_file = "supply.csv"\n', base=base, base_dir=tmp_path)
    (tmp_path / "supply.csv").write_text(SUPPLY)
    assert "has no supply for ADA" in error('supply_file = "supply.csv"\n', base=base, base_dir=tmp_path)
    base = base.replace(', "ADA"', ', "SOL"')
    assert "portfolio.allocation.cap = 0.3 is too low for 3 coins" in error(
        'supply_file = "supply.csv"\ncap = 0.3\n', base=base, base_dir=tmp_path)
    (tmp_path / "bad.csv").write_text("coin,supply\n")
    assert 'portfolio.allocation.supply_file = "bad.csv": ' in error(
        'supply_file = "bad.csv"\n', base=base, base_dir=tmp_path)


@pytest.mark.parametrize("path", ["../outside.csv", "/etc/passwd", "data/../../x.csv"])
def test_data_paths_may_not_leave_the_config_folder(tmp_path: Path, path: str) -> None:
    msg = error(f'[feed]\nsource = "file"\nfile = "{path}"\n', base_dir=tmp_path)
    assert f'feed.file = "{path}" must name a file inside the config file\'s folder' in msg


def test_a_symlink_out_of_the_config_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "ticks.csv").write_text("x\n")
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(outside / "ticks.csv", home / "ticks.csv")
    msg = error('[feed]\nsource = "file"\nfile = "ticks.csv"\n', base_dir=home)
    assert 'feed.file = "ticks.csv" leads outside' in msg and "through a symlink" in msg


def test_top_level_override_needs_a_portfolio_using_it_to_hold_the_coin() -> None:
    multi = ('[[portfolios]]\nname = "a"\ntargets = { BTC = 1 }\n[[portfolios]]\nname = "b"\ntargets = { SOL = 1 }\n'
             "[portfolios.rebalance]\nthreshold = 0.1\n")
    msg = error("[rebalance.overrides.SOL]\nthreshold = 0.1\n", base=multi)
    assert msg.startswith("keel.toml: rebalance.overrides.SOL: SOL is not in the portfolio")
    assert load("[rebalance.overrides.BTC]\nthreshold = 0.1\n", base=multi).rebalance.overrides["BTC"].threshold == 0.1


def test_secrets_are_never_echoed() -> None:
    secret = "aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA7bC9dE1fG3hI5jK7lM9nO1pQ3"
    msg = error(f'[venue]\napi_key_env = "{secret}"\n')
    assert "venue.api_key_env must be the NAME of an environment variable" in msg and secret not in msg
    msg = error(f'[venue]\napi_secret_env = "{secret.upper()}"\n')
    assert "venue.api_secret_env" in msg and secret.upper() not in msg
    msg = error(f'[venue]\napi_key = "{secret}"\n')
    assert secret not in msg and "venue.api_key_env" in msg
    msg = error("[venue]\napi_key_env = 12345\n")
    assert "venue.api_key_env = (hidden) is a whole number" in msg


def test_toml_syntax_errors_name_the_line() -> None:
    msg = error("[rebalance]\nthreshold = 0.05 0.1\n")
    assert msg.startswith("keel.toml: TOML syntax error at line 5, column 18: ")
    assert "line 4" in error("[rebalance\n")
    assert "the end of the file" in error("[rebalance]\nthreshold =")
    assert "line 4, column 11: the table [portfolio] is declared twice" in error("[portfolio]\n")


def test_the_given_name_labels_every_error() -> None:
    assert error("[rebalance]\nthreshold = 2\n", name="prod.toml").startswith("prod.toml: rebalance.threshold")


def test_load_config_of_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read the config file \(No such file"):
        load_config(tmp_path / "nope.toml")


def test_resolve_data_path_names_the_key(tmp_path: Path) -> None:
    c = load(base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"allocation\.supply_file = \"\.\./x\.csv\" must name a file inside"):
        resolve_data_path(c, "../x.csv", key="allocation.supply_file")


# ---------------------------------------------------------------- explain, docs, examples


def test_explain_says_the_trigger_in_words() -> None:
    text = explain(load("[rebalance]\ndebounce_secs = 2\n[rebalance.overrides.SOL]\nthreshold = 0.1\n"))
    assert "portfolio main (quote USDT): BTC 50%, ETH 30%, SOL 20%" in text
    assert ("rebalances when any coin's weight is 5 percentage points off target for at least 2 seconds, "
            "at most once per 5 minutes") in text
    assert "SOL has its own band: rebalances when its weight is 10 percentage points off target" in text
    assert "venue: paper" in text and "feed: the local simulator" in text
    assert "ledger: var/keel.sqlite" in text and "metrics: http://127.0.0.1:9108/metrics" in text
    calendar = explain(load('[rebalance]\nmode = "calendar"\ninterval = "4h"\n'))
    assert "rebalances at every 4h boundary (UTC) if any coin's weight is at least 3 percentage points" in calendar
    observe = explain(load('[rebalance]\nmode = "observe"\n[metrics]\nenabled = false\n'))
    assert "never trades" in observe and "metrics: off" in observe


def test_docs_config_md_is_the_generated_reference() -> None:
    on_disk = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert on_disk == render_reference(), "docs/config.md is stale: run python -m ops.configdoc > docs/config.md"


def test_reference_covers_every_section_and_key() -> None:
    ref = render_reference()
    for header in ("`[portfolio]` / `[[portfolios]]`", "`[rebalance]`", "`[rebalance.overrides.COIN]`", "`[venue]`",
                   "`[venue.symbols.BASE-QUOTE]`", "`[feed]`", "`[ledger]`", "`[metrics]`", "`[mqtt]`",
                   "`[portfolio.allocation]`"):
        assert header in ref
    assert '| `threshold` | number, > 0 and < 1 | `0.05` |' in ref
    assert '| `mode` | `"threshold"` \\| `"calendar"` \\| `"hybrid"` \\| `"observe"` | `"threshold"` |' in ref
    assert "| `name` | string | required |" in ref and "| `step_size` | exact decimal | `0.00000001` |" in ref


EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def test_there_is_an_example_per_framework() -> None:
    names = {p.stem for p in EXAMPLES}
    assert names >= {"custom", "equal", "market_cap", "core_satellite", "stablecoin_sleeve", "calendar", "observe",
                     "multi", "binance_live"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_loads_and_explains(path: Path) -> None:
    c = load_config(path)
    assert c.all_portfolios() and explain(c).startswith(f"config {path.resolve()}")


def test_examples_say_what_they_promise() -> None:
    custom = load_config(ROOT / "examples" / "custom.toml").portfolio
    assert custom is not None and custom.targets == {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}
    sleeve = load_config(ROOT / "examples" / "stablecoin_sleeve.toml").portfolio
    assert sleeve is not None and sleeve.targets == {"BTC": 0.4, "ETH": 0.3, "SOL": 0.1, "USDT": 0.2}
    live = load_config(ROOT / "examples" / "binance_live.toml")
    assert (live.feed.source, live.venue.kind, live.venue.api_key_env) == ("binance", "ccxt", "KEEL_API_KEY")
    assert len(load_config(ROOT / "examples" / "multi.toml").portfolios) == 2
