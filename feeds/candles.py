"""Candle CSV files as ticks: each candle's close, priced at its close time (open time + interval).

    timestamp,open,high,low,close,volume
    2024-01-21T07:00:00Z,97.33,97.61,97.01,97.4,2187.181
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.columns import I64, TickColumns
from engine.types import split_symbol
from feeds.fieldparse import parse_floats, split_rows
from feeds.tick_batches import (
    ReadReport,
    TickAssembler,
    TickFileError,
    header_text,
    iter_line_blocks,
    open_tick_file,
    read_first_line,
)
from feeds.ticks_csv import parse_ms_or_iso

CANDLE_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
INFER_ROWS = 1000


def read_candles(path: str | Path, symbol: str, interval_ns: int | None = None) -> tuple[TickColumns, ReadReport]:
    """Ticks (bid = ask = close, at open time + interval) of a candle CSV, optionally gzipped.

    `timestamp` is the candle's open time: ISO 8601 UTC (`...Z` or `YYYY-MM-DD`) or epoch ms. The
    interval, unless given, is the smallest positive step between the first INFER_ROWS kept candles.
    Only `timestamp` and `close` are parsed; bad rows are dropped and counted as for tick files.
    """
    split_symbol(symbol)
    if interval_ns is not None and interval_ns <= 0:
        raise ValueError(f"interval_ns must be > 0, got {interval_ns}")
    p = Path(path)
    with open_tick_file(p) as stream:
        first = read_first_line(p, stream)
        if not first:
            raise TickFileError(f"{p}: empty file (no header line)")
        header = header_text(first)
        names = [n.strip().lower() for n in header.split(",")]
        if sorted(names) != sorted(CANDLE_COLUMNS):
            raise TickFileError(
                f"{p}: header {header!r} is not a candle header; accepted headers: {','.join(CANDLE_COLUMNS)}"
            )
        ts_col, close_col = names.index("timestamp"), names.index("close")
        asm = TickAssembler()
        code = asm.symbols.code(symbol)
        line_no = 2
        for buf in iter_line_blocks(p, stream):
            rows = split_rows(buf, len(names), line_no)
            line_no += rows.n_lines
            asm.unparseable(rows.bad_line_no)
            if not len(rows):
                continue
            open_ns, ok = parse_ms_or_iso(buf, rows.starts[ts_col], rows.ends[ts_col])
            close, ok_c = parse_floats(buf, rows.starts[close_col], rows.ends[close_col])
            sym = np.full(len(rows), code, dtype=np.int32)
            asm.add(rows.line_no, ok & ok_c, sym, open_ns, None, close, None)
    opens, report = asm.finish()
    if len(opens) == 0:
        return opens, report
    step = interval_ns if interval_ns is not None else infer_interval_ns(p, opens.ts_ns)
    ts = opens.ts_ns + np.int64(step)
    ts.flags.writeable = False
    return TickColumns(opens.symbols, ts, ts, opens.sym, opens.bid, opens.ask), report


def infer_interval_ns(path: Path, open_ns: I64) -> int:
    """The smallest positive difference between consecutive open times among the first INFER_ROWS."""
    steps = np.diff(open_ns[:INFER_ROWS])
    steps = steps[steps > 0]
    if steps.shape[0] == 0:
        raise TickFileError(
            f"{path}: cannot infer the candle interval from {open_ns.shape[0]} distinct open time(s); pass interval_ns"
        )
    return int(steps.min())
