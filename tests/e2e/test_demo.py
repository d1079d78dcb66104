"""`keel demo` as a user runs it: a fast seeded market, a rebalance in its ledger, metrics, Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(180)
def test_demo_rebalances_serves_metrics_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "demo", "--no-tui", "--speed", "30", "--seed", "7", "--port", str(port),
         "--state", str(tmp_path / "demo")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stderr is not None and proc.stdout is not None
    lines = []
    try:
        deadline = time.monotonic() + 120
        seen = False
        threshold_ids = set()
        while time.monotonic() < deadline:  # read the service's log until a threshold rebalance completed
            line = proc.stderr.readline().decode()
            if not line:
                break
            lines.append(line)
            words = line.split()
            if "started" in words and "(threshold," in words:
                threshold_ids.add(words[words.index("intent") + 1])
            if "finished:" in words and words[words.index("intent") + 1] in threshold_ids:
                seen = True
                break
        assert seen, "".join(lines[-30:])
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert "keel_portfolio_value_quote{portfolio=\"demo\"}" in body
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "report:" in out.decode()
    ledger = tmp_path / "demo" / "keel.sqlite"
    con = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        reasons = [r for (r,) in con.execute("SELECT reason FROM intents WHERE status = 'complete'")]
    finally:
        con.close()
    assert "start" in reasons and "threshold" in reasons
    assert (tmp_path / "demo" / "report" / "report.html").is_file()
    # the report's intents are the ledger's, in order, the start first and the threshold one among them
    reported = [json.loads(line) for line in (tmp_path / "demo" / "report" / "intents.jsonl").read_text().splitlines()]
    assert reported[0]["reason"] == "start" and {i["id"] for i in reported} >= threshold_ids
