"""ops.config: strict loading of every section, exact decimals, and the explanation, reference and examples.
(Mistakes and their messages: test_config_errors.py and test_config_portfolio.py.)"""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from ops.config import explain, load_config, loads_config, resolve_data_path
from ops.configdoc import render_reference
from tests.unit.config_kit import BASE, ROOT, SUPPLY, load


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
