"""Target-weight allocations: custom, equal, market cap with a cap, core-satellite, supply files."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from strategies.allocation import (
    AllocationError,
    core_satellite,
    custom,
    equal,
    market_cap,
    read_supply_file,
)


def assert_valid(weights: dict[str, float]) -> None:
    assert abs(math.fsum(weights.values()) - 1.0) <= 1e-12
    assert all(w > 0.0 for w in weights.values())


# custom


def test_custom_returns_the_weights() -> None:
    w = custom({"BTC": 0.5, "ETH": 0.3, "SOL": 0.2})
    assert w == pytest.approx({"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}, abs=1e-15)
    assert list(w) == ["BTC", "ETH", "SOL"]
    assert_valid(w)


def test_custom_normalises_within_tolerance() -> None:
    w = custom({"BTC": 0.5 + 4e-10, "ETH": 0.5})
    assert_valid(w)
    assert w["BTC"] > w["ETH"]


def test_custom_sum_off_names_the_sum_and_the_weights() -> None:
    with pytest.raises(AllocationError, match=r"sum to 0\.9.*BTC=0\.5.*ETH=0\.4"):
        custom({"BTC": 0.5, "ETH": 0.4})


def test_custom_tolerance_is_honoured() -> None:
    assert_valid(custom({"BTC": 0.5, "ETH": 0.49}, tolerance=0.02))
    with pytest.raises(AllocationError):
        custom({"BTC": 0.5, "ETH": 0.5 + 1e-8})


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, math.nan, math.inf])
def test_custom_rejects_weights_outside_0_1(bad: float) -> None:
    with pytest.raises(AllocationError, match=r"\(0, 1\].*SOL="):
        custom({"BTC": 0.5, "SOL": bad})


def test_custom_rejects_empty_and_blank_names() -> None:
    with pytest.raises(AllocationError, match="empty"):
        custom({})
    with pytest.raises(AllocationError, match="non-empty"):
        custom({" ": 1.0})


def test_custom_single_coin() -> None:
    assert custom({"BTC": 1.0}) == {"BTC": 1.0}


# equal


def test_equal_splits_evenly() -> None:
    w = equal(["BTC", "ETH", "SOL"])
    assert w == pytest.approx(dict.fromkeys(["BTC", "ETH", "SOL"], 1 / 3), abs=1e-15)
    assert_valid(w)


def test_equal_with_a_stablecoin_sleeve() -> None:
    w = equal(["BTC", "ETH"], quote="USDT", quote_weight=0.2)
    assert w == pytest.approx({"BTC": 0.4, "ETH": 0.4, "USDT": 0.2}, abs=1e-15)
    assert_valid(w)


def test_equal_ignores_the_quote_without_a_weight() -> None:
    assert equal(["BTC", "ETH"], quote="USDT") == {"BTC": 0.5, "ETH": 0.5}


@pytest.mark.parametrize(
    ("coins", "quote", "qw", "message"),
    [
        ([], None, 0.0, "at least one"),
        (["BTC", "BTC"], None, 0.0, "BTC is named twice"),
        (["BTC"], None, 0.2, "without a quote"),
        (["BTC", "USDT"], "USDT", 0.2, "USDT is both"),
        (["BTC"], "USDT", 1.0, r"\[0, 1\)"),
        (["BTC"], "USDT", -0.1, r"\[0, 1\)"),
    ],
)
def test_equal_errors(coins: list[str], quote: str | None, qw: float, message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        equal(coins, quote=quote, quote_weight=qw)


# market cap


def test_market_cap_is_price_times_supply() -> None:
    w = market_cap({"BTC": 60_000.0, "ETH": 3_000.0}, {"BTC": 20.0, "ETH": 200.0})
    # caps 1.2M and 0.6M
    assert w == pytest.approx({"BTC": 2 / 3, "ETH": 1 / 3}, abs=1e-15)
    assert_valid(w)


def test_market_cap_cap_redistributes_in_proportion() -> None:
    # caps 70, 20, 10 -> BTC capped at 0.5; its 0.2 excess goes 2:1 to ETH and SOL.
    w = market_cap({"BTC": 1.0, "ETH": 1.0, "SOL": 1.0}, {"BTC": 70.0, "ETH": 20.0, "SOL": 10.0}, cap=0.5)
    assert w == pytest.approx({"BTC": 0.5, "ETH": 1 / 3, "SOL": 1 / 6}, abs=1e-12)
    assert_valid(w)


def test_market_cap_cap_needs_several_rounds() -> None:
    # caps 60, 25, 10, 5 with cap 0.3. Round 1: BTC 0.6 -> 0.3; the rest share 0.7 by 25:10:5,
    # so ETH gets 0.4375 > 0.3 and is capped in round 2; SOL and DOGE share 0.4 by 10:5.
    prices = dict.fromkeys(["BTC", "ETH", "SOL", "DOGE"], 2.0)
    supply = {"BTC": 60.0, "ETH": 25.0, "SOL": 10.0, "DOGE": 5.0}
    w = market_cap(prices, supply, cap=0.3)
    assert w == pytest.approx({"BTC": 0.3, "ETH": 0.3, "SOL": 0.4 * 2 / 3, "DOGE": 0.4 / 3}, abs=1e-12)
    assert max(w.values()) <= 0.3 + 1e-12
    assert_valid(w)


def test_market_cap_cap_that_only_fits_exactly() -> None:
    w = market_cap(dict.fromkeys("ABCD", 1.0), {"A": 97.0, "B": 1.0, "C": 1.0, "D": 1.0}, cap=0.25)
    assert w == pytest.approx(dict.fromkeys("ABCD", 0.25), abs=1e-15)


def test_market_cap_impossible_cap() -> None:
    with pytest.raises(AllocationError, match=r"impossible for 3 coins"):
        market_cap(dict.fromkeys("ABC", 1.0), dict.fromkeys("ABC", 1.0), cap=0.3)


@pytest.mark.parametrize("cap", [0.0, -0.5, 1.5, math.nan])
def test_market_cap_rejects_a_bad_cap(cap: float) -> None:
    with pytest.raises(AllocationError, match=r"cap must be in \(0, 1\]"):
        market_cap({"A": 1.0}, {"A": 1.0}, cap=cap)


def test_market_cap_cap_not_binding_changes_nothing() -> None:
    prices = {"BTC": 3.0, "ETH": 1.0}
    supply = {"BTC": 1.0, "ETH": 1.0}
    assert market_cap(prices, supply, cap=0.9) == pytest.approx(market_cap(prices, supply), abs=1e-15)


def test_market_cap_with_a_quote_sleeve_and_cap_on_final_weight() -> None:
    prices = {"BTC": 1.0, "ETH": 1.0, "SOL": 1.0, "USDT": 1.0}
    supply = {"BTC": 80.0, "ETH": 15.0, "SOL": 5.0}
    w = market_cap(prices, supply, cap=0.4, quote="USDT", quote_weight=0.2)
    # coins hold 0.8: BTC 0.64 -> 0.4; ETH and SOL share 0.4 by 15:5.
    assert w == pytest.approx({"BTC": 0.4, "ETH": 0.3, "SOL": 0.1, "USDT": 0.2}, abs=1e-12)
    assert_valid(w)


def test_market_cap_skips_the_quote_price() -> None:
    w = market_cap({"BTC": 2.0, "USDT": 1.0}, {"BTC": 5.0}, quote="USDT")
    assert w == {"BTC": 1.0}


def test_market_cap_missing_price_or_supply_names_the_coin() -> None:
    with pytest.raises(AllocationError, match=r"no price for SOL; no circulating supply for ETH"):
        market_cap({"BTC": 1.0, "ETH": 2.0}, {"BTC": 1.0, "SOL": 3.0})


@pytest.mark.parametrize(("price", "supply"), [(0.0, 1.0), (1.0, -1.0), (math.nan, 1.0), (1.0, math.inf)])
def test_market_cap_rejects_non_positive_inputs(price: float, supply: float) -> None:
    with pytest.raises(AllocationError, match=r"ETH \(price"):
        market_cap({"BTC": 1.0, "ETH": price}, {"BTC": 1.0, "ETH": supply})


def test_market_cap_needs_coins() -> None:
    with pytest.raises(AllocationError, match="at least one coin"):
        market_cap({}, {})


# core-satellite


def test_core_satellite_equal_satellites() -> None:
    w = core_satellite("BTC", 0.6, ["ETH", "SOL"])
    assert w == pytest.approx({"BTC": 0.6, "ETH": 0.2, "SOL": 0.2}, abs=1e-15)
    assert_valid(w)


def test_core_satellite_weighted_satellites_with_a_stablecoin_core() -> None:
    w = core_satellite("USDT", 0.5, ["BTC", "ETH"], {"BTC": 3.0, "ETH": 1.0})
    assert w == pytest.approx({"USDT": 0.5, "BTC": 0.375, "ETH": 0.125}, abs=1e-15)
    assert_valid(w)


@pytest.mark.parametrize("cw", [0.0, 1.0, -0.2, 1.2, math.nan])
def test_core_satellite_core_weight_strictly_inside(cw: float) -> None:
    with pytest.raises(AllocationError, match="strictly between 0 and 1"):
        core_satellite("BTC", cw, ["ETH"])


def test_core_satellite_errors() -> None:
    with pytest.raises(AllocationError, match="at least one satellite"):
        core_satellite("BTC", 0.5, [])
    with pytest.raises(AllocationError, match="BTC is named twice"):
        core_satellite("BTC", 0.5, ["BTC", "ETH"])
    with pytest.raises(AllocationError, match="missing SOL; not satellites: DOGE"):
        core_satellite("BTC", 0.5, ["ETH", "SOL"], {"ETH": 1.0, "DOGE": 1.0})
    with pytest.raises(AllocationError, match=r"ETH=0\.0"):
        core_satellite("BTC", 0.5, ["ETH", "SOL"], {"ETH": 0.0, "SOL": 1.0})


# supply file


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "supply.csv"
    p.write_text(text, encoding="utf-8")
    return p


def test_read_supply_file(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "# supplies on 2024-06-01\n\ncoin,circulating_supply\nBTC,19700000\n"
        "  ETH , 1.201e8   # trailing comment\n# SOL,1\nSOL,460_000_000\n",
    )
    assert read_supply_file(p) == {"BTC": 19_700_000.0, "ETH": 120_100_000.0, "SOL": 460_000_000.0}
    assert read_supply_file(str(p)) == read_supply_file(p)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("coin,supply\nBTC,1\n", r":1: expected the header"),
        ("# only a comment\n", r"no header"),
        ("coin,circulating_supply\n", r"no supply rows"),
        ("coin,circulating_supply\nBTC,1\nETH\n", r":3: expected 2 fields"),
        ("coin,circulating_supply\nBTC,1,2\n", r":2: expected 2 fields"),
        ("coin,circulating_supply\nBTC,lots\n", r":2: supply of BTC is not a number: 'lots'"),
        ("coin,circulating_supply\nBTC,0\n", r":2: supply of BTC must be finite and > 0"),
        ("coin,circulating_supply\nBTC,nan\n", r":2: supply of BTC must be finite and > 0"),
        ("coin,circulating_supply\n,5\n", r":2: empty coin name"),
        ("#x\ncoin,circulating_supply\nBTC,1\nBTC,2\n", r":4: BTC is listed twice"),
    ],
)
def test_read_supply_file_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        read_supply_file(write(tmp_path, text))


def test_read_supply_file_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AllocationError, match="cannot read supply file"):
        read_supply_file(tmp_path / "absent.csv")


def test_supply_file_feeds_market_cap(tmp_path: Path) -> None:
    supply = read_supply_file(write(tmp_path, "coin,circulating_supply\nBTC,10\nETH,100\n"))
    assert market_cap({"BTC": 30.0, "ETH": 1.0}, supply) == pytest.approx({"BTC": 0.75, "ETH": 0.25})


def test_market_cap_with_an_explicit_basket_ignores_other_entries() -> None:
    prices = {"BTC": 2.0, "ETH": 1.0, "DOGE": 0.1, "USDT": 1.0}
    supply = {"BTC": 10.0, "ETH": 60.0, "XRP": 5.0, "USDT": 20.0}
    assert market_cap(prices, supply, coins=["ETH", "BTC"]) == pytest.approx({"ETH": 0.75, "BTC": 0.25})
    # A stablecoin may be a market-cap member of the basket.
    w = market_cap(prices, supply, coins=["BTC", "USDT"], quote="USDT")
    assert w == pytest.approx({"BTC": 0.5, "USDT": 0.5})
    with pytest.raises(AllocationError, match="no price for XRP"):
        market_cap(prices, supply, coins=["BTC", "XRP"])
    with pytest.raises(AllocationError, match="USDT is both"):
        market_cap(prices, supply, coins=["BTC", "USDT"], quote="USDT", quote_weight=0.1)
