"""The engine end to end on hand-made ticks: start, threshold, debounce, window, calendar, observe."""
from __future__ import annotations

from decimal import Decimal

from engine.spec import PortfolioSpec
from engine.types import Reason, Side, Tick
from tests.builders import SEC, T0, make_engine, make_spec, make_tick


def feed(engine, clock, executor, ticks):
    """Group by time, advance, execute: the plain replay loop."""
    groups = {}
    for t in ticks:
        groups.setdefault(t.ts_recv_ns, []).append(t)
    for ts in sorted(groups):
        clock.advance_to(ts)
        executor.execute(engine.take_intents())
        executor.execute(engine.on_ticks(groups[ts]))


def test_start_buys_into_the_targets_at_the_first_full_set_of_prices():
    engine, clock, sink, ex = make_engine(make_spec(capital=Decimal(10000)))
    feed(engine, clock, ex, [make_tick("BTC-USDT", 50_000, T0)])
    assert sink.intents == []  # ETH has no price yet
    feed(engine, clock, ex, [make_tick("ETH-USDT", 2_000, T0 + SEC)])
    [start] = sink.intents
    assert start.reason is Reason.START
    h = engine.runtimes["core"].portfolio.holdings
    assert h["BTC"] == Decimal("0.1") and h["ETH"] == Decimal("2.5") and h["USDT"] == 0
    assert engine.hodl_value("core") == 10_000


def test_xt_example_through_the_engine():
    engine, clock, sink, ex = make_engine(make_spec(threshold=0.04))
    feed(engine, clock, ex, [make_tick("BTC-USDT", 50_000, T0), make_tick("ETH-USDT", 2_000, T0)])
    # after the window, ETH rises 20%: ETH 6,000, BTC 5,000 (ETH 54.5%, 4.5 points over)
    feed(engine, clock, ex, [make_tick("ETH-USDT", 2_400, T0 + 400 * SEC)])
    rebalance = sink.intents[-1]
    assert rebalance.reason is Reason.THRESHOLD
    legs = {leg.symbol: leg for leg in rebalance.legs}
    assert legs["ETH-USDT"].side is Side.SELL and legs["ETH-USDT"].notional.quantize(Decimal("0.01")) == Decimal("500.00")
    assert legs["BTC-USDT"].side is Side.BUY and legs["BTC-USDT"].notional.quantize(Decimal("0.01")) == Decimal("500.00")
    p = engine.runtimes["core"].portfolio
    values = p.deviations()
    assert abs(values["BTC"]) < 1e-6 and abs(values["ETH"]) < 1e-6


def test_no_two_intents_inside_one_window_and_a_recheck_when_it_closes_without_a_tick():
    engine, clock, sink, ex = make_engine(make_spec(threshold=0.05, window_ns=300 * SEC))
    feed(engine, clock, ex, [make_tick("BTC-USDT", 100, T0), make_tick("ETH-USDT", 100, T0)])
    assert len(sink.intents) == 1  # start; the window runs to T0 + 300 s
    feed(engine, clock, ex, [make_tick("BTC-USDT", 150, T0 + 10 * SEC)])  # breach inside the window
    assert len(sink.intents) == 1
    clock.advance_to(T0 + 300 * SEC)  # the window closes; no tick arrives
    ex.execute(engine.take_intents())
    assert len(sink.intents) == 2
    assert sink.intents[1].reason is Reason.THRESHOLD and sink.intents[1].ts_ns == T0 + 300 * SEC


def test_debounce_ignores_a_single_outlier_tick():
    engine, clock, sink, ex = make_engine(make_spec(debounce_ns=30 * SEC, window_ns=0))
    feed(engine, clock, ex, [make_tick("BTC-USDT", 100, T0), make_tick("ETH-USDT", 100, T0)])
    feed(engine, clock, ex, [make_tick("BTC-USDT", 150, T0 + 10 * SEC)])
    feed(engine, clock, ex, [make_tick("BTC-USDT", 100, T0 + 20 * SEC)])
    clock.advance_to(T0 + 60 * SEC)
    ex.execute(engine.take_intents())
    assert [i.reason for i in sink.intents] == [Reason.START]
    feed(engine, clock, ex, [make_tick("BTC-USDT", 150, T0 + 100 * SEC)])
    clock.advance_to(T0 + 130 * SEC)
    ex.execute(engine.take_intents())
    assert [i.reason for i in sink.intents] == [Reason.START, Reason.THRESHOLD]
    assert sink.intents[1].ts_ns == T0 + 130 * SEC


def hourly(ts):
    return (ts // (3600 * SEC) + 1) * 3600 * SEC


def test_calendar_rebalances_at_utc_boundaries_only_above_the_minimum_deviation():
    spec = make_spec(mode="calendar", schedule=hourly, min_deviation=0.03, window_ns=0)
    engine, clock, sink, ex = make_engine(spec)
    feed(engine, clock, ex, [make_tick("BTC-USDT", 100, T0), make_tick("ETH-USDT", 100, T0)])
    feed(engine, clock, ex, [make_tick("BTC-USDT", 110, T0 + 60 * SEC)])  # 2.4 points off: under 3%
    clock.advance_to(T0 + 3600 * SEC)
    ex.execute(engine.take_intents())
    assert [i.reason for i in sink.intents] == [Reason.START]
    feed(engine, clock, ex, [make_tick("BTC-USDT", 140, T0 + 3700 * SEC)])  # far off, but between boundaries
    assert len(sink.intents) == 1
    clock.advance_to(T0 + 7200 * SEC)
    ex.execute(engine.take_intents())
    assert sink.intents[-1].reason is Reason.CALENDAR and sink.intents[-1].ts_ns == T0 + 7200 * SEC


def test_observe_mode_plans_but_never_trades():
    engine, clock, sink, ex = make_engine(make_spec(mode="observe", window_ns=60 * SEC))
    feed(engine, clock, ex, [make_tick("BTC-USDT", 100, T0), make_tick("ETH-USDT", 100, T0)])
    before = dict(engine.runtimes["core"].portfolio.holdings)
    feed(engine, clock, ex, [make_tick("BTC-USDT", 200, T0 + 100 * SEC)])
    assert sink.intents[-1].observe and sink.intents[-1].reason is Reason.THRESHOLD
    assert engine.runtimes["core"].portfolio.holdings == before
    assert len([f for f in sink.fills if f[1].fee != 0]) == 0


def test_stale_prices_block_a_rebalance():
    engine, clock, sink, ex = make_engine(make_spec(window_ns=0), stale_ns=30 * SEC)
    feed(engine, clock, ex, [make_tick("BTC-USDT", 100, T0), make_tick("ETH-USDT", 100, T0)])
    feed(engine, clock, ex, [make_tick("BTC-USDT", 150, T0 + 100 * SEC)])  # ETH last seen 100 s ago
    assert len(sink.intents) == 1
    feed(engine, clock, ex, [make_tick("ETH-USDT", 100, T0 + 101 * SEC)])  # fresh again, still breached
    assert sink.intents[-1].reason is Reason.THRESHOLD


def test_pause_stops_firing_and_resume_rechecks_at_once():
    engine, clock, sink, ex = make_engine(make_spec(window_ns=0))
    feed(engine, clock, ex, [make_tick("BTC-USDT", 100, T0), make_tick("ETH-USDT", 100, T0)])
    engine.pause("core")
    feed(engine, clock, ex, [make_tick("BTC-USDT", 150, T0 + 10 * SEC)])
    assert len(sink.intents) == 1
    assert engine.snapshot("core").trigger_state == "paused"
    engine.resume("core")
    ex.execute(engine.take_intents())
    assert sink.intents[-1].reason is Reason.THRESHOLD


def test_ticks_sharing_a_timestamp_are_evaluated_once():
    engine, clock, sink, ex = make_engine(make_spec(window_ns=0))
    feed(engine, clock, ex, [make_tick("BTC-USDT", 100, T0), make_tick("ETH-USDT", 100, T0)])
    # BTC jumps and ETH follows at the same instant: the basket never left its band
    feed(engine, clock, ex, [make_tick("BTC-USDT", 150, T0 + 5 * SEC), make_tick("ETH-USDT", 150, T0 + 5 * SEC)])
    assert len(sink.intents) == 1


def test_terminate_sells_everything_to_the_quote():
    engine, clock, _sink, ex = make_engine(make_spec(fee_rate="0.001"))
    feed(engine, clock, ex, [make_tick("BTC-USDT", 100, T0), make_tick("ETH-USDT", 100, T0)])
    intent = engine.request_rebalance("core", Reason.TERMINATE)
    ex.execute(engine.take_intents())
    assert intent is not None and all(leg.side is Side.SELL for leg in intent.legs)
    h = engine.runtimes["core"].portfolio.holdings
    assert h["BTC"] < Decimal("0.0001") and h["ETH"] < Decimal("0.0001") and h["USDT"] > Decimal("9970")


def test_value_changes_only_by_price_moves_and_fees():
    engine, clock, sink, ex = make_engine(make_spec(fee_rate="0.001", window_ns=0))
    feed(engine, clock, ex, [make_tick("BTC-USDT", 100, T0), make_tick("ETH-USDT", 100, T0)])
    rt = engine.runtimes["core"]
    held = dict(rt.portfolio.holdings)
    fees_before = rt.fees_paid
    feed(engine, clock, ex, [make_tick("BTC-USDT", 150, T0 + SEC)])
    assert sink.intents[-1].reason is Reason.THRESHOLD
    at_new_prices = held["BTC"] * 150 + held["ETH"] * 100 + held["USDT"]
    fees = rt.fees_paid - fees_before
    assert fees > 0
    after = rt.portfolio.holdings["BTC"] * 150 + rt.portfolio.holdings["ETH"] * 100 + rt.portfolio.holdings["USDT"]
    assert after == at_new_prices - fees  # exact: fills at the mid, no spread


def test_a_portfolio_adopted_from_holdings_does_not_buy_in():
    spec = PortfolioSpec(name="held", quote="USDT", targets={"BTC": 0.5, "ETH": 0.5},
                         thresholds={"BTC": 0.05, "ETH": 0.05}, start="holdings",
                         holdings={"BTC": Decimal(1), "ETH": Decimal(1), "USDT": Decimal(0)}, fee_rate=Decimal(0))
    engine, clock, sink, ex = make_engine(spec)
    feed(engine, clock, ex, [make_tick("BTC-USDT", 100, T0), make_tick("ETH-USDT", 100, T0)])
    assert sink.intents == []
    feed(engine, clock, ex, [Tick("BTC-USDT", 130, 130, T0 + SEC, T0 + SEC)])
    assert sink.intents[0].reason is Reason.THRESHOLD
