"""Every path decides alike: columnar replay == per-tick engine (box-filtered) == plain reference."""
from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.clock import ReplayClock
from engine.columns import TickColumns
from engine.engine import Engine
from engine.replay import ColumnarReplay
from engine.runner import ListSink, PaperExecutor, run_per_tick
from engine.spec import PortfolioSpec
from engine.types import SymbolRules
from tests.builders import SEC, T0


class ReferenceEngine(Engine):
    """The plain per-tick evaluation: every touched portfolio is checked at every group end."""

    def on_tick(self, tick):
        return self.on_ticks([tick])

    def _evaluate_symbols(self, changed: Iterable[int]) -> None:
        seen = {}
        mids = self.book.mid
        for i in changed:
            for rt in self.by_symbol[i]:
                rt.portfolio.on_price(rt.coin_of_symbol[i], mids[i])
                seen[rt.spec.name] = rt
        now = self.clock.now_ns()
        for rt in seen.values():
            self.evaluate(rt, now)


def random_market(seed: int, coins: list[str], n: int, step_ns: int, vol: float, dup: float, bad: float) -> TickColumns:
    rng = np.random.default_rng(seed)
    k = len(coins)
    start = rng.uniform(1, 1000, k)
    sym = rng.integers(0, k, n).astype(np.int32)
    shocks = rng.normal(0, vol, n)
    logp = np.log(start).copy()
    mids = np.empty(n)
    for x in range(n):
        logp[sym[x]] += shocks[x]
        mids[x] = np.exp(logp[sym[x]])
    mids = np.round(mids, 6)
    gaps = np.where(rng.random(n) < dup, 0, rng.integers(1, 3, n) * step_ns)
    ts = T0 + np.cumsum(gaps).astype(np.int64)
    spread = mids * 0.0005
    bid, ask = mids - spread, mids + spread
    if bad > 0:
        b = rng.random(n) < bad
        kinds = rng.integers(0, 3, n)
        bid = np.where(b & (kinds == 0), np.nan, bid)
        ask = np.where(b & (kinds == 1), bid * 0.99, ask)  # crossed
        bid = np.where(b & (kinds == 2), -1.0, bid)
    return TickColumns(tuple(f"{c}-USDT" for c in coins), ts, ts.copy(), sym, bid, ask)


def hourly(ts: int) -> int:
    return (ts // (3600 * SEC) + 1) * 3600 * SEC


def run_all(cols: TickColumns, specs: list[PortfolioSpec], outlier: float, stale_ns: int):
    results = []
    for kind in ("columnar", "per_tick", "reference"):
        clock = ReplayClock(T0)
        cls = ReferenceEngine if kind == "reference" else Engine
        engine = cls(clock, specs, outlier_fraction=outlier, stale_ns=stale_ns)
        sink = ListSink()
        ex = PaperExecutor(engine, sink)
        if kind == "columnar":
            ColumnarReplay(engine, clock, cols, ex.execute).run()
        else:
            run_per_tick(engine, clock, cols.ticks(), ex)
        holdings = {n: dict(rt.portfolio.holdings) for n, rt in engine.runtimes.items()}
        results.append((kind, sink, holdings, dict(engine.book.rejected)))
    return results


@st.composite
def scenario(draw):
    ncoins = draw(st.integers(2, 4))
    coins = ["BTC", "ETH", "SOL", "XRP"][:ncoins]
    raw = [draw(st.integers(1, 10)) for _ in coins]
    sleeve = draw(st.booleans())
    if sleeve:
        raw.append(draw(st.integers(1, 5)))
    names = coins + (["USDT"] if sleeve else [])
    total = sum(raw)
    targets = {c: r / total for c, r in zip(names, raw, strict=True)}
    fix = 1.0 - sum(targets.values())
    targets[names[0]] += fix
    mode = draw(st.sampled_from(["threshold", "threshold", "hybrid", "calendar", "observe"]))
    thr = draw(st.sampled_from([0.01, 0.02, 0.05, 0.1]))
    spec = PortfolioSpec(
        name="p",
        quote="USDT",
        targets=targets,
        thresholds={a: thr * (targets[a] if draw(st.booleans()) else 1.0) for a in targets},
        mode=mode,
        debounce_ns=draw(st.sampled_from([0, 0, 2 * SEC, 30 * SEC])),
        window_ns=draw(st.sampled_from([0, 10 * SEC, 300 * SEC])),
        schedule=hourly if mode in ("calendar", "hybrid") else None,
        min_deviation=draw(st.sampled_from([0.0, 0.01, 0.03])),
        fee_rate=Decimal(draw(st.sampled_from(["0", "0.001"]))),
        rules={f"{c}-USDT": SymbolRules(Decimal("0.0001"), Decimal(draw(st.sampled_from(["0", "5"]))))
               for c in coins},
        capital=Decimal(draw(st.sampled_from(["1000", "10000"]))),
    )
    cols = random_market(draw(st.integers(0, 10_000)), coins, draw(st.integers(50, 1500)),
                         draw(st.sampled_from([SEC // 10, SEC, 20 * SEC])), draw(st.sampled_from([0.002, 0.01, 0.03])),
                         draw(st.sampled_from([0.0, 0.3])), draw(st.sampled_from([0.0, 0.02])))
    outlier = draw(st.sampled_from([0.0, 0.0, 0.05]))
    stale = draw(st.sampled_from([0, 0, 30 * SEC]))
    return cols, [spec], outlier, stale


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_columnar_per_tick_and_reference_decide_alike(case):
    cols, specs, outlier, stale = case
    (_, a, ha, ra), (_, b, hb, rb), (_, c, hc, rc) = run_all(cols, specs, outlier, stale)
    assert b.intents == c.intents
    assert a.intents == c.intents
    assert a.fills == c.fills == b.fills
    assert ha == hb == hc
    assert ra == rb == rc
    for _, holdings in ha.items():
        assert all(q >= 0 for q in holdings.values())


def test_the_scenarios_do_trade():
    # guard against a vacuous equivalence: a volatile market with a tight band must produce intents
    cols = random_market(7, ["BTC", "ETH"], 2000, SEC, 0.01, 0.0, 0.0)
    spec = PortfolioSpec(name="p", quote="USDT", targets={"BTC": 0.5, "ETH": 0.5},
                         thresholds={"BTC": 0.02, "ETH": 0.02}, window_ns=10 * SEC)
    (_, a, _, _), (_, b, _, _), (_, c, _, _) = run_all(cols, [spec], 0.0, 0)
    assert len(c.intents) > 5
    assert a.intents == b.intents == c.intents
