"""`keel backtest` loads only what a replay needs: no venue, terminal, service or metrics libraries."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.service_kit import HALVES, portfolio_toml

ROOT = Path(__file__).resolve().parents[2]
NEVER = ("ccxt", "rich", "asyncio", "aiosqlite", "aiomqtt", "prometheus_client", "cryptofeed", "uvloop",
         "websockets", "nats", "numpy.ma")
CONFIG = portfolio_toml("core", targets=HALVES, threshold=0.05)
PROBE = """
import json, os, sys
from ops.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules), "blas": os.environ.get("OPENBLAS_NUM_THREADS")}))
"""


def test_backtest_imports_no_live_libraries(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    synth = [sys.executable, "-m", "ops.cli", "synth", "--coins", "BTC,ETH", "--ticks", "2000", "--out", "t.csv"]
    assert subprocess.run(synth, cwd=tmp_path, env=env, capture_output=True, timeout=60).returncode == 0
    (tmp_path / "k.toml").write_text(CONFIG)
    run = subprocess.run([sys.executable, "-c", PROBE, "backtest", "k.toml", "--ticks", "t.csv", "--out", "bt",
                          "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    probe = json.loads(run.stdout.strip().splitlines()[-1])
    assert probe["code"] == 0 and (tmp_path / "bt" / "report.html").is_file()
    loaded = [m for m in probe["modules"] if m.split(".")[0] in NEVER or m in NEVER]
    assert loaded == []
    assert probe["blas"] == "1"  # set before numpy loads: no OpenBLAS thread pool burning start-up CPU
