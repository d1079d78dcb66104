"""Fleet at scale: random baskets, a random-walk market, per-tick latency; one JSON line per fleet size.

Each size runs in its own process so that its peak RSS is its own.

Usage: .venv/bin/python bench/scale.py [--sizes 1000,10000,100000,1000000] [--ticks 100000]
       [--daily-vol 0.04] [--ticks-per-sec 50] [--seed 7]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson

from engine.fleet import Fleet
from engine.fleet_math import execute_at_mid

NCOINS = 20
QUOTE = "USDT"
SEC = 1_000_000_000
T0 = 1_704_067_200 * SEC
SYMBOLS = [f"C{i:02d}-{QUOTE}" for i in range(NCOINS)]


def make_portfolios(n: int, rng: np.random.Generator, prices: np.ndarray) -> dict[str, object]:
    """Random baskets of 2-10 of the coins, thresholds 1%-10%, holdings a little off the targets."""
    k = rng.integers(2, 11, n)
    picks = np.argsort(rng.random((n, NCOINS)), axis=1)[:, :10].astype(np.int64)
    slot = np.arange(10)[None, :]
    coins = np.where(slot < k[:, None], picks, -1)
    raw = np.where(slot < k[:, None], rng.uniform(0.5, 1.5, (n, 10)), 0.0)
    targets = np.zeros((n, 11))
    targets[:, :10] = raw / raw.sum(axis=1, keepdims=True)
    thr = rng.uniform(0.01, 0.10, n)
    thresholds = np.full((n, 11), np.inf)
    thresholds[:, :10] = np.where(slot < k[:, None], thr[:, None], np.inf)
    value = rng.uniform(1_000, 100_000, n)
    px = prices[np.where(coins >= 0, coins, 0)]
    jitter = 1.0 + rng.uniform(-0.3, 0.3, (n, 10)) * thr[:, None]
    holdings = np.zeros((n, 11))
    holdings[:, :10] = np.where(coins >= 0, targets[:, :10] * value[:, None] * jitter / px, 0.0)
    return {"names": [f"p{i:07d}" for i in range(n)], "coins": coins, "holdings": holdings, "targets": targets,
            "thresholds": thresholds}


def make_ticks(n: int, rng: np.random.Generator, prices: np.ndarray, daily_vol: float,
               ticks_per_sec: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random walk per coin; each tick moves one coin; half a basis point of spread."""
    sym = rng.integers(0, NCOINS, n)
    sigma = daily_vol * np.sqrt(NCOINS / ticks_per_sec / 86_400)
    steps = rng.normal(0.0, sigma, n)
    logp = np.log(prices)
    mid = np.empty(n)
    for s in range(NCOINS):
        idx = np.flatnonzero(sym == s)
        mid[idx] = np.exp(logp[s] + np.cumsum(steps[idx]))
    ts = T0 + (np.arange(1, n + 1) * (SEC / ticks_per_sec)).astype(np.int64)
    return sym, mid * (1 - 0.000025), mid * (1 + 0.000025), ts


def run_one(size: int, args: argparse.Namespace) -> dict[str, object]:
    """Load `size` portfolios, replay the ticks, execute every intent on paper."""
    rng = np.random.default_rng(args.seed)
    prices = np.exp(rng.uniform(np.log(0.1), np.log(50_000), NCOINS))
    t0 = time.perf_counter()
    cols = make_portfolios(size, rng, prices)
    gen_secs = time.perf_counter() - t0
    t0 = time.perf_counter()
    fleet = Fleet.from_arrays(SYMBOLS, window_ns=300 * SEC, fee_rate=Decimal("0.001"), prices=prices, now_ns=T0,
                              **cols)  # type: ignore[arg-type]
    load_secs = time.perf_counter() - t0
    sym, bid, ask, ts = make_ticks(args.ticks, rng, prices, args.daily_vol, args.ticks_per_sec)
    lat = np.empty(args.ticks, dtype=np.int64)
    intents = fills = 0
    exec_ns = 0
    clock = time.perf_counter_ns
    on_tick = fleet.on_tick
    wall0 = clock()
    for x, (s, b, a, t) in enumerate(zip(sym.tolist(), bid.tolist(), ask.tolist(), ts.tolist(), strict=True)):
        c0 = clock()
        out = on_tick(s, b, a, t)
        lat[x] = clock() - c0
        if out:
            e0 = clock()
            for intent in out:
                p = int(intent.portfolio[1:])
                intents += 1
                for f in execute_at_mid(intent, fleet.holdings(p), QUOTE, fleet.fee_rate, fleet.rules):
                    fleet.apply_fill(p, f)
                    fills += 1
            exec_ns += clock() - e0
    wall = (clock() - wall0) / 1e9
    us = lat / 1e3
    return {
        "bench": "fleet_scale",
        "portfolios": size,
        "ticks": args.ticks,
        "daily_vol": args.daily_vol,
        "ticks_per_sec_market": args.ticks_per_sec,
        "generate_secs": round(gen_secs, 2),
        "load_secs": round(load_secs, 2),
        "ticks_per_sec": round(args.ticks / (lat.sum() / 1e9)),
        "ticks_per_sec_with_execution": round(args.ticks / wall),
        "tick_us_p50": round(float(np.percentile(us, 50)), 1),
        "tick_us_p99": round(float(np.percentile(us, 99)), 1),
        "tick_us_p999": round(float(np.percentile(us, 99.9)), 1),
        "tick_us_max": round(float(us.max()), 1),
        "intents": intents,
        "fills": fills,
        "execution_secs": round(exec_ns / 1e9, 2),
        "index_merges": fleet.index.merges,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    """Run each size in a child process (own peak RSS) and print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--ticks", type=int, default=100_000)
    parser.add_argument("--daily-vol", type=float, default=0.04)
    parser.add_argument("--ticks-per-sec", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(orjson.dumps(run_one(args.one, args)).decode(), flush=True)
        return
    for size in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(size), "--ticks", str(args.ticks),
               "--daily-vol", str(args.daily_vol), "--ticks-per-sec", str(args.ticks_per_sec), "--seed",
               str(args.seed)]
        subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parents[1])


if __name__ == "__main__":
    main()
