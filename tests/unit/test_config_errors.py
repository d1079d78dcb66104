"""ops.config mistakes: unknown keys, wrong types, ranges and rules, each a one-line error naming the key and
the fix; secrets never echoed, syntax errors located, and the file's name on every message."""
from __future__ import annotations

from pathlib import Path

import pytest

from ops.config import ConfigError, load_config, resolve_data_path
from tests.unit.config_kit import BASE, error, load

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
