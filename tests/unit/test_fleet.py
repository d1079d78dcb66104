"""Fleet: the worked examples, windows, waiting for prices, fills, validation, and the band index."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from engine.clock import TimeWentBackwards
from engine.fleet import Fleet
from engine.fleet_index import BandIndex
from engine.fleet_load import FleetPortfolio
from engine.fleet_math import execute_at_mid
from engine.portfolio import InvariantError
from engine.types import Fill, Side
from ops.worker_wire import intent_body, parse_intent, partition_of, read_portfolios, write_portfolios
from tests.builders import SEC, T0, make_engine, make_spec, make_tick

SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]


def pair(name: str = "p0", threshold: float = 0.04, window_secs: int = 300, **holdings: float) -> FleetPortfolio:
    """A 50/50 BTC/ETH portfolio."""
    held = holdings or {"BTC": 1.0, "ETH": 1.0}
    return FleetPortfolio(name, {"BTC": 0.5, "ETH": 0.5}, {"BTC": threshold, "ETH": threshold}, held,
                          window_secs * SEC)


def make_fleet(*portfolios: FleetPortfolio, prices: list[float] | None = None, fee: str = "0") -> Fleet:
    seed = np.array(prices) if prices is not None else None
    return Fleet.load(list(portfolios), SYMBOLS, fee_rate=Decimal(fee), prices=seed, now_ns=T0)


def test_bitget_worked_example_sells_5_usdt_of_btc_and_buys_5_of_eth() -> None:
    fleet = make_fleet(pair(), prices=[50.0, 50.0, 1.0])
    assert fleet.on_tick(0, 58.0, 58.0, T0 + SEC) == []  # 58/108 = 0.537: inside the 4% band
    (intent,) = fleet.on_tick(0, 60.0, 60.0, T0 + 2 * SEC)
    assert intent.portfolio == "p0" and intent.ts_ns == T0 + 2 * SEC
    assert [(leg.symbol, leg.side, round(leg.notional, 2)) for leg in intent.legs] == [
        ("BTC-USDT", Side.SELL, Decimal("5.00")), ("ETH-USDT", Side.BUY, Decimal("5.00"))]
    assert fleet.state(0) == "cooldown"


def test_first_intents_equal_the_engines() -> None:
    engine, clock, _, _ = make_engine(make_spec({"BTC": 0.5, "ETH": 0.5}, threshold=0.04, start="holdings",
                                                holdings={"BTC": Decimal(1), "ETH": Decimal(1)}))
    fleet = make_fleet(pair("core"))
    path = [(0, 55.0), (1, 45.0), (0, 61.0), (1, 52.0)]
    clock.advance_to(T0)
    want = engine.on_ticks([make_tick("BTC-USDT", 50.0, T0), make_tick("ETH-USDT", 50.0, T0)])
    got = fleet.on_tick(0, 50.0, 50.0, T0) + fleet.on_tick(1, 50.0, 50.0, T0)
    for x, (s, px) in enumerate(path):
        ts = T0 + (x + 1) * SEC
        clock.advance_to(ts)
        want += engine.on_tick(make_tick(SYMBOLS[s], px, ts))
        got += fleet.on_tick(s, px, px, ts)
    assert len(got) == 1
    assert [(i.id, i.ts_ns, i.legs, i.drift, i.weights) for i in got] == [
        (i.id, i.ts_ns, i.legs, i.drift, i.weights) for i in want]


def test_a_breach_inside_the_window_fires_when_the_window_ends_even_without_a_tick() -> None:
    fleet = make_fleet(pair(window_secs=60), prices=[50.0, 50.0, 1.0])
    (first,) = fleet.on_tick(0, 60.0, 60.0, T0 + SEC)
    assert fleet.on_tick(0, 80.0, 80.0, T0 + 2 * SEC) == []  # breached, but inside the window
    (second,) = fleet.advance_to(T0 + 120 * SEC)
    assert second.ts_ns == T0 + 61 * SEC and second.id != first.id
    assert fleet.advance_to(T0 + 500 * SEC) != []  # nothing was executed, so it fires again at 121 s


def test_waits_for_every_price_then_checks_once_complete() -> None:
    fleet = make_fleet(pair(BTC=1.0, ETH=2.0))
    assert fleet.on_tick(0, 50.0, 50.0, T0 + SEC) == []
    assert fleet.on_tick(2, 3.0, 3.0, T0 + 2 * SEC) == []  # SOL is not held
    (intent,) = fleet.on_tick(1, 50.0, 50.0, T0 + 3 * SEC)  # 1/3 BTC against 1/2
    assert intent.ts_ns == T0 + 3 * SEC


def test_bad_ticks_are_dropped_and_time_never_goes_back() -> None:
    fleet = make_fleet(pair(), prices=[50.0, 50.0, 1.0])
    assert fleet.on_tick(0, 70.0, 60.0, T0 + SEC) == []  # crossed
    assert fleet.on_tick(0, 0.0, 60.0, T0 + SEC) == []
    assert fleet.on_tick(0, float("nan"), 60.0, T0 + SEC) == []
    assert fleet.rejected == 3
    with pytest.raises(TimeWentBackwards):
        fleet.on_tick(0, 50.0, 50.0, T0)


def test_a_fill_while_idle_is_checked_at_the_next_tick_of_any_symbol() -> None:
    fleet = make_fleet(pair(), prices=[50.0, 50.0, 1.0])
    deposit_like = Fill("t1", "manual", "BTC-USDT", Side.BUY, Decimal("0.5"), Decimal(0), Decimal(0), "USDT", T0)
    fleet.apply_fill(0, deposit_like)
    assert fleet.pending_checks() == 1
    (intent,) = fleet.on_tick(2, 3.0, 3.0, T0 + SEC)  # SOL: not even held
    assert intent.legs[0].side is Side.SELL and intent.legs[0].symbol == "BTC-USDT"


def test_paper_execution_rebalances_and_a_rerun_gives_the_same_fills() -> None:
    fleet = make_fleet(pair(), prices=[50.0, 50.0, 1.0], fee="0.001")
    (intent,) = fleet.on_tick(0, 60.0, 60.0, T0 + SEC)
    before = fleet.holdings(0)
    fills = execute_at_mid(intent, before, "USDT", Decimal("0.001"), {})
    assert fills == execute_at_mid(intent, before, "USDT", Decimal("0.001"), {})
    assert len({f.trade_id for f in fills}) == len(fills) == 2
    for f in fills:
        fleet.apply_fill(0, f)
    after = fleet.holdings(0)
    assert after["BTC"] < before["BTC"] and after["ETH"] > before["ETH"] and after["USDT"] >= 0


def test_a_fill_that_would_make_a_holding_negative_raises() -> None:
    fleet = make_fleet(pair(), prices=[50.0, 50.0, 1.0])
    oversell = Fill("t1", "x", "BTC-USDT", Side.SELL, Decimal(2), Decimal(50), Decimal(0), "USDT", T0)
    with pytest.raises(InvariantError):
        fleet.apply_fill(0, oversell)


def test_deactivated_portfolios_never_decide_and_reactivation_resumes_the_window() -> None:
    fleet = make_fleet(pair("a"), pair("b"), prices=[50.0, 50.0, 1.0])
    fleet.deactivate([1])
    (intent,) = fleet.on_tick(0, 60.0, 60.0, T0 + SEC)
    assert intent.portfolio == "a"
    assert fleet.activate([1], window_from_ns=[T0]) == []  # its window (from T0) is still open
    assert fleet.state(1) == "cooldown"
    (late,) = fleet.advance_to(T0 + 300 * SEC + 1)  # before a's window (from T0 + 1 s) ends
    assert late.portfolio == "b" and late.ts_ns == T0 + 300 * SEC


@pytest.mark.parametrize(
    ("targets", "thresholds", "message"),
    [
        ({"BTC": 0.5, "ETH": 0.4}, {"BTC": 0.05, "ETH": 0.05}, "sum to 1"),
        ({"BTC": 0.5, "ETH": 0.5}, {"BTC": 0.0, "ETH": 0.05}, "thresholds"),
        ({"BTC": 0.5, "USDT": 0.5}, {"BTC": 0.05}, "quote with a target"),
    ],
)
def test_bad_portfolios_are_refused_with_their_name(targets: dict[str, float], thresholds: dict[str, float],
                                                    message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fleet.load([FleetPortfolio("bad", targets, thresholds, {"BTC": 1.0})], SYMBOLS)


def test_from_arrays_refuses_a_zero_window_and_a_repeated_coin() -> None:
    ok = {"names": ["x"], "holdings": [[1.0, 1.0, 0.0]], "targets": [[0.5, 0.5, 0.0]],
          "thresholds": [[0.05, 0.05, np.inf]]}
    with pytest.raises(ValueError, match="window"):
        Fleet.from_arrays(SYMBOLS, coins=[[0, 1]], window_ns=0, **ok)
    with pytest.raises(ValueError, match="twice"):
        Fleet.from_arrays(SYMBOLS, coins=[[0, 0]], window_ns=SEC, **ok)


def test_band_index_finds_exactly_the_bands_a_price_leaves() -> None:
    index = BandIndex(1)
    ver = np.zeros(6, dtype=np.uint32)
    lo = np.array([90.0, 95.0, 99.0, 80.0, 97.0, 50.0])
    hi = np.array([110.0, 105.0, 101.0, 120.0, 98.0, 150.0])
    p = np.arange(6, dtype=np.int32)
    index.build(np.zeros(6, dtype=np.int32), p, ver.copy(), lo, hi)
    assert index.leaving(0, 100.0, ver).tolist() == [4]  # hi 98 < 100
    ver[4] += 1  # the caller re-checks what it gets: the old band is gone
    assert index.leaving(0, 100.0, ver).tolist() == []  # consumed
    ver[1] += 1  # portfolio 1 re-banded elsewhere: its old band is stale
    index.add(np.zeros(1, dtype=np.int32), np.array([1], dtype=np.int32), ver[[1]], np.array([99.5]),
              np.array([99.9]), ver)
    assert index.leaving(0, 96.0, ver).tolist() == [1, 2]  # new band of 1 (pending), and 2 (lo 99)
    ver[[1, 2]] += 1
    assert index.leaving(0, 130.0, ver).tolist() == [0, 3]
    ver[[0, 3]] += 1
    assert index.leaving(0, 40.0, ver).tolist() == [5]


def test_wire_round_trips_intents_and_portfolio_files(tmp_path: Path) -> None:
    fleet = make_fleet(pair(), prices=[50.0, 50.0, 1.0])
    (intent,) = fleet.on_tick(0, 60.0, 60.0, T0 + SEC)
    assert parse_intent(intent_body(intent)) == intent
    file = tmp_path / "p.jsonl"
    portfolios = [pair("a"), pair("b", threshold=0.07, window_secs=90)]
    write_portfolios(file, portfolios)
    assert read_portfolios(file) == portfolios


def test_partitions_are_a_stable_hash_of_the_name() -> None:
    assert (partition_of("pf000", 1024), partition_of("alice-core", 1024)) == (150, 262)  # blake2b, not hash()
    counts = np.bincount([partition_of(f"p{k}", 8) for k in range(8000)], minlength=8)
    assert counts.min() > 850  # about 1000 each
