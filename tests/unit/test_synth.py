"""The synthetic market: determinism, layout, spread, correlation, volatility, swing, validation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from feeds.synth import DEFAULT_START_PRICES, NS_PER_YEAR, OTHER_START_PRICE, synth_ticks, tick_decimals


def log_returns(cols, coin_index: int) -> np.ndarray:
    """Round-to-round log returns of one coin's mid."""
    mids = cols.mid[cols.sym == coin_index]
    return np.diff(np.log(mids))


def test_same_seed_gives_bit_identical_columns_and_other_seeds_differ() -> None:
    a = synth_ticks(["BTC", "ETH", "SOL"], n_ticks=3000, seed=11, swing=0.05)
    b = synth_ticks(["BTC", "ETH", "SOL"], n_ticks=3000, seed=11, swing=0.05)
    c = synth_ticks(["BTC", "ETH", "SOL"], n_ticks=3000, seed=12, swing=0.05)
    for name in ("ts_ns", "ts_event_ns", "sym", "bid", "ask"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes()
    assert a.symbols == b.symbols
    assert not np.array_equal(a.bid, c.bid)


def test_layout_is_round_robin_at_fixed_steps() -> None:
    cols = synth_ticks(["BTC", "ETH", "DOGE"], quote="USDC", n_ticks=10, seed=1, start_ns=5_000, step_ns=250)
    assert cols.symbols == ("BTC-USDC", "ETH-USDC", "DOGE-USDC")
    assert len(cols) == 10
    assert cols.sym.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert cols.ts_ns.tolist() == [5_000 + 250 * i for i in range(10)]
    assert np.array_equal(cols.ts_event_ns, cols.ts_ns)
    assert cols.sym.dtype == np.int32 and cols.ts_ns.dtype == np.int64 and cols.bid.dtype == np.float64


def test_first_prices_are_the_start_prices_and_defaults_apply() -> None:
    cols = synth_ticks(["BTC", "ETH", "XRP", "ZZZ", "LINK"], n_ticks=5, seed=3, start_prices={"LINK": 15.5})
    expected = [DEFAULT_START_PRICES["BTC"], DEFAULT_START_PRICES["ETH"], DEFAULT_START_PRICES["XRP"],
                OTHER_START_PRICE, 15.5]
    assert cols.mid.tolist() == pytest.approx(expected, rel=2e-4)


def test_spread_is_as_asked_up_to_the_tick_and_never_crossed() -> None:
    coins = ["BTC", "ETH", "SOL", "DOGE"]
    cols = synth_ticks(coins, n_ticks=40_000, seed=5, spread_bps=2.0, swing=0.1)
    spread_bps = (cols.ask - cols.bid) / cols.mid * 1e4
    tick_bps = np.array([10.0 ** -tick_decimals(DEFAULT_START_PRICES[c]) for c in coins])[cols.sym] / cols.mid * 1e4
    assert bool(np.all(spread_bps >= 2.0 - 1e-9))
    assert bool(np.all(spread_bps <= 2.0 + 2 * tick_bps + 1e-9))
    assert float(np.median(spread_bps[cols.sym == 0])) == pytest.approx(2.0, abs=0.01)
    assert bool(np.all(cols.bid > 0))


def test_prices_are_written_compactly_on_exchange_like_ticks() -> None:
    cols = synth_ticks(["BTC", "ETH", "SOL", "XRP", "DOGE", "LINK"], n_ticks=6000, seed=9, swing=0.05)
    reprs = [repr(v) for v in np.concatenate([cols.bid, cols.ask]).tolist()]
    assert max(len(r) for r in reprs) <= 8, max(reprs, key=len)
    assert [tick_decimals(p) for p in (42000.0, 2300.0, 0.6, 0.08, 1e-05)] == [2, 3, 6, 6, 9]


def test_increments_correlate_as_asked() -> None:
    cols = synth_ticks(["BTC", "ETH"], n_ticks=200_000, seed=21, corr=0.6)
    rho = np.corrcoef(log_returns(cols, 0), log_returns(cols, 1))[0, 1]
    assert rho == pytest.approx(0.6, abs=0.03)
    independent = synth_ticks(["BTC", "ETH"], n_ticks=200_000, seed=21, corr=0.0)
    assert abs(np.corrcoef(log_returns(independent, 0), log_returns(independent, 1))[0, 1]) < 0.03


def test_annualised_volatility_is_as_asked() -> None:
    step_ns = 60_000_000_000
    cols = synth_ticks(["BTC", "ETH"], n_ticks=100_000, seed=8, vol=0.8, step_ns=step_ns)
    per_round = log_returns(cols, 0).std()
    rounds_per_year = NS_PER_YEAR / (2 * step_ns)
    assert per_round * math.sqrt(rounds_per_year) == pytest.approx(0.8, rel=0.05)


def test_swing_moves_coins_against_each_other_on_its_period() -> None:
    period_ns = 1000 * 100_000_000
    cols = synth_ticks(["BTC", "ETH"], n_ticks=4000, seed=2, vol=0.0, swing=0.1, swing_period_ns=period_ns)
    log_btc = np.log(cols.mid[cols.sym == 0] / DEFAULT_START_PRICES["BTC"])
    log_eth = np.log(cols.mid[cols.sym == 1] / DEFAULT_START_PRICES["ETH"])
    assert float(log_btc.max() - log_btc.min()) == pytest.approx(0.2, abs=0.01)
    # phases half a turn apart: when one coin is at its top the other is at its bottom
    assert float(np.corrcoef(log_btc, log_eth)[0, 1]) < -0.99
    # one period later the price repeats (rounding aside)
    per_coin_ticks_in_period = period_ns // (2 * 100_000_000)
    assert log_btc[per_coin_ticks_in_period] == pytest.approx(log_btc[0], abs=1e-6)
    flat = synth_ticks(["BTC", "ETH"], n_ticks=4000, seed=2, vol=0.0)
    assert float(np.ptp(flat.mid[flat.sym == 0])) == 0.0


def test_a_million_ticks_are_generated() -> None:
    cols = synth_ticks(["BTC", "ETH", "SOL", "BNB"], n_ticks=1_000_000, seed=1, swing=0.05)
    assert len(cols) == 1_000_000
    assert bool(np.all(np.isfinite(cols.bid))) and bool(np.all(cols.bid < cols.ask))


@pytest.mark.parametrize(
    ("coins", "kwargs", "message"),
    [
        ([], {}, "at least one coin"),
        (["BTC", "BTC"], {}, "distinct"),
        (["BTC", "USDT"], {}, "quote currency"),
        (["BTC"], {"corr": 1.5}, "corr"),
        (["BTC"], {"n_ticks": -1}, "n_ticks"),
        (["BTC"], {"step_ns": 0}, "step_ns"),
        (["BTC"], {"vol": -0.1}, "vol"),
        (["BTC"], {"start_prices": {"BTC": 0.0}}, "start price of BTC"),
        (["BTC"], {"swing_period_ns": -5}, "swing_period_ns"),
        (["BT-C"], {}, "BASE-QUOTE"),
    ],
)
def test_bad_arguments_are_refused_by_name(coins: list[str], kwargs: dict, message: str) -> None:
    args = {"n_ticks": 10, "seed": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        synth_ticks(coins, **args)


def test_zero_ticks_give_empty_columns() -> None:
    cols = synth_ticks(["BTC"], n_ticks=0, seed=1)
    assert len(cols) == 0 and cols.symbols == ("BTC-USDT",)
