"""Tick and candle files: read them into `TickColumns` (bad rows counted and dropped), write them back exactly.

Formats, chosen by the file suffix and first line (gzip is recognised by its magic bytes):
- CSV `ts_ns,symbol,bid,ask` (the fast path), or with `ts_recv_ns`/`ts_event_ns`, or `ts` (epoch ms or
  ISO 8601 UTC), or `price` instead of `bid,ask`;
- JSON lines (`.jsonl`, `.ndjson`, or a first line starting with `{`);
- candles `timestamp,open,high,low,close,volume` through `read_candles`.
"""
from __future__ import annotations

import gzip
import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from engine.columns import TickColumns
from engine.types import Tick
from feeds.candles import read_candles
from feeds.fieldformat import format_prices, format_texts, format_uints, join_rows
from feeds.fieldparse import PAD
from feeds.tick_batches import (
    REASONS,
    ReadReport,
    TickFileError,
    header_text,
    iter_line_blocks,
    open_tick_file,
    read_first_line,
)
from feeds.ticks_csv import read_ticks_csv
from feeds.ticks_jsonl import read_ticks_jsonl, write_ticks_jsonl_stream

__all__ = [
    "REASONS",
    "ReadReport",
    "TickFileError",
    "read_candles",
    "read_ticks",
    "write_ticks_csv",
    "write_ticks_jsonl",
]

JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_WRITE_ROWS = 65_536
GZIP_LEVEL = 6


def read_ticks(path: str | Path) -> tuple[TickColumns, ReadReport]:
    """Ticks of a CSV or JSON-lines file (optionally gzipped), sorted by engine time, with a report of drops."""
    p = Path(path)
    with open_tick_file(p) as stream:
        first = read_first_line(p, stream)
        name = p.name.lower().removesuffix(".gz")
        if name.endswith(JSONL_SUFFIXES) or first.lstrip().startswith(b"{"):
            tail = (bytes(b[PAD:b.shape[0] - PAD]) for b in iter_line_blocks(p, stream))
            return read_ticks_jsonl(p, itertools.chain([first], tail))
        if not first:
            raise TickFileError(f"{p}: empty file (no header line)")
        return read_ticks_csv(p, header_text(first), iter_line_blocks(p, stream))


@contextmanager
def _open_for_write(path: Path) -> Iterator[BinaryIO]:
    """A binary stream to `path`, gzip (reproducible: no name, mtime 0) when the name ends with .gz."""
    with path.open("wb") as raw:
        if path.name.lower().endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) as z:
                yield z  # type: ignore[misc]
        else:
            yield raw


def write_ticks_csv(path: str | Path, cols: TickColumns) -> None:
    """Columns as `ts_ns,symbol,bid,ask` CSV (`ts_ns,ts_event_ns,...` when event times differ).

    Floats are written as the shortest fixed-point text that reads back to the same float (`repr`
    where that would be long), so a read gives the columns back bit for bit.
    """
    p = Path(path)
    with_event = bool(np.any(cols.ts_event_ns != cols.ts_ns))
    names = [s.encode() for s in cols.symbols]
    with _open_for_write(p) as out:
        out.write(b"ts_ns,ts_event_ns,symbol,bid,ask\n" if with_event else b"ts_ns,symbol,bid,ask\n")
        for a in range(0, len(cols), CSV_WRITE_ROWS):
            b = a + CSV_WRITE_ROWS
            fields = [format_uints(cols.ts_ns[a:b])]
            if with_event:
                fields.append(format_uints(cols.ts_event_ns[a:b]))
            fields += [
                format_texts(names, cols.sym[a:b]),
                format_prices(cols.bid[a:b]),
                format_prices(cols.ask[a:b]),
            ]
            out.write(join_rows(fields))


def write_ticks_jsonl(path: str | Path, ticks: Iterable[Tick]) -> None:
    """Ticks as JSON lines with `ts_recv_ns` and `ts_event_ns` (gzip when the name ends with .gz)."""
    with _open_for_write(Path(path)) as out:
        write_ticks_jsonl_stream(out, ticks)
