"""Benchmark: read a 1,000,000-line `ts_ns,symbol,bid,ask` CSV with `feeds.files.read_ticks`.

Generates the file from the synthetic market in a temp dir, then times the read in a fresh process
(so the peak RSS is the reader's own) and prints one JSON line:
{"rows": ..., "seconds": ..., "rows_per_s": ..., "first_read_cpu_s": ..., "peak_rss_mb": ...}

    .venv/bin/python bench/read_ticks.py [--rows N] [--repeat K] [--gzip]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feeds.files import read_ticks, write_ticks_csv  # noqa: E402
from feeds.synth import synth_ticks  # noqa: E402


def peak_rss_mb() -> float:
    """Peak RSS of this process image (VmHWM; ru_maxrss would include the parent's size at fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_once(path: Path, repeat: int) -> dict[str, float]:
    """Best of `repeat` reads, the first one's CPU seconds (what `keel backtest` pays), and the peak RSS."""
    best = float("inf")
    first_cpu = 0.0
    rows = 0
    for i in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        cols, report = read_ticks(path)
        best = min(best, time.perf_counter() - t0)
        first_cpu = first_cpu if i else time.process_time() - c0
        rows = len(cols)
        if report.rows_kept != report.rows_read:
            raise SystemExit(f"unexpected drops: {report}")
        del cols
    peak_mb = peak_rss_mb()
    return {"rows": rows, "seconds": round(best, 4), "rows_per_s": round(rows / best),
            "first_read_cpu_s": round(first_cpu, 4), "peak_rss_mb": round(peak_mb, 1)}


def main() -> None:
    """Generate (or, with --read, only read) and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gzip", action="store_true", help="write and read a .csv.gz")
    ap.add_argument("--read", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.read:
        print(json.dumps(read_once(args.read, args.repeat)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("ticks.csv.gz" if args.gzip else "ticks.csv")
        cols = synth_ticks(["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE"], n_ticks=args.rows, seed=7, swing=0.05)
        write_ticks_csv(path, cols)
        del cols
        cmd = [sys.executable, __file__, "--read", str(path), "--repeat", str(args.repeat)]
        print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
