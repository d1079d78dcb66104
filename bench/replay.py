"""Replay benchmark: 1,000,000 synthetic ticks over 4 coins, threshold 5% absolute, window 300 s.

Prints one JSON line: engine-only ticks per CPU-second (columnar replay and the per-tick live path),
the whole `keel backtest` command's ticks per CPU-second (reading the file included) and its peak RSS.
With --breakdown it also splits the command's CPU seconds: start-up, imports, reading the file,
the replay (engine), writing the outputs (report included) and the rest (config, exit).
Usage: python bench/replay.py [--ticks N] [--sensor] [--breakdown]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.clock import ReplayClock  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.replay import ColumnarReplay  # noqa: E402
from engine.runner import ListSink, PaperExecutor, run_per_tick  # noqa: E402
from engine.spec import PortfolioSpec  # noqa: E402
from feeds.synth import synth_ticks  # noqa: E402

CONFIG = """
[portfolio]
name = "bench"
quote = "USDT"
capital = 10000
[portfolio.targets]
BTC = 0.25
ETH = 0.25
SOL = 0.25
BNB = 0.25
[rebalance]
mode = "threshold"
band = "absolute"
threshold = 0.05
window_secs = 300
"""


def spec() -> PortfolioSpec:
    targets = {"BTC": 0.25, "ETH": 0.25, "SOL": 0.25, "BNB": 0.25}
    return PortfolioSpec(name="bench", quote="USDT", targets=targets, thresholds={c: 0.05 for c in targets},
                         window_ns=300 * 10**9, fee_rate=Decimal("0.001"))


def engine_run(cols, per_tick: bool, sensor=None) -> tuple[float, int]:
    clock = ReplayClock(int(cols.ts_ns[0]))
    kw = {"sensor": sensor} if sensor is not None else {}
    engine = Engine(clock, [spec()], **kw)
    sink = ListSink()
    ex = PaperExecutor(engine, sink)
    if per_tick:
        ticks = list(cols.ticks())
        t0 = time.process_time()
        run_per_tick(engine, clock, ticks, ex)
    else:
        t0 = time.process_time()
        ColumnarReplay(engine, clock, cols, ex.execute).run()
    return time.process_time() - t0, len(sink.intents)


BREAKDOWN = """
import gc, json, sys, time
started = time.process_time()  # the interpreter and site (the editable install's import hook) so far
gc.disable()  # loaded as the command loads them: without collector passes (commands.loading_modules)
from ops import cli  # sets OPENBLAS_NUM_THREADS before numpy loads
import feeds.files, ops.backtest, ops.ledger_sync, ops.report
gc.enable()
imported = time.process_time()
spent = {"read_s": 0.0, "outputs_s": 0.0, "backtest_s": 0.0}
def timed(module, name, key):
    fn = getattr(module, name)
    def wrapper(*args, **kwargs):
        t = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] += time.process_time() - t
    setattr(module, name, wrapper)
timed(feeds.files, "read_ticks", "read_s")
timed(ops.backtest, "write_outputs", "outputs_s")
timed(ops.backtest, "run_backtest", "backtest_s")
sys.argv[0] = "keel"
code = cli.main()  # as the console script calls it: keel owns the process
done = time.process_time()
spent["replay_s"] = spent.pop("backtest_s") - spent["outputs_s"]
print(json.dumps({"code": code, "startup_s": started, "imports_s": imported - started, **spent,
                  "rest_s": done - imported - sum(spent.values())}))
"""


def command_breakdown(ticks: Path, conf: Path, out: Path) -> dict[str, float]:
    """Where the backtest command's CPU seconds go (one run; the exit is what the process total adds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run([sys.executable, "-c", BREAKDOWN, "backtest", str(conf), "--ticks", str(ticks), "--out",
                          str(out), "--json"], check=True, capture_output=True, text=True, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    parts = json.loads(run.stdout.strip().splitlines()[-1])
    total = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    parts["exit_s"] = total - sum(v for k, v in parts.items() if k.endswith("_s"))
    return {f"breakdown_{k}": round(v, 3) for k, v in parts.items() if k.endswith("_s")}


def command_figures(n: int, tmp: Path, breakdown: bool = False) -> dict[str, float]:
    """`keel synth` then `keel backtest` as subprocesses, started while this process is still small
    (a forked child counts its parent's pages in its peak RSS until it execs)."""
    keel = Path(sys.executable).parent / "keel"
    ticks = tmp / "ticks.csv"
    subprocess.run([str(keel), "synth", "--coins", "BTC,ETH,SOL,BNB", "--ticks", str(n), "--seed", "42",
                    "--out", str(ticks)], check=True, stdout=subprocess.DEVNULL)
    conf = tmp / "bench.toml"
    conf.write_text(CONFIG)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([str(keel), "backtest", str(conf), "--ticks", str(ticks), "--out", str(tmp / "out"), "--json"],
                   check=True, stdout=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    figures = {"command_ticks_per_cpu_s": round(n / cpu), "command_cpu_s": round(cpu, 3),
               "command_peak_rss_mb": round(after.ru_maxrss / 1024, 1)}
    if breakdown:
        figures.update(command_breakdown(ticks, conf, tmp / "out"))
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ticks", type=int, default=1_000_000)
    ap.add_argument("--vol", type=float, default=0.8)
    ap.add_argument("--sensor", action="store_true", help="also time the per-tick path with the Prometheus sensor")
    ap.add_argument("--breakdown", action="store_true", help="also split the command's CPU time by phase")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        command = command_figures(args.ticks, Path(tmp), args.breakdown)
    cols = synth_ticks(["BTC", "ETH", "SOL", "BNB"], n_ticks=args.ticks, seed=42, step_ns=100_000_000, vol=args.vol)
    best = min(engine_run(cols, False)[0] for _ in range(3))
    intents = engine_run(cols, False)[1]
    n_small = min(args.ticks, 200_000)
    small = synth_ticks(["BTC", "ETH", "SOL", "BNB"], n_ticks=n_small, seed=42, step_ns=100_000_000, vol=args.vol)
    per_tick_cpu = min(engine_run(small, True)[0] for _ in range(3))
    out = {
        "ticks": args.ticks,
        "intents": intents,
        "engine_columnar_ticks_per_cpu_s": round(args.ticks / best),
        "engine_per_tick_ticks_per_cpu_s": round(n_small / per_tick_cpu),
    }
    if args.sensor:
        from ops.metrics import PrometheusSensor
        s = PrometheusSensor()
        s.prepare(["bench"], list(small.symbols))
        cpu = min(engine_run(small, True, sensor=s)[0] for _ in range(3))
        out["engine_per_tick_with_prometheus_ticks_per_cpu_s"] = round(n_small / cpu)
        out["sensor_overhead_ratio"] = round(cpu / per_tick_cpu - 1.0, 3)
    out.update(command)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
