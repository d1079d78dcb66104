"""Real Binance candles through `keel backtest`'s engine against an independent float re-computation."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from engine.clock import ReplayClock
from engine.columns import TickColumns
from engine.engine import Engine
from engine.replay import ColumnarReplay
from engine.runner import ListSink, PaperExecutor
from engine.spec import PortfolioSpec
from engine.types import Reason
from feeds.files import read_candles

pytestmark = pytest.mark.data
FEE = 0.001


def load(shared_data: Path, coins: list[str], suffix: str) -> TickColumns:
    parts = [read_candles(shared_data / "candles" / f"binance_{c}USDT_{suffix}.csv.gz", f"{c}-USDT")[0] for c in coins]
    return TickColumns.merge(parts)


def independent(cols: TickColumns, targets: dict[str, float], thr: float, window_ns: int, capital: float):
    """The same rule written plainly: check every candle close, trade to the centre, fees in the quote."""
    coins = list(targets)
    price: dict[str, float] = {}
    q = dict.fromkeys(coins, 0.0)
    cash = capital
    started = False
    until = -1
    times = []
    ts_all, sym, mid = cols.ts_ns, cols.sym, cols.mid
    ends = np.flatnonzero(np.append(ts_all[1:] != ts_all[:-1], True))
    start = 0
    for end in ends.tolist():
        for k in range(start, end + 1):
            price[cols.symbols[sym[k]].split("-")[0]] = float(mid[k])
        start = end + 1
        ts = int(ts_all[end])
        if len(price) < len(coins):
            continue
        value = sum(q[c] * price[c] for c in coins) + cash
        if not started:
            for c in coins:
                q[c] = targets[c] * value / (1 + FEE) / price[c]
            cash = value - sum(q[c] * price[c] * (1 + FEE) for c in coins)
            started, until = True, ts + window_ns
            times.append(ts)
            continue
        if ts < until:
            continue
        if not any(abs(q[c] * price[c] / value - targets[c]) >= thr for c in coins):
            continue
        deltas = {c: targets[c] * value - q[c] * price[c] for c in coins}
        for c, d in deltas.items():
            if d < 0:
                q[c] += d / price[c]
                cash += -d * (1 - FEE)
        want = sum(d for d in deltas.values() if d > 0) * (1 + FEE)
        scale = min(1.0, cash / want) if want > 0 else 0.0
        for c, d in deltas.items():
            if d > 0:
                q[c] += d * scale / price[c]
                cash -= d * scale * (1 + FEE)
        until = ts + window_ns
        times.append(ts)
    value = sum(q[c] * price[c] for c in coins) + cash
    return times, value


@pytest.mark.parametrize(("coins", "suffix", "thr"), [
    (["BTC", "ETH"], "1h", 0.02),
    (["BTC", "ETH", "SOL", "XRP"], "1h_2024", 0.05),
    (["BTC", "ETH", "SOL", "LINK"], "15m", 0.03),
])
def test_engine_matches_an_independent_recomputation(shared_data: Path, coins: list[str], suffix: str, thr: float):
    cols = load(shared_data, coins, suffix)
    targets = {c: 1 / len(coins) for c in coins}
    targets[coins[0]] += 1.0 - sum(targets.values())
    window = 300 * 1_000_000_000
    spec = PortfolioSpec(name="real", quote="USDT", targets=targets, thresholds=dict.fromkeys(coins, thr),
                         window_ns=window, fee_rate=Decimal(str(FEE)), capital=Decimal(10_000))
    clock = ReplayClock(int(cols.ts_ns[0]))
    engine = Engine(clock, [spec])
    sink = ListSink()
    ColumnarReplay(engine, clock, cols, PaperExecutor(engine, sink).execute).run()
    times, value = independent(cols, targets, thr, window, 10_000.0)
    assert [i.ts_ns for i in sink.intents] == times
    assert sink.intents[0].reason is Reason.START
    assert len(times) > 5, "the period should need rebalancing"
    assert engine.runtimes["real"].portfolio.value() == pytest.approx(value, rel=1e-6)  # step rounding (1e-8) and exact fees
    print(f"\n{'/'.join(coins)} {suffix}: {len(cols)} candles, {len(times) - 1} rebalances, final {value:,.2f} USDT")
