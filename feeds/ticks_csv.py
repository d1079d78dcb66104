"""Tick CSV files: the header picks the columns, chunks of lines are parsed column-wise with numpy.

    ts_ns,symbol,bid,ask
    1704067200000000000,BTC-USDT,42001.45,42001.46
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from engine.columns import F64, I64, TickColumns
from feeds.fieldparse import PAD, U8, FieldInterner, Rows, parse_floats, parse_iso_ns, parse_uints, split_rows
from feeds.tick_batches import ReadReport, TickAssembler, TickFileError, uncompressed_size

TIME_COLUMNS = ("ts_recv_ns", "ts_ns", "ts")
KNOWN_COLUMNS = frozenset(("ts_ns", "ts_recv_ns", "ts_event_ns", "ts", "symbol", "bid", "ask", "price"))
ACCEPTED_HEADERS = (
    "ts_ns,symbol,bid,ask | ts_recv_ns,ts_event_ns,symbol,bid,ask | ts,symbol,bid,ask "
    "(ts: epoch ms or ISO 8601 UTC); any of them with price instead of bid,ask; ts_event_ns optional"
)
MS_TO_NS = 1_000_000
_MAX_MS = np.iinfo(np.int64).max // MS_TO_NS


@dataclass(frozen=True, slots=True)
class TickLayout:
    """Where each role sits in a tick CSV row; `time` names the column that gives engine time."""

    ncols: int
    time: str
    time_col: int
    event_col: int | None
    symbol_col: int
    bid_col: int
    ask_col: int | None


def tick_layout(path: Path, header: str) -> TickLayout:
    """The layout named by a header, or TickFileError naming the file, the header and the accepted ones."""
    names = [n.strip().lower() for n in header.split(",")]
    col = {n: i for i, n in enumerate(names)}

    def fail(why: str) -> TickFileError:
        return TickFileError(f"{path}: header {header!r} {why}; accepted headers: {ACCEPTED_HEADERS}")

    unknown = [n for n in names if n not in KNOWN_COLUMNS]
    if unknown:
        raise fail(f"has unknown column(s) {', '.join(map(repr, unknown))}")
    if len(col) != len(names):
        raise fail("repeats a column")
    time = next((t for t in TIME_COLUMNS if t in col), None)
    if time is None:
        raise fail("has no time column (ts_ns, ts_recv_ns or ts)")
    if "symbol" not in col:
        raise fail("has no symbol column")
    if "price" in col:
        if "bid" in col or "ask" in col:
            raise fail("has price together with bid/ask")
        bid_col, ask_col = col["price"], None
    elif "bid" in col and "ask" in col:
        bid_col, ask_col = col["bid"], col["ask"]
    else:
        raise fail("has no price (bid,ask or price)")
    return TickLayout(len(names), time, col[time], col.get("ts_event_ns"), col["symbol"], bid_col, ask_col)


def parse_ms_or_iso(buf: U8, start: I64, end: I64) -> tuple[I64, np.ndarray]:
    """Times given as epoch milliseconds (plain digits) or ISO 8601 UTC text, to ns."""
    ms, ok = parse_uints(buf, start, end, strict=True)
    ok &= ms <= _MAX_MS
    ns = ms * MS_TO_NS
    iso_rows = np.flatnonzero(~ok)
    if iso_rows.shape[0]:
        iso_ns, iso_ok = parse_iso_ns(buf, start[iso_rows], end[iso_rows])
        ns[iso_rows] = iso_ns
        ok[iso_rows] = iso_ok
    return ns, ok


def parse_time_column(buf: U8, rows: Rows, col: int, kind: str) -> tuple[I64, np.ndarray]:
    """Engine or event times in ns from column `col`: integer ns, or (kind `ts`) ms / ISO."""
    if kind == "ts":
        return parse_ms_or_iso(buf, rows.starts[col], rows.ends[col])
    return parse_uints(buf, rows.starts[col], rows.ends[col])


class SymbolColumn:
    """Symbol fields -> output symbol indices (-1 for a bad symbol), interning the text across chunks."""

    def __init__(self, asm: TickAssembler) -> None:
        self._asm = asm
        self._interner = FieldInterner()
        self._lut = np.full(1, -1, dtype=np.int32)

    def codes(self, buf: U8, start: I64, end: I64) -> npt.NDArray[np.int32]:
        """Output symbol index per row."""
        local = self._interner.codes(buf, start, end)
        texts = self._interner.texts
        if len(texts) + 1 > self._lut.shape[0]:
            known = self._lut[:-1].tolist()
            known += [self._asm.symbols.code(t) for t in texts[len(known):]]
            self._lut = np.array([*known, -1], dtype=np.int32)
        return self._lut[local]


def read_ticks_csv(path: Path, header: str, blocks: Iterator[U8]) -> tuple[TickColumns, ReadReport]:
    """Ticks of a CSV file whose header line has been read; blocks are padded buffers of whole lines."""
    layout = tick_layout(path, header)
    asm = TickAssembler()
    symbols = SymbolColumn(asm)
    line_no = 2
    total_bytes = uncompressed_size(path)
    for buf in blocks:
        rows = split_rows(buf, layout.ncols, line_no)
        if line_no == 2 and total_bytes and len(rows):
            asm.reserve(int(len(rows) * total_bytes / (buf.shape[0] - 2 * PAD) * 1.05) + 1024)
        line_no += rows.n_lines
        asm.unparseable(rows.bad_line_no)
        if not len(rows):
            continue
        ts, ok = parse_time_column(buf, rows, layout.time_col, layout.time)
        te: I64 | None = None
        if layout.event_col is not None:
            te, ok_e = parse_uints(buf, rows.starts[layout.event_col], rows.ends[layout.event_col])
            ok &= ok_e
        bid, ok_b = parse_floats(buf, rows.starts[layout.bid_col], rows.ends[layout.bid_col])
        ok &= ok_b
        ask: F64 | None = None
        if layout.ask_col is not None:
            ask, ok_a = parse_floats(buf, rows.starts[layout.ask_col], rows.ends[layout.ask_col])
            ok &= ok_a
        sym = symbols.codes(buf, rows.starts[layout.symbol_col], rows.ends[layout.symbol_col])
        asm.add(rows.line_no, ok, sym, ts, te, bid, ask)
    return asm.finish()
