"""The README's first command, `make demo`, starts the service on the embedded simulator and stops
cleanly on Ctrl-C (SIGINT to its process group)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_make_demo_starts_and_stops(tmp_path: Path) -> None:
    if shutil.which("make") is None or not (ROOT / ".venv" / "bin" / ".installed").exists():
        pytest.skip("make or the project's .venv (made by make) is missing")
    args = f"--no-tui --speed 30 --port 0 --state {tmp_path / 'demo'}"
    proc = subprocess.Popen(["make", "-s", "demo", f"ARGS={args}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, env={**os.environ})
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + 120
        running = False
        logged = []
        while time.monotonic() < deadline:  # the service's own log line says it runs
            line = proc.stderr.readline()
            if not line:
                break
            logged.append(line)
            if b"keel running" in line:
                running = True
                break
        assert running
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    # make itself reports the interrupt (GNU make re-raises SIGINT); keel under it stopped cleanly
    assert proc.returncode in (0, -signal.SIGINT)
    assert b"keel demo: stopped" in out
    # --port 0: the banner does not claim port 0, the log names the port actually bound
    assert b"metrics on a free port" in out
    assert any(re.search(rb"metrics on http://127\.0\.0\.1:[1-9][0-9]*/metrics", line) for line in logged), logged
    assert (tmp_path / "demo" / "keel.sqlite").is_file()
