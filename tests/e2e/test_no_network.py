"""The live path's tests pass inside a network namespace that has nothing but a loopback interface:
proof that they need no network beyond 127.0.0.1 (in addition to the socket guard in conftest.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUBSET = ["tests/integration/test_simulator_cryptofeed.py", "tests/integration/test_golden_replay.py",
          "tests/integration/test_service_commands.py"]


def namespaces_work() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(os.environ.get("KEEL_IN_NETNS") == "1", reason="already inside the namespace")
def test_live_path_tests_pass_without_any_network() -> None:
    if not namespaces_work():
        pytest.skip("unshare -n is not permitted here (needs root or user namespaces, and iproute2)")
    script = f"ip link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider {' '.join(SUBSET)}"
    result = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=280, env={**os.environ, "KEEL_IN_NETNS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
