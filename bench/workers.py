"""Fleet workers on one nats-server: tick throughput with 1, 2 and 4 worker processes; one JSON line each.

For each worker count: a fresh nats-server (JetStream in a temp dir), the workers as processes
(`python -m ops.worker`), a wait until every partition is active, then one publisher sends the ticks
as fast as it can on core NATS; the run ends when every worker has applied every tick (the ticks count
in its heartbeat). Every worker holds portfolios in every symbol, so each one sees every tick.

Usage: .venv/bin/python bench/workers.py [--workers 1,2,4] [--portfolios 20000] [--ticks 50000]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
import nats.js.errors
import orjson

from engine.fleet_load import FleetPortfolio
from ops.worker_wire import FILL_STREAM, INTENT_STREAM, TICKS, WORKER_BUCKET, tick_body, write_portfolios

REPO = Path(__file__).resolve().parents[1]
SEC = 1_000_000_000
T0 = 1_704_067_200 * SEC
NCOINS = 20


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_portfolios(n: int, rng: random.Random, start: list[float]) -> list[FleetPortfolio]:
    """Random baskets of 2-10 of the coins at their targets, thresholds 1%-10%."""
    out = []
    for k in range(n):
        coins = rng.sample(range(NCOINS), rng.randint(2, 10))
        raw = [rng.uniform(0.5, 1.5) for _ in coins]
        targets = {f"C{c:02d}": r / sum(raw) for c, r in zip(coins, raw, strict=True)}
        holdings = {f"C{c:02d}": targets[f"C{c:02d}"] * 10_000 / start[c] for c in coins}
        out.append(FleetPortfolio(f"p{k:06d}", targets, dict.fromkeys(targets, rng.uniform(0.01, 0.10)), holdings))
    return out


async def heartbeats(js: nats.js.JetStreamContext) -> list[dict[str, object]]:
    """Every live worker's heartbeat."""
    try:
        kv = await js.key_value(WORKER_BUCKET)
        keys = await kv.keys()
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.NoKeysError):
        return []
    out = []
    for key in keys:
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            out.append(orjson.loads((await kv.get(key)).value))
    return out


async def until(check: object, within: float, what: str) -> None:
    """Poll an async condition against a deadline."""
    t0 = time.monotonic()
    while not await check():  # type: ignore[operator]
        if time.monotonic() - t0 > within:
            raise TimeoutError(f"{what} not reached within {within}s")
        await asyncio.sleep(0.05)  # polling a condition against a deadline


def wait_port(port: int, within: float = 20.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + within
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # polling a readiness condition against a deadline


def run_one(workers: int, args: argparse.Namespace, file: Path, ticks: list[tuple[str, float, float, int]],
            tmp: Path) -> dict[str, object]:
    """One worker count against a fresh nats-server."""
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    server = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd",
                               str(tmp / f"js{workers}")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        wait_port(port)
        for w in range(workers):
            with ((args.log_dir or tmp) / f"w{workers}-{w}.log").open("wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "ops.worker", "--nats", url, "--id", f"w{w}", "--portfolios", str(file),
                     "--ledger-dir", str(tmp / f"ledger{workers}"), "--partitions", str(args.partitions),
                     "--lease-secs", str(args.lease_secs)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
        return asyncio.run(measure(url, workers, args, ticks))
    finally:
        for p in [*procs, server]:
            p.terminate()
        for p in [*procs, server]:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def measure(url: str, workers: int, args: argparse.Namespace,
                  ticks: list[tuple[str, float, float, int]]) -> dict[str, object]:
    """Wait for every partition, publish the ticks, wait until every worker applied them all."""
    nc = await nats.connect(url)
    js = nc.jetstream()

    async def covered() -> bool:
        beats = await heartbeats(js)
        share = math.ceil(args.partitions / workers)
        return (len(beats) == workers and sum(len(b["active"]) for b in beats) == args.partitions  # type: ignore[arg-type]
                and all(len(b["active"]) <= share for b in beats))  # type: ignore[arg-type]

    t_ready = time.monotonic()
    await until(covered, 120, "every partition active")
    ready_secs = time.monotonic() - t_ready
    t0 = time.monotonic()
    for k, (sym, bid, ask, ts) in enumerate(ticks):
        await nc.publish(f"{TICKS}.{sym}", tick_body(k, bid, ask, ts))
        if k % 1000 == 999:
            await nc.flush()
    await nc.flush()
    publish_secs = time.monotonic() - t0

    async def applied() -> bool:
        beats = await heartbeats(js)
        return len(beats) == workers and all(b["ticks"] == len(ticks) for b in beats)

    await until(applied, 600, "every tick applied")
    secs = time.monotonic() - t0
    intents = (await js.stream_info(INTENT_STREAM)).state.messages
    fill_msgs = (await js.stream_info(FILL_STREAM)).state.messages
    await nc.close()
    return {"bench": "fleet_workers", "workers": workers, "portfolios": args.portfolios, "ticks": len(ticks),
            "partitions": args.partitions, "ready_secs": round(ready_secs, 2),
            "publish_ticks_per_sec": round(len(ticks) / publish_secs), "ticks_per_sec": round(len(ticks) / secs),
            "worker_tick_applications_per_sec": round(workers * len(ticks) / secs), "intents": intents,
            "fills": fill_msgs - intents, "seconds": round(secs, 2)}


def main() -> None:
    """Print one JSON line per worker count."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--portfolios", type=int, default=20_000)
    parser.add_argument("--ticks", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=64)
    parser.add_argument("--lease-secs", type=float, default=5.0)
    parser.add_argument("--daily-vol", type=float, default=0.5)
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the workers' logs here")
    args = parser.parse_args()
    rng = random.Random(5)
    start = [math.exp(rng.uniform(math.log(0.1), math.log(50_000))) for _ in range(NCOINS)]
    sigma = args.daily_vol * math.sqrt(NCOINS * 0.02 / 86_400)
    logp = [math.log(p) for p in start]
    ticks = []
    for k in range(args.ticks):
        s = rng.randrange(NCOINS)
        logp[s] += rng.gauss(0, sigma)
        mid = math.exp(logp[s])
        ticks.append((f"C{s:02d}-USDT", mid * 0.99998, mid * 1.00002, T0 + k * SEC // 50))
    with tempfile.TemporaryDirectory(prefix="keel-bench-workers-") as tmp:
        file = Path(tmp) / "portfolios.jsonl"
        write_portfolios(file, make_portfolios(args.portfolios, rng, start))
        for w in (int(x) for x in args.workers.split(",")):
            print(orjson.dumps(run_one(w, args, file, ticks, Path(tmp))).decode(), flush=True)


if __name__ == "__main__":
    main()
