"""Fleet == a plain loop that runs the canonical check (`Portfolio.breached`) for every portfolio on every tick."""
from __future__ import annotations

import heapq
import math
from decimal import Decimal
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import fleet_index
from engine.execution import fill_deltas, intent_id
from engine.fleet import Fleet
from engine.fleet_load import FleetPortfolio
from engine.fleet_math import add_exact, execute_at_mid
from engine.planner import dec, plan_rebalance
from engine.portfolio import Portfolio
from engine.types import Fill, Intent, Reason, SymbolRules
from tests.builders import SEC, T0

QUOTE = "USDT"
COINS = ("BTC", "ETH", "SOL", "XRP", "ADA", "DOT")


class ReferenceLoop:
    """Every tick: due window ends in (end, index) order, then the canonical check of every portfolio."""

    def __init__(self, portfolios: list[FleetPortfolio], symbols: list[str], fee_rate: Decimal,
                 rules: dict[str, SymbolRules], prices: list[float] | None) -> None:
        self.symbols = symbols
        self.mids = list(prices) if prices is not None else [math.nan] * len(symbols)
        index = {s: i for i, s in enumerate(symbols)}
        self.specs = portfolios
        self.ports = [Portfolio(p.name, QUOTE, p.targets, p.thresholds, index, self.mids) for p in portfolios]
        for port, spec in zip(self.ports, portfolios, strict=True):
            port.q = [float(spec.holdings.get(a, 0.0)) for a in port.assets]
        n = len(portfolios)
        self.cooling = [False] * n
        self.until = [0] * n
        self.seq = [0] * n
        self.heap: list[tuple[int, int]] = []
        self.fee_rate = fee_rate
        self.rules = rules

    def advance_to(self, ts: int) -> list[Intent]:
        out = []
        while self.heap and self.heap[0][0] <= ts:
            until, i = heapq.heappop(self.heap)
            self.cooling[i] = False
            out += self._check(i, until)
        return out

    def on_tick(self, s: int, bid: float, ask: float, ts: int) -> list[Intent]:
        out = self.advance_to(ts)
        if not (bid > 0.0 and ask >= bid and math.isfinite(ask)):
            return out
        self.mids[s] = (bid + ask) * 0.5
        for i in range(len(self.ports)):
            if not self.cooling[i]:
                out += self._check(i, ts)
        return out

    def _check(self, i: int, ts: int) -> list[Intent]:
        port = self.ports[i]
        if not port.priced() or not port.breached():
            return []
        self.cooling[i] = True
        self.until[i] = ts + self.specs[i].window_ns
        heapq.heappush(self.heap, (self.until[i], i))
        intent = self._intent(i, ts)
        return [intent] if intent is not None else []

    def _intent(self, i: int, ts: int) -> Intent | None:
        port = self.ports[i]
        prices = {c: self.mids[s] for c, s in zip(port.assets, port.sym, strict=True) if s >= 0}
        holdings = {a: dec(x) for a, x in zip(port.assets, port.q, strict=True)}
        targets = {port.assets[k]: port.targets[k] for k in port.members}
        plan = plan_rebalance(holdings, prices, targets, QUOTE, rules=self.rules, fee_rate=self.fee_rate)
        if not plan.legs:
            return None
        self.seq[i] += 1
        vals = [q * self.mids[s] if s >= 0 else q for q, s in zip(port.q, port.sym, strict=True)]
        total = sum(vals)
        return Intent(
            id=intent_id(port.name, self.seq[i], ts), portfolio=port.name, ts_ns=ts, reason=Reason.THRESHOLD,
            drift=port.drift(), prices={f"{c}-{QUOTE}": p for c, p in prices.items()},
            weights={a: v / total for a, v in zip(port.assets, vals, strict=True)}, legs=plan.legs,
            expected_residual_drift=plan.residual_drift, quote_reserve=plan.quote_reserve,
        )

    def holdings(self, i: int) -> dict[str, Decimal]:
        return {a: dec(x) for a, x in zip(self.ports[i].assets, self.ports[i].q, strict=True)}

    def apply_fill(self, i: int, fill: Fill, deltas: dict[str, Decimal]) -> None:
        port = self.ports[i]
        for asset, d in deltas.items():
            k = port.assets.index(asset)
            port.q[k] = add_exact(port.q[k], d, asset)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[FleetPortfolio], list[str], list[float]]:
    nsym = draw(st.integers(2, len(COINS)))
    coins = list(COINS[:nsym])
    start = [draw(st.sampled_from([0.5, 3.0, 40.0, 250.0, 1000.0, 30000.0])) for _ in coins]
    portfolios = []
    for n in range(draw(st.integers(1, 10))):
        held = draw(st.lists(st.sampled_from(coins), min_size=1, max_size=min(4, nsym), unique=True))
        with_quote = draw(st.booleans())
        raw = [draw(st.integers(1, 6)) for _ in range(len(held) + with_quote)]
        weights = [r / sum(raw) for r in raw]
        weights[-1] = 1.0 - sum(weights[:-1])
        assets = held + ([QUOTE] if with_quote else [])
        targets = dict(zip(assets, weights, strict=True))
        thresholds = {a: draw(st.sampled_from([0.01, 0.02, 0.05, 0.1, 0.2])) for a in assets}
        value = draw(st.sampled_from([100.0, 5000.0, 1e6]))
        holdings = {}
        for a, w in targets.items():
            jitter = draw(st.sampled_from([1.0, 0.97, 1.05, 0.8]))
            px = 1.0 if a == QUOTE else start[coins.index(a)]
            holdings[a] = round(w * value * jitter / px, 8)
        if not with_quote:
            holdings[QUOTE] = draw(st.sampled_from([0.0, 10.0]))
        window = draw(st.sampled_from([30, 300, 900])) * SEC
        portfolios.append(FleetPortfolio(f"p{n}", targets, thresholds, holdings, window, QUOTE))
    return portfolios, [f"{c}-{QUOTE}" for c in coins], start


ticks_strategy = st.lists(
    st.tuples(
        st.integers(0, len(COINS) - 1),
        st.sampled_from([0.0, 0.002, -0.002, 0.01, -0.01, 0.04, -0.04, 0.12, -0.12]),
        st.sampled_from([0, 1, 20, 60, 400]),
        st.sampled_from(["ok", "ok", "ok", "ok", "ok", "ok", "spread", "crossed", "zero"]),
    ),
    min_size=1, max_size=120,
)


def hand_over(fleet: Fleet, rows: list[int], window_from: dict[int, int]) -> list[Intent]:
    """What a worker taking over these portfolios does: drop them, rebuild their state, activate them.
    The window start comes from what the fleet reported (its intents and quiet checks), as a durable
    record would hold it, not from the fleet's own arrays."""
    holdings = fleet.q[rows].copy()
    seq = fleet.seq[rows].tolist()
    fleet.deactivate(rows)
    fleet.q[rows] = 0.0
    fleet.seq[rows] = 0
    fleet.window_from_ns[rows] = -1
    return fleet.activate(rows, holdings=holdings, seq=seq, window_from_ns=[window_from.get(r, -1) for r in rows])


def run_both(portfolios: list[FleetPortfolio], symbols: list[str], start: list[float],
             ticks: list[tuple[int, float, int, str]], seed_prices: bool, fee: str,
             handovers: frozenset[int] = frozenset()) -> tuple[list, list]:
    fee_rate = Decimal(fee)
    rules = {symbols[0]: SymbolRules(step_size=Decimal("0.0001"), min_notional=Decimal(5))}
    prices = np.array(start) if seed_prices else None
    fleet = Fleet.load(portfolios, symbols, fee_rate=fee_rate, rules=rules, prices=prices, now_ns=T0,
                       record_quiet_checks=True)
    window_from: dict[int, int] = {}  # what a durable record holds: the last intent or quiet check per portfolio
    ref = ReferenceLoop(portfolios, symbols, fee_rate, rules, list(start) if seed_prices else None)
    logp = [math.log(x) for x in start]
    ts = T0
    got: list[tuple[object, ...]] = []
    want: list[tuple[object, ...]] = []
    for x, (s, step, dt, kind) in enumerate(ticks):
        if x in handovers and fleet.pending_checks() == 0:  # a takeover happens between events
            assert hand_over(fleet, list(range(0, len(portfolios), 2)), window_from) == []
        s %= len(symbols)
        ts += dt * SEC
        logp[s] += step
        mid = round(math.exp(logp[s]), 6)
        bid, ask = mid, mid
        if kind == "spread":
            bid, ask = mid * 0.999, mid * 1.001
        elif kind == "crossed":
            bid, ask = mid * 1.001, mid
        elif kind == "zero":
            bid = 0.0
        for side, out in (("fleet", fleet.on_tick(s, bid, ask, ts)), ("ref", ref.on_tick(s, bid, ask, ts))):
            if side == "fleet":
                window_from.update({int(i.portfolio[1:]): i.ts_ns for i in out})
                window_from.update(fleet.take_quiet_checks())
            for intent in out:
                record = got if side == "fleet" else want
                record.append(("intent", intent))
                i = int(intent.portfolio[1:])
                holdings = fleet.holdings(i) if side == "fleet" else ref.holdings(i)
                for f in execute_at_mid(intent, holdings, QUOTE, fee_rate, rules):
                    record.append(("fill", f))
                    if side == "fleet":
                        fleet.apply_fill(i, f)
                    else:
                        ref.apply_fill(i, f, fill_deltas(f, QUOTE))
    end = ts + 1000 * SEC
    got += [("intent", x) for x in fleet.advance_to(end)]
    want += [("intent", x) for x in ref.advance_to(end)]
    return got, want


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fleets(), ticks_strategy, st.booleans(), st.sampled_from(["0", "0.001"]), st.sampled_from([1, 4, 2048]))
def test_fleet_decides_like_the_per_tick_loop(
    fleet_def: tuple[list[FleetPortfolio], list[str], list[float]],
    ticks: list[tuple[int, float, int, str]], seed_prices: bool, fee: str, merge_min: int,
) -> None:
    portfolios, symbols, start = fleet_def
    with mock.patch.object(fleet_index, "MERGE_MIN", merge_min):
        got, want = run_both(portfolios, symbols, start, ticks, seed_prices, fee)
    assert got == want


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fleets(), ticks_strategy, st.frozensets(st.integers(0, 120), max_size=4))
def test_a_takeover_with_rebuilt_state_changes_no_decision(
    fleet_def: tuple[list[FleetPortfolio], list[str], list[float]],
    ticks: list[tuple[int, float, int, str]], handovers: frozenset[int],
) -> None:
    portfolios, symbols, start = fleet_def
    got, want = run_both(portfolios, symbols, start, ticks, True, "0.001", handovers)
    assert got == want
