"""The planner: SPEC.md's worked examples to the cent, and its rules."""
from __future__ import annotations

from decimal import Decimal

from engine.planner import floor_step, plan_rebalance
from engine.types import Side, SymbolRules

D = Decimal
CENT = D("0.01")


def cents(x: Decimal) -> Decimal:
    return x.quantize(CENT)


def legs_by_symbol(plan):
    return {leg.symbol: leg for leg in plan.legs}


def test_xt_example_sells_500_of_eth_and_buys_500_of_btc():
    # 10,000 USDT split 50/50 at BTC 50,000 and ETH 1,666.67; ETH rises 20%: ETH 6,000, BTC 5,000.
    holdings = {"BTC": D("0.1"), "ETH": D("3"), "USDT": D(0)}
    prices = {"BTC": 50_000.0, "ETH": 2_000.0}
    plan = plan_rebalance(holdings, prices, {"BTC": 0.5, "ETH": 0.5}, "USDT")
    legs = legs_by_symbol(plan)
    assert legs["ETH-USDT"].side is Side.SELL and legs["ETH-USDT"].notional == D("500.0")
    assert legs["BTC-USDT"].side is Side.BUY and legs["BTC-USDT"].notional == D("500.0")
    assert [leg.side for leg in plan.legs] == [Side.SELL, Side.BUY]
    after = plan.expected_holdings
    assert after["BTC"] * D("50000.0") == D("5500.0")
    assert after["ETH"] * D("2000.0") == D("5500.0")
    assert after["USDT"] == 0


def test_bitget_example_sells_5_of_btc_and_buys_5_of_eth():
    # 100 USDT split 1:1; BTC rises to 60 while ETH stays 50.
    holdings = {"BTC": D("1"), "ETH": D("1"), "USDT": D(0)}
    plan = plan_rebalance(holdings, {"BTC": 60.0, "ETH": 50.0}, {"BTC": 0.5, "ETH": 0.5}, "USDT")
    legs = legs_by_symbol(plan)
    assert (legs["BTC-USDT"].side, cents(legs["BTC-USDT"].notional)) == (Side.SELL, D("5.00"))
    assert (legs["ETH-USDT"].side, cents(legs["ETH-USDT"].notional)) == (Side.BUY, D("5.00"))
    assert cents(plan.expected_holdings["BTC"] * 60) == D("55.00")
    assert cents(plan.expected_holdings["ETH"] * 50) == D("55.00")


def test_quantities_round_down_to_the_step():
    holdings = {"BTC": D("1"), "ETH": D("1"), "USDT": D(0)}
    rules = {"BTC-USDT": SymbolRules(D("0.01"), D(0)), "ETH-USDT": SymbolRules(D("0.001"), D(0))}
    plan = plan_rebalance(holdings, {"BTC": 61.0, "ETH": 50.0}, {"BTC": 0.5, "ETH": 0.5}, "USDT", rules=rules)
    legs = legs_by_symbol(plan)
    # sell 5.5/61 = 0.0901.. BTC -> 0.09; buy with 5.49 USDT -> 0.1098 ETH -> 0.109
    assert legs["BTC-USDT"].quantity == D("0.09")
    assert legs["ETH-USDT"].quantity == D("0.109")
    assert plan.expected_holdings["USDT"] >= 0


def test_buys_never_need_more_than_sells_and_free_quote_with_fees():
    holdings = {"BTC": D("1"), "ETH": D("1"), "USDT": D(0)}
    plan = plan_rebalance(holdings, {"BTC": 60.0, "ETH": 50.0}, {"BTC": 0.5, "ETH": 0.5}, "USDT",
                          fee_rate=D("0.001"))
    assert plan.expected_holdings["USDT"] >= 0
    buy = legs_by_symbol(plan)["ETH-USDT"]
    assert buy.notional * D("1.001") <= D("5") * D("0.999")


def test_a_leg_under_the_minimum_notional_is_dropped_and_buys_shrink_to_match():
    # BTC over by 5, ETH under by 2, SOL under by 3; BTC sell of 5 allowed, min notional 2.5 drops the ETH buy.
    holdings = {"BTC": D("55"), "ETH": D("23"), "SOL": D("22"), "USDT": D(0)}
    prices = {"BTC": 1.0, "ETH": 1.0, "SOL": 1.0}
    rules = {s: SymbolRules(D("0.0001"), D("2.5")) for s in ("BTC-USDT", "ETH-USDT", "SOL-USDT")}
    plan = plan_rebalance(holdings, prices, {"BTC": 0.5, "ETH": 0.25, "SOL": 0.25}, "USDT", rules=rules)
    legs = legs_by_symbol(plan)
    assert set(legs) == {"BTC-USDT", "SOL-USDT"}
    assert legs["SOL-USDT"].notional <= legs["BTC-USDT"].notional
    # the dropped ETH leg's budget went to SOL, up to SOL's own need of 3
    assert legs["SOL-USDT"].notional == D("3.0000")


def test_a_sell_under_the_minimum_leaves_the_buys_unfunded():
    holdings = {"BTC": D("51"), "ETH": D("49"), "USDT": D(0)}
    rules = {s: SymbolRules(D("0.0001"), D("5")) for s in ("BTC-USDT", "ETH-USDT")}
    plan = plan_rebalance(holdings, {"BTC": 1.0, "ETH": 1.0}, {"BTC": 0.5, "ETH": 0.5}, "USDT", rules=rules)
    assert plan.legs == ()


def test_never_sells_and_buys_the_same_asset_and_never_liquidates():
    holdings = {"BTC": D("1"), "ETH": D("10"), "SOL": D("100"), "USDT": D("50")}
    prices = {"BTC": 500.0, "ETH": 40.0, "SOL": 1.5}
    plan = plan_rebalance(holdings, prices, {"BTC": 0.4, "ETH": 0.4, "SOL": 0.2}, "USDT")
    sold = {leg.symbol for leg in plan.legs if leg.side is Side.SELL}
    bought = {leg.symbol for leg in plan.legs if leg.side is Side.BUY}
    assert not sold & bought
    assert all(plan.expected_holdings[c] > 0 for c in ("BTC", "ETH", "SOL"))


def test_stablecoin_sleeve_keeps_its_share_of_quote():
    holdings = {"BTC": D("1"), "USDT": D("100")}
    plan = plan_rebalance(holdings, {"BTC": 300.0}, {"BTC": 0.8, "USDT": 0.2}, "USDT")
    legs = legs_by_symbol(plan)
    # V = 400: BTC target 320 -> buy 20, USDT target 80
    assert cents(legs["BTC-USDT"].notional) == D("20.00")
    assert cents(plan.expected_holdings["USDT"]) == D("80.00")


def test_floor_step():
    assert floor_step(D("1.23456"), D("0.01")) == D("1.23")
    assert floor_step(D("-1"), D("0.01")) == 0
