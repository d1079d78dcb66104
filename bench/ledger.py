"""Durable fills per second through the execution actor and the group-commit ledger (WAL, synchronous=FULL).

Many portfolios each run a chain of intents with many legs against a zero-latency PaperVenue; every
order is committed as pending before it is sent and every fill is committed before it is applied.
Prints one JSON line: fills/s, commits, fills per commit, CPU per fill (both threads, then the event
loop's thread and the rest: the ledger's writer thread), and the intent-to-last-fill latency p50/p99.
On a shared machine, compare cpu_us_per_fill rather than fills/s.

Usage: .venv/bin/python bench/ledger.py [--portfolios 50] [--intents 20] [--legs 10] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson

from engine.execution import fill_deltas, intent_id
from engine.types import Fill, Intent, Leg, Reason, Side, SymbolRules, Transfer
from ops.actor import ExecutionActor
from ops.actor_messages import ExecuteIntent, Stop
from ops.ledger import Ledger
from ops.venues.paper import PaperVenue

QUOTE = "USDT"
FEE = Decimal("0.001")


def make_intent(portfolio: str, seq: int, coins: list[str], prices: dict[str, float], legs: int) -> Intent:
    """Half the legs sell coins, half buy others; the roles swap every intent so holdings stay positive."""
    half = legs // 2
    sellers, buyers = (coins[:half], coins[half:legs]) if seq % 2 else (coins[half:legs], coins[:half])
    plan = [Leg(f"{c}-{QUOTE}", Side.SELL, Decimal("0.5"), Decimal(repr(prices[c])),
                Decimal("0.5") * Decimal(repr(prices[c]))) for c in sellers]
    plan += [Leg(f"{c}-{QUOTE}", Side.BUY, Decimal("0.45"), Decimal(repr(prices[c])),
                 Decimal("0.45") * Decimal(repr(prices[c]))) for c in buyers]
    return Intent(intent_id(portfolio, seq, seq), portfolio, seq, Reason.THRESHOLD, 0.06, {}, {}, tuple(plan))


OUTBOX = [False]  # MQTT off, the service's default: no event rows


async def run(portfolios: int, intents: int, legs: int, folder: Path) -> dict[str, object]:
    """Run the benchmark once; returns the figures."""
    coins = [f"C{k}" for k in range(legs)]
    prices = {c: 10.0 + k for k, c in enumerate(coins)}
    book_prices = {f"{c}-{QUOTE}": (p, p) for c, p in prices.items()}
    rules = {s: SymbolRules(Decimal("0.00000001"), Decimal(0)) for s in book_prices}
    venue = PaperVenue(book_prices.__getitem__, fee_rate=FEE, rules=rules)
    ledger = await Ledger.open(folder / "bench-ledger.sqlite", outbox=OUTBOX[0])
    names = [f"p{k:03d}" for k in range(portfolios)]
    start = {c: Decimal(10) for c in coins} | {QUOTE: Decimal(100)}
    holdings = {p: dict(start) for p in names}
    for p in names:
        await ledger.record_portfolio(p, QUOTE)
        for asset, amount in start.items():
            await ledger.record_transfer(Transfer(f"{p}-{asset}", p, asset, amount, 0), "capital")
    told_ns: dict[str, int] = {}
    last_fill_ns: dict[str, int] = {}
    sent: dict[str, int] = dict.fromkeys(names, 0)
    fills = 0
    finished = asyncio.get_running_loop().create_future()
    remaining = portfolios * intents

    def on_fill(p: str, fill: Fill) -> None:
        nonlocal fills
        fills += 1
        last_fill_ns[fill.client_order_id[1:17]] = time.perf_counter_ns()
        for asset, delta in fill_deltas(fill, QUOTE).items():
            holdings[p][asset] += delta

    def tell_next(p: str) -> None:
        sent[p] += 1
        intent = make_intent(p, sent[p], coins, prices, legs)
        told_ns[intent.id] = time.perf_counter_ns()
        actor.tell(ExecuteIntent(intent))

    def on_done(intent: Intent, outcome: str) -> None:
        nonlocal remaining
        if outcome != "complete":
            raise RuntimeError(f"intent {intent.id} ended {outcome}")
        remaining -= 1
        if sent[intent.portfolio] < intents:
            tell_next(intent.portfolio)
        elif remaining == 0 and not finished.done():
            finished.set_result(None)

    actor = ExecutionActor(venue, ledger, holdings_of=holdings.__getitem__, on_fill=on_fill, on_done=on_done,
                           quote_of=lambda p: QUOTE, fee_rate_of=lambda p: FEE, rules_of=lambda p: rules)
    commits0 = ledger.commits
    task = asyncio.create_task(actor.run())
    started, cpu_started, loop_cpu_started = time.perf_counter(), time.process_time(), time.thread_time()
    for p in names:
        tell_next(p)
    await finished
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    loop_cpu = time.thread_time() - loop_cpu_started
    commits = ledger.commits - commits0
    actor.tell(Stop())
    await task
    check = await ledger.holdings(names[0])
    await ledger.close()
    if {a: q for a, q in check.items() if q} != {a: q for a, q in holdings[names[0]].items() if q}:
        raise RuntimeError("ledger holdings differ from the applied fills")
    latencies = np.array([(last_fill_ns[i] - t) / 1e6 for i, t in told_ns.items() if i in last_fill_ns])
    return {
        "bench": "ledger", "portfolios": portfolios, "intents": portfolios * intents, "legs": legs, "fills": fills,
        "seconds": round(seconds, 3), "fills_per_sec": round(fills / seconds), "commits": commits,
        "fills_per_commit": round(fills / max(commits, 1), 1), "cpu_us_per_fill": round(cpu / fills * 1e6),
        "loop_cpu_us_per_fill": round(loop_cpu / fills * 1e6), "writer_cpu_us_per_fill": round((cpu - loop_cpu) / fills * 1e6),
        "intent_to_last_fill_ms_p50": round(float(np.percentile(latencies, 50)), 2),
        "intent_to_last_fill_ms_p99": round(float(np.percentile(latencies, 99)), 2),
        "sqlite": "WAL, synchronous=FULL",
    }


def main() -> None:
    """Parse arguments, run, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--portfolios", type=int, default=50)
    parser.add_argument("--intents", type=int, default=20, help="intents per portfolio, run one after another")
    parser.add_argument("--legs", type=int, default=10, help="legs per intent (half sells, half buys)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the ledger file (a temporary one by default)")
    parser.add_argument("--outbox", action="store_true", help="also write MQTT outbox rows (as with MQTT on)")
    args = parser.parse_args()
    OUTBOX[0] = args.outbox
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        figures = asyncio.run(run(args.portfolios, args.intents, args.legs, Path(folder)))
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")


if __name__ == "__main__":
    main()
