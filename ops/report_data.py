"""A backtest output folder read back as columns: summary, equity curve, intents, fills (for the report)."""
from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ops.svg import F64

log = logging.getLogger(__name__)

EMPTY = np.zeros(0)


@dataclass(frozen=True, slots=True)
class Equity:
    """The equity curve as columns: time (seconds), value, HODL value, drift and one weight column per coin."""

    ts_s: F64
    value: F64
    hodl: F64
    drift: F64
    weights: dict[str, F64]

    @staticmethod
    def empty() -> Equity:
        """No rows (the file is absent)."""
        return Equity(EMPTY, EMPTY, EMPTY, EMPTY, {})

    def final_weights(self) -> dict[str, float]:
        """Each coin's weight on the last row."""
        return {c: float(w[-1]) for c, w in self.weights.items() if w.shape[0] and math.isfinite(w[-1])}


@dataclass(frozen=True, slots=True)
class FillSeries:
    """Cumulative fees and traded notional (both in the quote currency) at each fill time."""

    ts_s: F64
    fees: F64
    volume: F64


@dataclass(frozen=True, slots=True)
class Backtest:
    """Everything a report shows, loaded from one backtest directory."""

    summary: dict[str, Any]
    equity: Equity
    intents: list[dict[str, Any]]
    fills: FillSeries


def load_equity(path: Path) -> Equity:
    """equity.csv as columns (empty when the file is absent); parses 100k rows in tens of milliseconds."""
    if not path.is_file():
        return Equity.empty()
    header_line, _, body = path.read_text(encoding="utf-8").partition("\n")
    header = [h.strip() for h in header_line.split(",")]
    if "ts_ns" not in header or "value" not in header:
        raise ValueError(f"{path}: header must name ts_ns and value columns, got {header_line!r}")
    names = [h for h in header if h != "ts"]
    cols = [header.index(h) for h in names]
    if not body.strip():
        data = np.zeros((0, len(names)))
    else:
        try:
            data = np.loadtxt(io.StringIO(body), delimiter=",", usecols=cols, dtype=np.float64, ndmin=2)
        except ValueError:
            rows = list(csv.reader(io.StringIO(body)))
            data = np.array([[float(r[c]) if c < len(r) and r[c] else math.nan for c in cols] for r in rows if r])
            data = data.reshape(-1, len(names))
    col = {name: data[:, i] for i, name in enumerate(names)}
    nan = np.full(data.shape[0], math.nan)
    return Equity(
        ts_s=col["ts_ns"] / 1e9, value=col["value"], hodl=col.get("hodl_value", nan), drift=col.get("drift", nan),
        weights={n[2:]: v for n, v in col.items() if n.startswith("w_")},
    )


def load_intents(path: Path) -> list[dict[str, Any]]:
    """intents.jsonl as a list of dicts in file order (empty when the file is absent)."""
    if not path.is_file():
        return []
    out: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if line.strip():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
    return out


def load_fills(path: Path, quote: str) -> FillSeries:
    """fills.csv as cumulative fees and traded notional in the quote (empty when absent)."""
    if not path.is_file():
        return FillSeries(EMPTY, EMPTY, EMPTY)
    ts: list[float] = []
    fees: list[float] = []
    volume: list[float] = []
    unpriced: set[str] = set()
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            price, qty, fee = float(row["price"]), float(row["quantity"]), float(row["fee"] or 0)
            base = row["symbol"].partition("-")[0]
            asset = row.get("fee_asset") or quote
            if asset == base:
                fee *= price
            elif asset != quote and fee:
                unpriced.add(asset)
                fee = 0.0
            ts.append(int(row["ts_ns"]) / 1e9)
            fees.append(fee)
            volume.append(price * qty)
    if unpriced:
        log.warning("fees paid in %s are left out of the fee chart (no price in %s)", sorted(unpriced), quote)
    order = np.argsort(np.array(ts), kind="stable")
    return FillSeries(np.array(ts)[order], np.cumsum(np.array(fees)[order]), np.cumsum(np.array(volume)[order]))


def load_backtest(out_dir: Path) -> Backtest:
    """Reads summary.json (required), equity.csv, intents.jsonl and fills.csv (optional) of one directory."""
    summary_path = out_dir / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} not found: is {out_dir} a backtest output directory?")
    summary = orjson.loads(summary_path.read_bytes())
    quote = str(summary.get("quote") or "USDT")
    return Backtest(summary, load_equity(out_dir / "equity.csv"), load_intents(out_dir / "intents.jsonl"),
                    load_fills(out_dir / "fills.csv", quote))
