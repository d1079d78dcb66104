"""Offline commands: backtest, synth, check-config, report."""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

from ops.commands import CommandError, command, load, loading_modules, parse_candles, progress_bar


def _ledger_factory() -> Any:
    try:
        from ops.ledger_sync import LedgerSync
    except ImportError:
        return None
    return LedgerSync


def _backtest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the TOML config")
    src = p.add_argument_group("input (one or more)")
    src.add_argument("--ticks", action="append", default=[], metavar="FILE", help="tick CSV or JSONL (.gz ok)")
    src.add_argument("--candles", action="append", default=[], metavar="SYMBOL=FILE",
                     help="candle CSV (.gz ok) for one symbol, e.g. BTC-USDT=btc_1h.csv.gz")
    p.add_argument("--out", default="out/backtest", metavar="DIR", help="where to write the results (default out/backtest)")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")


@command("backtest", "Replay ticks or candles through the engine with paper fills and report.")(_backtest_args)
def backtest(args: argparse.Namespace) -> int:
    """keel backtest CONFIG (--ticks FILE | --candles SYMBOL=FILE ...) [--out DIR]."""
    with loading_modules(freeze=getattr(args, "own_process", False)):
        from feeds.files import TickFileError
        from ops.backtest import load_inputs, run_backtest

        ledger_factory = _ledger_factory()
        if not args.no_report:
            importlib.import_module("ops.report")  # written last, loaded now with the rest
    config = load(args.config)
    if not args.ticks and not args.candles:
        raise CommandError("give the market: --ticks FILE or --candles SYMBOL=FILE (several allowed)")
    for f in [*args.ticks, *(f for _, f in parse_candles(args.candles))]:
        if not Path(f).is_file():
            raise CommandError(f"input file {f} not found")
    started = time.process_time()
    try:
        cols, notes = load_inputs([Path(t) for t in args.ticks], parse_candles(args.candles))
    except TickFileError as e:
        raise CommandError(str(e)) from None
    for note in notes:
        print(f"keel backtest: {note}", file=sys.stderr)
    update, stop = progress_bar(len(cols) > 2_000_000)
    try:
        result = run_backtest(config, cols, Path(args.out), progress=update, ledger_factory=ledger_factory,
                              report=not args.no_report)
    except ValueError as e:
        raise CommandError(str(e)) from None
    finally:
        stop()
    cpu = time.process_time() - started
    if args.json:
        import orjson
        sys.stdout.write(orjson.dumps(result.summaries, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_summary(result.summaries, Path(args.out), cpu)
    return 0


def print_summary(summaries: dict[str, dict[str, Any]], out: Path, cpu: float) -> None:
    """The summary table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="keel backtest", show_lines=False)
    for col in ("portfolio", "final value", "HODL", "vs HODL", "rebalances", "fees", "turnover", "max DD", "ticks"):
        table.add_column(col, justify="right" if col != "portfolio" else "left")
    for s in summaries.values():
        table.add_row(
            s["portfolio"], f"{s['final_value']:,.2f} {s['quote']}", f"{s['hodl_value']:,.2f}",
            f"{s['premium']:+.2%}", str(s["rebalances"]), f"{s['fees_paid']:,.2f}", f"{s['turnover']:.2f}x",
            f"{s['max_drawdown']:.1%}", f"{s['ticks']:,}",
        )
    console = Console()
    console.print(table)
    console.print(f"results in {out}/ (summary.json, intents.jsonl, fills.csv, equity.csv, ledger.sqlite, report.html); "
                  f"{cpu:.2f} CPU s")


def _synth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coins", default="BTC,ETH,SOL,BNB", help="comma-separated coins (default BTC,ETH,SOL,BNB)")
    p.add_argument("--quote", default="USDT")
    p.add_argument("--ticks", type=int, default=100_000, help="number of ticks (default 100000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--step-ms", type=float, default=100.0, help="time between ticks (default 100 ms)")
    p.add_argument("--vol", type=float, default=0.8, help="annualised volatility (default 0.8)")
    p.add_argument("--corr", type=float, default=0.6, help="correlation between coins (default 0.6)")
    p.add_argument("--swing", type=float, default=0.0, help="amplitude of mean-reverting swings (0.05 = 5%%)")
    p.add_argument("--out", required=True, metavar="FILE", help="tick CSV to write (.gz ok)")


@command("synth", "Write a seeded synthetic tick file (correlated GBM with bid/ask).")(_synth_args)
def synth(args: argparse.Namespace) -> int:
    """keel synth --out FILE."""
    from feeds.files import write_ticks_csv
    from feeds.synth import synth_ticks

    coins = [c.strip().upper() for c in args.coins.split(",") if c.strip()]
    if not coins:
        raise CommandError("--coins needs at least one coin")
    if args.ticks <= 0:
        raise CommandError("--ticks must be positive")
    try:
        cols = synth_ticks(coins, quote=args.quote, n_ticks=args.ticks, seed=args.seed,
                           step_ns=int(args.step_ms * 1e6), vol=args.vol, corr=args.corr, swing=args.swing)
    except ValueError as e:
        raise CommandError(str(e)) from None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_ticks_csv(args.out, cols)
    print(f"wrote {len(cols):,} ticks of {', '.join(cols.symbols)} to {args.out}")
    return 0


def _check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the TOML config")


@command("check-config", "Validate a config and explain what it will do.")(_check_args)
def check_config(args: argparse.Namespace) -> int:
    """keel check-config CONFIG."""
    from ops.config import explain

    config = load(args.config)
    print(explain(config))
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="a backtest output folder (with summary.json)")
    p.add_argument("--compare", nargs="*", default=None, metavar="LABEL=DIR",
                   help="instead: one page comparing several backtest folders")
    p.add_argument("--out", default=None, help="comparison page path (default DIR/compare.html)")


@command("report", "Rebuild report.html from a backtest folder, or compare several.")(_report_args)
def report(args: argparse.Namespace) -> int:
    """keel report DIR."""
    from ops.report import render_comparison, render_report

    d = Path(args.dir)
    if args.compare is not None:
        runs = []
        for item in [f"{d.name}={d}", *args.compare]:
            label, sep, path = item.partition("=")
            if not sep or not Path(path, "summary.json").is_file():
                raise CommandError(f"{item!r} is not LABEL=DIR with a summary.json in DIR")
            runs.append((label, Path(path)))
        out = render_comparison(runs, Path(args.out) if args.out else d / "compare.html")
    else:
        if not (d / "summary.json").is_file():
            raise CommandError(f"{d} has no summary.json (run keel backtest --out {d} first)")
        out = render_report(d)
    print(f"wrote {out}")
    return 0
