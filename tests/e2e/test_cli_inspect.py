"""`keel ledger` and `keel preview` as a user runs them, against a real backtest ledger and the engine itself."""
from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

import ops.cmd_inspect  # noqa: F401  (registers `ledger` and `preview` until ops/commands.py imports it)
from engine.clock import ReplayClock
from engine.engine import Engine
from engine.runner import ListSink, PaperExecutor
from engine.types import Reason, Tick
from ops.cli import main
from ops.config import load_config
from ops.specs import portfolio_specs

SEC = 1_000_000_000
T0 = 1_704_067_200 * SEC

CONFIG = """
[portfolio]
name = "core"
capital = 10000
targets = { BTC = 0.4, ETH = 0.3, SOL = 0.1, USDT = 0.2 }
[rebalance]
threshold = 0.02
window_secs = 60
[venue]
fee_rate = 0.001
slippage_bps = 5
"""

EDGE = """
[portfolio]
name = "edge"
capital = 10000
targets = { BTC = 0.45, ETH = 0.45, USDT = 0.1 }
[rebalance]
threshold = 0.05
target = "edge"
edge_margin = 0.1
[venue]
fee_rate = 0.001
step_size = 0.0001
"""

MULTI = """
[[portfolios]]
name = "majors"
targets = { BTC = 0.5, ETH = 0.5 }
[[portfolios]]
name = "alts"
targets = { SOL = 0.5, ETH = 0.5 }
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("inspect")
    (d / "keel.toml").write_text(CONFIG)
    (d / "edge.toml").write_text(EDGE)
    (d / "multi.toml").write_text(MULTI)
    assert main(["synth", "--coins", "BTC,ETH,SOL", "--ticks", "20000", "--seed", "3", "--swing", "0.08",
                 "--out", str(d / "ticks.csv")]) == 0
    assert main(["backtest", str(d / "keel.toml"), "--ticks", str(d / "ticks.csv"), "--out", str(d / "bt"),
                 "--no-report", "--json"]) == 0
    return d


def keel(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_ledger_json_agrees_with_the_backtest_that_wrote_it_and_leaves_the_file_untouched(work, capsys):
    ledger = work / "bt" / "ledger.sqlite"
    before = hashlib.sha256(ledger.read_bytes()).hexdigest()
    code, out, err = keel(capsys, "ledger", str(ledger), "--json")
    assert code == 0, err
    assert hashlib.sha256(ledger.read_bytes()).hexdigest() == before
    got = json.loads(out)["portfolios"]["core"]
    summary = json.loads((work / "bt" / "summary.json").read_text())
    assert {a: Decimal(q) for a, q in got["holdings"].items()} == {
        a: Decimal(q) for a, q in summary["holdings"].items() if Decimal(q) != 0}
    assert summary["rebalances"] >= 3
    assert got["rebalances"] == {"threshold": summary["rebalances"]}
    assert got["intents"] == {"complete": summary["intents"]}
    with (work / "bt" / "fills.csv").open() as f:
        assert got["fills"] == sum(1 for _ in csv.DictReader(f))
    assert float(got["fees_quote"]) == pytest.approx(summary["fees_paid"], rel=1e-9)
    assert got["open_orders"] == 0 and got["missing_prices"] == []
    assert "last fill price" in got["price_note"]
    assert abs(got["premium"] - summary["premium"]) < 0.003  # fill prices instead of the final mids
    assert float(got["value"]) / float(got["hodl_value"]) - 1 == pytest.approx(got["premium"])


def test_ledger_table_for_a_person(work, capsys):
    code, out, err = keel(capsys, "ledger", str(work / "bt" / "ledger.sqlite"), "--portfolio", "core")
    assert code == 0, err
    for needle in ("core (USDT)", "last fill price", "HODL quantity", "fills ", "fees paid", "rebalances",
                   "threshold", "realised premium"):
        assert needle in out, needle


def _foreign_sqlite(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes(x TEXT)")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize(("make", "extra", "needle"), [
    (lambda d: d / "missing.sqlite", [], "ledger file"),
    (lambda d: d / "keel.toml", [], "is not a keel ledger (not an SQLite database)"),
    (lambda d: _foreign_sqlite(d / "other.sqlite"), [], "is not a keel ledger (no keel schema"),
    (lambda d: d / "bt" / "ledger.sqlite", ["--portfolio", "nope"], "portfolio 'nope' is not in ledger"),
])
def test_ledger_mistakes_are_one_line_with_exit_2(work, capsys, make, extra, needle):
    code, _, err = keel(capsys, "ledger", str(make(work)), *extra)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("keel ledger: ") and needle in err, err


def _engine(config: Path) -> tuple[Engine, ReplayClock, ListSink, PaperExecutor]:
    clock = ReplayClock(T0)
    engine = Engine(clock, portfolio_specs(load_config(config)))
    sink = ListSink()
    return engine, clock, sink, PaperExecutor(engine, sink)


def _feed(engine: Engine, clock: ReplayClock, ex: PaperExecutor, ts: int, prices: dict[str, float]) -> None:
    clock.advance_to(ts)
    ex.execute(engine.take_intents())
    ex.execute(engine.on_ticks([Tick(f"{c}-USDT", p, p, ts, ts) for c, p in prices.items()]))


def _legs(legs: list[dict[str, str]]) -> list[tuple[str, str, Decimal, Decimal, Decimal]]:
    return [(x["symbol"], x["side"], Decimal(x["quantity"]), Decimal(x["price"]), Decimal(x["notional"])) for x in legs]


def test_preview_of_the_buy_in_is_the_engines_start_intent_with_its_costs(work, capsys):
    code, out, err = keel(capsys, "preview", str(work / "keel.toml"), "--prices", "BTC=43000,ETH=2300,SOL=100",
                          "--json")
    assert code == 0, err
    got = json.loads(out)["portfolios"]["core"]
    engine, clock, sink, ex = _engine(work / "keel.toml")
    _feed(engine, clock, ex, T0, {"BTC": 43000.0, "ETH": 2300.0, "SOL": 100.0})
    [start] = sink.intents
    assert got["reason"] == "start" and start.reason is Reason.START
    assert _legs(got["legs"]) == [(x.symbol, x.side.value, x.quantity, x.expected_price, x.notional) for x in start.legs]
    notional = sum(Decimal(x["notional"]) for x in got["legs"])
    assert Decimal(got["fees"]) == notional * Decimal("0.001")
    assert Decimal(got["slippage"]) == notional * Decimal(5) / Decimal(10000)
    assert got["expected_residual_drift"] == start.expected_residual_drift
    assert all(x["side"] == "buy" for x in got["legs"]) and Decimal(got["sells"]) == 0


def test_preview_of_a_breach_trades_to_the_band_edge_exactly_as_the_engine(work, capsys):
    engine, clock, sink, ex = _engine(work / "edge.toml")
    _feed(engine, clock, ex, T0, {"BTC": 50000.0, "ETH": 2000.0})
    held = dict(engine.runtimes["edge"].portfolio.holdings)
    _feed(engine, clock, ex, T0 + 400 * SEC, {"BTC": 50000.0, "ETH": 2600.0})
    rebalance = sink.intents[-1]
    assert rebalance.reason is Reason.THRESHOLD
    holdings = ",".join(f"{a}={q}" for a, q in held.items())
    code, out, err = keel(capsys, "preview", str(work / "edge.toml"), "--holdings", holdings,
                          "--prices", "BTC=50000.0,ETH=2600.0", "--json")
    assert code == 0, err
    got = json.loads(out)["portfolios"]["edge"]
    assert got["reason"] == "threshold" and got["rebalance_to"] == "band edge"
    assert _legs(got["legs"]) == [(x.symbol, x.side.value, x.quantity, x.expected_price, x.notional)
                                  for x in rebalance.legs]
    assert got["expected_residual_drift"] == rebalance.expected_residual_drift
    assert got["expected_residual_drift"] > 0.03  # the edge keeps most of the drift: about half the turnover


def test_preview_from_the_ledger_takes_its_holdings_and_last_fill_prices(work, capsys):
    ledger = str(work / "bt" / "ledger.sqlite")
    code, out, err = keel(capsys, "ledger", ledger, "--json")
    held = json.loads(out)["portfolios"]["core"]["holdings"]
    code, out, err = keel(capsys, "preview", str(work / "keel.toml"), "--ledger", ledger, "--prices", "BTC=60000",
                          "--json")
    assert code == 0, err
    got = json.loads(out)["portfolios"]["core"]
    assert {a: Decimal(q) for a, q in got["holdings"].items()} == {a: Decimal(q) for a, q in held.items()}
    assert got["price_source"] == {"BTC": "--prices", "ETH": "last fill", "SOL": "last fill"}
    assert got["reason"] == "threshold" and (got["legs"][0]["symbol"], got["legs"][0]["side"]) == ("BTC-USDT", "sell")
    code, out, err = keel(capsys, "preview", str(work / "keel.toml"), "--ledger", ledger)
    assert code == 0 and "costs: fees" in out and "expected residual drift after fees" in out, err


@pytest.mark.parametrize(("args", "needle"), [
    (["keel.toml", "--prices", "BTC=43000"], "no price for ETH, SOL; give --prices ETH=PRICE,SOL=PRICE"),
    (["keel.toml", "--prices", "BTC=1,ETH=1,SOL=1,DOGE=1"], "--prices: DOGE is not a coin of core"),
    (["keel.toml", "--prices", "BTC:43000"], "--prices takes COIN=NUMBER pairs separated by commas"),
    (["keel.toml", "--prices", "BTC=0,ETH=1,SOL=1"], "--prices: BTC=0 must be > 0"),
    (["keel.toml", "--prices", "BTC=1,ETH=1,SOL=1", "--holdings", "DOGE=3"], "--holdings: DOGE is not in portfolio core"),
    (["multi.toml", "--prices", "BTC=1,ETH=1,SOL=1", "--holdings", "BTC=1"], "choose it with --portfolio NAME"),
    (["multi.toml", "--portfolio", "x", "--prices", "BTC=1"], "portfolio 'x' is not in config"),
    (["keel.toml", "--ledger", "missing.sqlite"], "ledger file missing.sqlite not found"),
    (["missing.toml", "--prices", "BTC=1"], "missing.toml"),
])
def test_preview_mistakes_are_one_line_with_exit_2(work, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(work)
    code, _, err = keel(capsys, "preview", *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("keel preview: ") and needle in err, err


def test_preview_of_one_portfolio_among_several(work, capsys):
    code, out, err = keel(capsys, "preview", str(work / "multi.toml"), "--portfolio", "alts", "--holdings",
                          "SOL=10,ETH=0,USDT=0", "--prices", "SOL=100,ETH=2000", "--json")
    assert code == 0, err
    got = json.loads(out)["portfolios"]
    assert list(got) == ["alts"]
    assert [(x["symbol"], x["side"]) for x in got["alts"]["legs"]] == [("SOL-USDT", "sell"), ("ETH-USDT", "buy")]


def test_a_fresh_ledger_holds_the_capital_and_preview_then_needs_prices(work, capsys):
    from engine.types import Transfer
    from ops.ledger_sync import LedgerSync

    path = work / "fresh.sqlite"
    ledger = LedgerSync(path)
    ledger.record_portfolio("core", "USDT", created_ns=T0)
    ledger.record_transfer(Transfer("core-start-USDT", "core", "USDT", Decimal(10000), T0), "capital")
    ledger.close()
    code, out, err = keel(capsys, "ledger", str(path), "--json")
    assert code == 0, err
    got = json.loads(out)["portfolios"]["core"]
    assert got["holdings"] == {"USDT": "10000"} and got["fills"] == 0 and got["rebalances"] == {}
    assert got["premium"] == 0.0 and got["intents"] == {}
    code, _, err = keel(capsys, "preview", str(work / "keel.toml"), "--ledger", str(path))
    assert code == 2 and "no price for BTC, ETH, SOL" in err and "has no fill of BTC-USDT" in err, err
    code, out, err = keel(capsys, "preview", str(work / "keel.toml"), "--ledger", str(path), "--json",
                          "--prices", "BTC=43000,ETH=2300,SOL=100")
    assert code == 0, err
    got = json.loads(out)["portfolios"]["core"]
    assert got["reason"] == "threshold" and {x["side"] for x in got["legs"]} == {"buy"}
