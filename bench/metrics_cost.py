"""Cost per call of PrometheusSensor.on_tick against the no-op Sensor.on_tick; prints one JSON line.

Usage: .venv/bin/python bench/metrics_cost.py [--calls N] [--repeats R]
"""
from __future__ import annotations

import argparse
import sys
import time

import orjson

from engine.sensor import Sensor
from ops.metrics import PrometheusSensor

SYMBOLS = ("BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "ADA-USDT")


def per_call_ns(sensor: Sensor, calls: int, repeats: int) -> float:
    """Best-of-`repeats` wall time per on_tick call, in ns, cycling through SYMBOLS."""
    symbols = [SYMBOLS[i % len(SYMBOLS)] for i in range(calls)]
    on_tick = sensor.on_tick
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for s in symbols:
            on_tick(s, 0)
        best = min(best, (time.perf_counter_ns() - t0) / calls)
    return best


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    prom = PrometheusSensor()
    prom.prepare([], SYMBOLS)
    noop_ns = per_call_ns(Sensor(), args.calls, args.repeats)
    prom_ns = per_call_ns(prom, args.calls, args.repeats)
    print(orjson.dumps({
        "bench": "metrics_cost",
        "calls": args.calls,
        "repeats": args.repeats,
        "noop_on_tick_ns": round(noop_ns, 1),
        "prometheus_on_tick_ns": round(prom_ns, 1),
        "overhead_ns": round(prom_ns - noop_ns, 1),
        "python": sys.version.split()[0],
    }).decode())


if __name__ == "__main__":
    main()
