"""`keel backtest`: replay history through the engine with paper fills and write the results.

Writes into the output folder: summary.json, intents.jsonl (byte-identical for the same input),
fills.csv, equity.csv, ledger.sqlite and report.html.
"""
from __future__ import annotations

import csv
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from engine.clock import ReplayClock
from engine.columns import TickColumns
from engine.engine import Engine
from engine.replay import ColumnarReplay
from engine.runner import ListSink, PaperExecutor
from engine.types import Fill, Intent, Order, Transfer
from ops.config import Config
from ops.specs import portfolio_specs

log = logging.getLogger(__name__)
NS_PER_MIN = 60_000_000_000
LOOKBACK = 64  # ticks searched back from each equity sample for each coin's last price


def iso(ts_ns: int) -> str:
    """ns since the epoch -> ISO 8601 UTC with milliseconds."""
    t = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{(ts_ns // 1_000_000) % 1000:03d}Z"


def iso_many(ts_ns: np.ndarray) -> list[str]:
    """`iso` of many times at once (the same text)."""
    ms = (np.asarray(ts_ns, dtype=np.int64) // 1_000_000).astype("datetime64[ms]")
    return [text + "Z" for text in np.datetime_as_string(ms, unit="ms").tolist()]


def intent_record(intent: Intent) -> dict[str, Any]:
    """An intent as one JSON object (Decimals as strings)."""
    return {
        "id": intent.id,
        "portfolio": intent.portfolio,
        "ts_ns": intent.ts_ns,
        "ts": iso(intent.ts_ns),
        "reason": intent.reason.value,
        "drift": intent.drift,
        "expected_residual_drift": intent.expected_residual_drift,
        "observe": intent.observe,
        "prices": intent.prices,
        "weights": intent.weights,
        "legs": [
            {"symbol": leg.symbol, "side": leg.side.value, "quantity": str(leg.quantity),
             "expected_price": str(leg.expected_price), "notional": str(leg.notional)}
            for leg in intent.legs
        ],
    }


@dataclass
class Recorder:
    """Sink of the paper executor: keeps intents, orders, fills and a holdings timeline per portfolio."""

    engine: Engine
    ledger: Any = None
    sink: ListSink = field(default_factory=ListSink)
    timeline: dict[str, list[tuple[int, list[float]]]] = field(default_factory=dict)

    def on_intent(self, intent: Intent) -> None:
        """An intent was emitted."""
        self.sink.on_intent(intent)
        if self.ledger is not None:
            self.ledger.on_intent(intent)

    def on_order(self, order: Order, status: str) -> None:
        """An order finished."""
        self.sink.on_order(order, status)
        if self.ledger is not None:
            self.ledger.on_order(order, status)

    def on_fill(self, portfolio: str, fill: Fill) -> None:
        """A fill happened."""
        self.sink.on_fill(portfolio, fill)
        if self.ledger is not None:
            self.ledger.on_fill(portfolio, fill)

    def snapshot(self, portfolio: str) -> None:
        """Holdings changed: remember them from now on."""
        p = self.engine.runtimes[portfolio].portfolio
        self.timeline.setdefault(portfolio, []).append((self.engine.clock.now_ns(), list(p.q)))


@dataclass(frozen=True)
class BacktestResult:
    """What a backtest produced, per portfolio."""

    summaries: dict[str, dict[str, Any]]
    intents: list[Intent]
    ticks: int
    engine_seconds: float


def run_backtest(config: Config, cols: TickColumns, out_dir: Path | None = None, *,
                 progress: Callable[[int, int], None] | None = None, ledger_factory: Callable[[Path], Any] | None = None,
                 report: bool = True) -> BacktestResult:
    """Replay `cols` through every configured portfolio with paper fills; write results when `out_dir` is given."""
    if len(cols) == 0:
        raise ValueError("no ticks to replay")
    specs = portfolio_specs(config)
    missing = sorted({s for spec in specs for s in spec.symbols} - set(cols.symbols))
    if missing:
        raise ValueError(f"the input has no ticks for {', '.join(missing)} (it has {', '.join(cols.symbols)})")
    clock = ReplayClock(int(cols.ts_ns[0]))
    engine = Engine(clock, specs, outlier_fraction=config.feed.outlier_fraction)
    ledger = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if ledger_factory is not None:
            for stale in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"):
                (out_dir / stale).unlink(missing_ok=True)  # an output: each run writes its own
            ledger = ledger_factory(out_dir / "ledger.sqlite")
    recorder = Recorder(engine, ledger)
    for name, rt in engine.runtimes.items():
        recorder.snapshot(name)
        if ledger is not None and hasattr(ledger, "record_portfolio"):
            ledger.record_portfolio(name, rt.spec.quote, created_ns=int(cols.ts_ns[0]))
            for asset, qty in rt.portfolio.holdings.items():
                if qty:
                    ledger.record_transfer(Transfer(f"{name}-start-{asset}", name, asset, qty, int(cols.ts_ns[0])),
                                           "capital" if rt.spec.start == "quote" else "adopt")
    executor = PaperExecutor(engine, recorder, slippage_bps=Decimal(repr(config.venue.slippage_bps)))

    def execute(intents: list[Intent]) -> None:
        executor.execute(intents)
        for intent in intents:
            recorder.snapshot(intent.portfolio)

    started = time.process_time()
    replay = ColumnarReplay(engine, clock, cols, execute)
    replay.run(progress=progress)
    engine_seconds = time.process_time() - started
    summaries = {}
    equity = {name: _equity(engine, name, replay, recorder) for name in engine.runtimes}
    for name in engine.runtimes:
        summaries[name] = summarise(engine, name, replay, recorder, config, equity[name])
    if ledger is not None:
        ledger.commit()
        ledger.close()
    if out_dir is not None:
        write_outputs(out_dir, engine, recorder, summaries, equity, report=report)
    return BacktestResult(summaries, recorder.sink.intents, len(cols), engine_seconds)


def _equity(engine: Engine, name: str, replay: ColumnarReplay, recorder: Recorder) -> dict[str, np.ndarray]:
    """Value, HODL value, weights and drift at every priced timestamp (or every minute when denser)."""
    rt = engine.runtimes[name]
    p = rt.portfolio
    ts = replay.ts
    if len(ts) == 0:
        return {}
    ends = _sample_ends(ts)
    prices = _last_mids(replay, ends, p.sym[:-1])
    sample_ts = ts[ends]
    timeline = recorder.timeline[name]
    t_ts = np.array([t for t, _ in timeline], dtype=np.int64)
    t_q = np.array([q for _, q in timeline], dtype=np.float64)
    which = np.searchsorted(t_ts, sample_ts, "right") - 1
    q = t_q[np.maximum(which, 0)]
    values = [q[:, k] * prices[k] for k in range(len(prices))] + [q[:, -1]]
    total = np.sum(values, axis=0)
    hodl_q = [float(rt.hodl.get(a, 0)) for a in p.assets]
    hodl = np.sum([hodl_q[k] * prices[k] for k in range(len(prices))], axis=0) + hodl_q[-1]
    first_intent = next((i.ts_ns for i in recorder.sink.intents if i.portfolio == name), None)
    keep = np.isfinite(total) & (sample_ts >= (first_intent if first_intent is not None else sample_ts[0]))
    out = {"ts_ns": sample_ts[keep], "value": total[keep], "hodl_value": hodl[keep]}
    drift = np.zeros(int(keep.sum()))
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in p.members:
            w = values[k][keep] / total[keep]
            out[f"w_{p.assets[k]}"] = w
            drift = np.maximum(drift, np.abs(w - p.targets[k]))
    out["drift"] = drift
    return out


def _last_mids(replay: ColumnarReplay, ends: np.ndarray, symbols: Sequence[int]) -> list[np.ndarray]:
    """Per symbol, the mid of its last tick at or before each index in `ends` (NaN before its first).

    Looks LOOKBACK ticks back from each index first; only a symbol missing from some window costs a
    scan of the whole replay.
    """
    rows = np.arange(ends.shape[0])
    windowed = ends.shape[0] * LOOKBACK <= 1 << 22  # the (samples x LOOKBACK) windows stay small
    back = ends[:, None] - np.arange(LOOKBACK) if windowed else np.zeros((0, LOOKBACK), np.int64)
    seen = replay.sym[np.maximum(back, 0)]
    out = []
    for s in symbols:
        col = np.full(ends.shape[0], np.nan)
        todo = rows
        if windowed:
            hit = (seen == s) & (back >= 0)
            first = hit.argmax(axis=1)
            found = hit[rows, first]
            col[found] = replay.mid[back[rows[found], first[found]]]
            todo = np.flatnonzero(~found & (back[:, -1] >= 0))  # not in a window that starts after tick 0
        if todo.shape[0]:
            pos = replay.pos[s]
            k = np.searchsorted(pos, ends[todo], "right") - 1
            col[todo] = np.where(k >= 0, replay.mid[pos[np.maximum(k, 0)]] if len(pos) else np.nan, np.nan)
        out.append(col)
    return out


def _sample_ends(ts: np.ndarray) -> np.ndarray:
    """The last index of each distinct time, or of each minute when there are more distinct times than minutes."""
    changes = ts[1:] != ts[:-1]
    span_min = int((ts[-1] - ts[0]) // NS_PER_MIN) + 1
    if int(np.count_nonzero(changes)) + 1 <= span_min:
        return np.flatnonzero(np.append(changes, True))
    # the times are sorted: a minute's last tick is the one before the first at or after the next minute
    bounds = np.arange(int(ts[0] // NS_PER_MIN) + 1, int(ts[-1] // NS_PER_MIN) + 1, dtype=np.int64) * NS_PER_MIN
    ends = np.append(np.searchsorted(ts, bounds, "left") - 1, ts.shape[0] - 1)
    return ends[np.append(ends[1:] != ends[:-1], True)]


def max_drawdown(values: np.ndarray) -> float:
    """Largest fall from a running peak, as a fraction."""
    if len(values) == 0:
        return 0.0
    peak = np.maximum.accumulate(values)
    return float(np.max(1.0 - values / peak))


def summarise(engine: Engine, name: str, replay: ColumnarReplay, recorder: Recorder, config: Config,
              eq: dict[str, np.ndarray]) -> dict[str, Any]:
    """summary.json of one portfolio."""
    rt = engine.runtimes[name]
    p = rt.portfolio
    final_value = p.value()
    hodl_value = engine.hodl_value(name)
    mean_value = float(np.mean(eq["value"])) if eq and len(eq["value"]) else final_value
    start_turnover = sum((f.quantity * f.price for pf, f in recorder.sink.fills
                          if pf == name and f.client_order_id[1:17] == _start_id(recorder, name)), Decimal(0))
    traded = rt.turnover - start_turnover
    r = config.rebalance_for(next(c for c in config.all_portfolios() if c.name == name))
    return {
        "portfolio": name,
        "quote": p.quote,
        "config": config.path,
        "mode": rt.spec.mode,
        "band": r.band,
        "window_secs": r.window_secs,
        "capital": str(rt.spec.capital),
        "final_value": final_value,
        "hodl_value": hodl_value,
        "premium": final_value / hodl_value - 1.0 if hodl_value > 0 else 0.0,
        "rebalances": rt.rebalances,
        "intents": rt.intents,
        "fees_paid": float(rt.fees_paid),
        "turnover": float(traded) / mean_value if mean_value > 0 else 0.0,
        "max_drawdown": max_drawdown(eq["value"]) if eq else 0.0,
        "ticks": replay.n,
        "start": iso(int(replay.ts[0])) if replay.n else None,
        "end": iso(int(replay.ts[-1])) if replay.n else None,
        "holdings": {a: str(q) for a, q in p.holdings.items()},
        "targets": {p.assets[k]: p.targets[k] for k in p.members},
        "thresholds": {p.assets[k]: p.thresholds[k] for k in p.members},
        "rejected_ticks": dict(engine.book.rejected),
    }


def _start_id(recorder: Recorder, name: str) -> str:
    for i in recorder.sink.intents:
        if i.portfolio == name and i.reason.value == "start":
            return i.id
    return ""


def write_outputs(out_dir: Path, engine: Engine, recorder: Recorder, summaries: dict[str, dict[str, Any]],
                  equity: dict[str, dict[str, np.ndarray]], *, report: bool) -> None:
    """Every output file, one folder per portfolio when there are several."""
    names = list(engine.runtimes)
    for name in names:
        d = out_dir if len(names) == 1 else out_dir / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "summary.json").write_bytes(orjson.dumps(summaries[name], option=orjson.OPT_INDENT_2) + b"\n")
        with (d / "intents.jsonl").open("wb") as f:
            for intent in recorder.sink.intents:
                if intent.portfolio == name:
                    f.write(orjson.dumps(intent_record(intent)) + b"\n")
        with (d / "fills.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ts", "ts_ns", "intent_id", "client_order_id", "trade_id", "symbol", "side", "quantity",
                        "price", "fee", "fee_asset"])
            for pf, fill in recorder.sink.fills:
                if pf == name:
                    w.writerow([iso(fill.ts_ns), fill.ts_ns, fill.client_order_id[1:17], fill.client_order_id,
                                fill.trade_id, fill.symbol, fill.side.value, fill.quantity, fill.price, fill.fee,
                                fill.fee_asset])
        _write_equity(d / "equity.csv", equity[name])
        if report:
            from ops.report import render_report
            render_report(d)


def _write_equity(path: Path, eq: dict[str, np.ndarray]) -> None:
    cols = ["value", "hodl_value", "drift", *sorted(k for k in eq if k.startswith("w_"))]
    with path.open("w") as f:
        f.write(",".join(["ts", "ts_ns", *cols]) + "\n")
        if not eq:
            return
        row = "%s,%d," + ",".join(["%.10g"] * len(cols)) + "\n"
        ts = eq["ts_ns"]
        rows = zip(iso_many(ts), ts.tolist(), *(eq[c].tolist() for c in cols), strict=True)
        f.write("".join(row % values for values in rows))


def load_inputs(ticks: Sequence[Path], candles: Sequence[tuple[str, Path]]) -> tuple[TickColumns, list[str]]:
    """Read tick files and `SYMBOL=FILE` candle files into one column set; returns notes on dropped rows."""
    from feeds.files import read_candles, read_ticks

    parts = []
    notes = []
    for path in ticks:
        cols, rep = read_ticks(path)
        parts.append(cols)
        if rep.dropped:
            notes.append(f"{path}: dropped {sum(rep.dropped.values())} bad rows {dict(rep.dropped)}")
    for symbol, path in candles:
        cols, rep = read_candles(path, symbol)
        parts.append(cols)
        if rep.dropped:
            notes.append(f"{path}: dropped {sum(rep.dropped.values())} bad rows {dict(rep.dropped)}")
    if len(parts) == 1:
        return parts[0], notes
    return TickColumns.merge(parts), notes
