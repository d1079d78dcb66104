"""What a rarely run code path costs on this machine: the exact planner (4 coins), the intent id,
the Intent built around a plan, and an empty Python call, back to back and after the CPU did something
else for 0.1, 1, 10 and 100 ms.

An intent is decided a few times per second against 10,000 frames; its code runs cold. This prints
the cold penalty as one JSON line (medians in microseconds, wall time): `spin` keeps this thread busy
in a tiny loop (nothing of ours evicts the caches, the machine's other work does), `sleep` lets the
core idle. `assemble` and `noop` do no Decimal arithmetic at all: they show that plain interpreted
Python pays the same cold penalty. Compare with bench/live.py's in-engine intent latency.

Usage: .venv/bin/python bench/cold_path.py [--samples 40]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.execution import intent_id
from engine.planner import plan_rebalance
from engine.types import Reason, new_intent

HOLDINGS = {"BTC": Decimal("0.01"), "ETH": Decimal("0.2"), "SOL": Decimal("3"), "BNB": Decimal("1"),
            "USDT": Decimal("100")}
PRICES = {"BTC": 40000.0, "ETH": 2500.0, "SOL": 100.0, "BNB": 300.0}
TARGETS = dict.fromkeys(PRICES, 0.25)
FEE = Decimal("0.001")


def plan() -> None:
    """One exact rebalance plan (3 legs)."""
    plan_rebalance(HOLDINGS, PRICES, TARGETS, "USDT", fee_rate=FEE)


def make_id() -> None:
    """One intent id (blake2b of a short text)."""
    intent_id("core", 7, 1_700_000_000_000_000_000)


PLAN = plan_rebalance(HOLDINGS, PRICES, TARGETS, "USDT", fee_rate=FEE)
WEIGHTS = dict.fromkeys(PRICES, 0.2)


def assemble() -> None:
    """What `Engine._fire` does around the plan: the id, the priced symbols, the Intent (no arithmetic)."""
    new_intent(intent_id("core", 7, 1_700_000_000_000_000_000), "core", 1_700_000_000_000_000_000, Reason.THRESHOLD,
               0.05, {f"{c}-USDT": px for c, px in PRICES.items()}, WEIGHTS, PLAN.legs, PLAN.residual_drift, False,
               PLAN.quote_reserve)


def noop() -> None:
    """An empty Python call: the least an intent can cost."""


def median_us(values: list[int]) -> float:
    """The median of ns values, in us."""
    return round(sorted(values)[len(values) // 2] / 1000, 1)


def after_gap(fn: Callable[[], None], gap_s: float, mode: str, samples: int) -> float:
    """Median time of `fn()` run after `gap_s` of spinning or sleeping."""
    out = []
    for _ in range(samples):
        if mode == "sleep":
            time.sleep(gap_s)
        else:
            end = time.perf_counter() + gap_s
            while time.perf_counter() < end:
                pass
        t = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t)
    return median_us(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=40)
    args = ap.parse_args()
    result: dict[str, object] = {"bench": "cold_path"}
    for name, fn in (("plan", plan), ("intent_id", make_id), ("assemble", assemble), ("noop", noop)):
        for _ in range(200):
            fn()
        warm = []
        for _ in range(200):
            t = time.perf_counter_ns()
            fn()
            warm.append(time.perf_counter_ns() - t)
        result[f"{name}_back_to_back_us"] = median_us(warm)
        for gap in (0.0001, 0.001, 0.01, 0.1):
            samples = args.samples if gap < 0.1 else max(5, args.samples // 4)
            for mode in ("spin", "sleep"):
                result[f"{name}_after_{gap * 1000:g}ms_{mode}_us"] = after_gap(fn, gap, mode, samples)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
