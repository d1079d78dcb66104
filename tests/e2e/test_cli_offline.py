"""The offline CLI as a user runs it: synth, backtest, check-config, report, and their mistakes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service_kit import portfolio_toml

KEEL = [sys.executable, "-m", "ops.cli"]
ROOT = Path(__file__).resolve().parents[2]

CONFIG = portfolio_toml("core", threshold=0.02, window_secs=60)


def keel(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KEEL, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "160"})


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("market")
    r = keel("synth", "--coins", "BTC,ETH,SOL", "--ticks", "60000", "--seed", "3", "--swing", "0.08",
             "--out", str(d / "ticks.csv"), cwd=d)
    assert r.returncode == 0, r.stderr
    (d / "keel.toml").write_text(CONFIG)
    return d


def test_backtest_writes_every_output_and_is_byte_identical_on_rerun(market: Path):
    for out in ("a", "b"):
        r = keel("backtest", "keel.toml", "--ticks", "ticks.csv", "--out", out, cwd=market)
        assert r.returncode == 0, r.stderr
    a, b = market / "a", market / "b"
    for name in ("summary.json", "intents.jsonl", "fills.csv", "equity.csv", "ledger.sqlite", "report.html"):
        assert (a / name).is_file(), name
    assert (a / "intents.jsonl").read_bytes() == (b / "intents.jsonl").read_bytes()
    summary = json.loads((a / "summary.json").read_text())
    for key in ("final_value", "hodl_value", "premium", "rebalances", "fees_paid", "turnover", "max_drawdown",
                "ticks", "start", "end", "holdings"):
        assert key in summary
    assert summary["ticks"] == 60000
    assert summary["rebalances"] >= 1
    assert summary["premium"] == pytest.approx(summary["final_value"] / summary["hodl_value"] - 1)
    intents = [json.loads(line) for line in (a / "intents.jsonl").read_text().splitlines()]
    assert intents[0]["reason"] == "start"
    assert len(intents) == summary["rebalances"] + 1
    header = (a / "equity.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["ts", "ts_ns", "value", "hodl_value", "drift"]


def test_backtest_json_summary(market: Path):
    r = keel("backtest", "keel.toml", "--ticks", "ticks.csv", "--out", "j", "--json", "--no-report", cwd=market)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["core"]["portfolio"] == "core"


@pytest.mark.parametrize(("args", "needle"), [
    (["backtest", "keel.toml", "--ticks", "missing.csv"], "input file missing.csv not found"),
    (["backtest", "nope.toml", "--ticks", "ticks.csv"], "nope.toml: cannot read the config file"),
    (["backtest", "keel.toml"], "--ticks FILE or --candles"),
    (["backtest", "keel.toml", "--candles", "BTC-USDT"], "SYMBOL=FILE"),
    (["backtest", "bad.toml", "--ticks", "ticks.csv"], "rebalance.thresh"),
    (["backtest", "doge.toml", "--ticks", "ticks.csv"], "no ticks for DOGE-USDT"),
    (["check-config", "bad.toml"], "unknown key"),
    (["report", "."], "no summary.json"),
])
def test_mistakes_give_one_line_and_exit_2(market: Path, args: list[str], needle: str):
    (market / "bad.toml").write_text(CONFIG + "thresh = 0.1\n")
    (market / "doge.toml").write_text(CONFIG.replace("SOL = 0.1", "DOGE = 0.1"))
    r = keel(*args, cwd=market)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert needle in lines[0]


def test_check_config_explains(market: Path):
    r = keel("check-config", "keel.toml", cwd=market)
    assert r.returncode == 0, r.stderr
    assert "core" in r.stdout and "BTC" in r.stdout


def test_report_rebuilds_the_page(market: Path):
    assert keel("backtest", "keel.toml", "--ticks", "ticks.csv", "--out", "r", "--no-report", cwd=market).returncode == 0
    r = keel("report", "r", cwd=market)
    assert r.returncode == 0, r.stderr
    assert (market / "r" / "report.html").stat().st_size > 10_000


def test_every_command_has_help(market: Path):
    from ops.commands import REGISTRY

    for name in REGISTRY:
        r = keel(name, "--help", cwd=market)
        assert r.returncode == 0 and "usage: keel" in r.stdout, name
