"""Live-path benchmark: the simulator (a separate process) -> TLS websocket -> cryptofeed's Binance parser
-> keel's LiveDriver -> engine -> intents, on one core of this process.

Prints one JSON line: frames per second this process keeps up with when the simulator sends as fast
as it can (engine attached), and the latency from cryptofeed's receipt time to the intent reaching the
execution actor's mailbox, p50/p99/p999, at a fixed frame rate (default 10,000/s), and how much of
each intent's time the exact plan took. The event loop is uvloop, as in `keel run`. In the latency run four portfolios (1-2.5% bands, 1 s windows) start from
the quote; every intent is filled at once at its decision prices (as the paper venue would, fee
0.1%) on the next loop turn, so holdings move and intents are real threshold rebalances.
Usage: python bench/live.py [--secs 5] [--rate 10000]   (each intent is one sample: --secs 30 gives ~60)
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

import engine.engine as engine_module  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.planner import Plan, plan_rebalance  # noqa: E402
from engine.spec import PortfolioSpec  # noqa: E402
from engine.types import Fill, Intent, Side, Tick  # noqa: E402
from feeds.cryptofeed_source import CryptofeedSource  # noqa: E402
from feeds.simulator.certs import client_ssl_context  # noqa: E402
from ops.live import LiveClock, LiveDriver  # noqa: E402

SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "BNB-USDT"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sim(rate: float, cert_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "exchange-sim", "--port", str(port), "--rate", str(rate), "--swing", "0.2",
         "--symbols", ",".join(SYMBOLS), "--cert-dir", str(cert_dir)],
        cwd=ROOT, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stderr is not None
    while b"exchange simulator on" not in (line := proc.stderr.readline()):
        if not line:
            raise RuntimeError("simulator did not start")
    return proc, port


def specs(many: bool) -> list[PortfolioSpec]:
    """One realistic portfolio (5% band, 300 s window), or 4 busy ones (1-2.5% bands, 1 s windows) for latency."""
    targets = {"BTC": 0.25, "ETH": 0.25, "SOL": 0.25, "BNB": 0.25}
    if not many:
        return [PortfolioSpec(name="bench", quote="USDT", targets=targets, thresholds=dict.fromkeys(targets, 0.05),
                              window_ns=300 * 10**9, fee_rate=Decimal("0.001"))]
    return [PortfolioSpec(name=f"p{k}", quote="USDT", targets=targets,
                          thresholds=dict.fromkeys(targets, 0.01 + 0.0005 * k), window_ns=10**9,
                          fee_rate=Decimal("0.001")) for k in range(0, 40, 10)]


async def measure(port: int, cert_dir: Path, secs: float, many: bool) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    clock = LiveClock(loop)
    engine = Engine(clock, specs(many))
    latencies: list[int] = []
    mailbox: list[Intent] = []

    in_tick = [0]
    entered = [0]
    in_engine: list[int] = []  # from our callback's entry to the mailbox: the engine's share of the latency
    in_plan: list[int] = []  # the exact plan's share of it
    last_plan = [0]

    def timed_plan(*args: Any, **kwargs: Any) -> Plan:
        t = time.perf_counter_ns()
        result = plan_rebalance(*args, **kwargs)
        last_plan[0] = time.perf_counter_ns() - t
        return result

    setattr(engine_module, "plan_rebalance", timed_plan)  # noqa: B010 - the engine looks it up in its module

    trade_ids = itertools.count()

    def fill_at_once(intent: Intent) -> None:
        """What the paper venue does, at the decision prices, fee 0.1% in the quote."""
        for leg in intent.legs:
            engine.apply_fill(intent.portfolio, Fill(
                f"t{next(trade_ids)}", "c", leg.symbol, leg.side, leg.quantity, leg.expected_price,
                leg.notional * Decimal("0.001"), "USDT", time.time_ns()))
        engine.intent_done(intent.portfolio, intent)

    def dispatch(intents: list[Intent], cause_ns: int) -> None:
        now = time.time_ns()
        for intent in intents:
            mailbox.append(intent)
            if in_tick[0]:  # caused by a frame (window-end re-checks woken by a loop timer are not)
                latencies.append(now - in_tick[0])
                in_engine.append(now - entered[0])
                in_plan.append(last_plan[0])
            if many:
                loop.call_soon(fill_at_once, intent)  # the actor fills it after this frame
            else:
                engine.intent_done(intent.portfolio, intent)

    driver = LiveDriver(engine, clock, dispatch)
    decided: list[int] = []
    first = asyncio.Event()

    def on_tick(tick: Tick) -> None:
        first.set()
        in_tick[0] = tick.ts_recv_ns
        entered[0] = time.time_ns()
        driver.on_tick(tick)
        in_tick[0] = 0
        decided.append(time.time_ns() - tick.ts_recv_ns)

    def on_tick_fast(tick: Tick) -> None:  # the throughput run: no per-frame bookkeeping
        first.set()
        driver.on_tick(tick)

    source = CryptofeedSource("binance", SYMBOLS, ws_url=f"wss://127.0.0.1:{port}/binance",
                              rest_url=f"https://127.0.0.1:{port}/binance", ssl_context=client_ssl_context(cert_dir))
    task = asyncio.create_task(source.run(on_tick if many else on_tick_fast))
    await first.wait()
    await asyncio.sleep(0.5)  # past the start-up buys
    gc.freeze()  # what the service does after start-up: long-lived objects leave the collector's scans
    t0, c0, n0 = time.monotonic(), time.process_time(), driver.ticks
    latencies.clear()
    in_engine.clear()
    in_plan.clear()
    decided.clear()
    await asyncio.sleep(secs)
    t1, c1, n1 = time.monotonic(), time.process_time(), driver.ticks
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    clock.close()
    setattr(engine_module, "plan_rebalance", plan_rebalance)  # noqa: B010

    def pct(values: list[int], p: float) -> float:
        v = sorted(values)
        return round(v[min(len(v) - 1, int(p * len(v)))] / 1000, 1) if v else float("nan")

    sides = [leg.side for i in mailbox for leg in i.legs]
    return {"frames_per_s": round((n1 - n0) / (t1 - t0)),
            "sells": sides.count(Side.SELL), "buys": sides.count(Side.BUY), "cpu_per_frame_us": round((c1 - c0) / max(1, n1 - n0) * 1e6, 2),
            "intents": len(latencies), "intent_p50_us": pct(latencies, 0.5), "intent_p99_us": pct(latencies, 0.99),
            "intent_p999_us": pct(latencies, 0.999), "intent_in_engine_p50_us": pct(in_engine, 0.5),
            "intent_in_engine_p99_us": pct(in_engine, 0.99), "intent_plan_p50_us": pct(in_plan, 0.5),
            "intent_plan_p99_us": pct(in_plan, 0.99), "decision_p50_us": pct(decided, 0.5),
            "decision_p99_us": pct(decided, 0.99), "decision_p999_us": pct(decided, 0.999)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--secs", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=10_000.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("feedhandler").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp:
        cert_dir = Path(tmp)
        out = {}
        sim, port = start_sim(0, cert_dir)
        try:
            fast = uvloop.run(measure(port, cert_dir, args.secs, many=False))
        finally:
            sim.terminate()
            sim.wait()
        out["max_frames_per_s_with_engine"] = fast["frames_per_s"]
        out["cpu_per_frame_us"] = fast["cpu_per_frame_us"]
        sim, port = start_sim(args.rate, cert_dir)
        try:
            lat = uvloop.run(measure(port, cert_dir, args.secs, many=True))
        finally:
            sim.terminate()
            sim.wait()
        out.update({f"at_{int(args.rate)}_per_s_{k}": v for k, v in lat.items()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
