"""ops.config mistakes in a portfolio: targets, holdings and allocations, the market-cap supply file, data
paths that leave the config's folder, and overrides of coins no portfolio holds."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.config_kit import SUPPLY, error, load

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
