"""Tick JSON-lines files (the general, slower path): one object per line, parsed with orjson.

    {"ts_recv_ns":1704067200000000000,"ts_event_ns":1704067199990000000,"symbol":"BTC-USDT","bid":42001.45,"ask":42001.46}
    {"ts":"2024-01-01T00:00:00.123Z","symbol":"ETH-USDT","price":"2300.5"}
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import orjson

from engine.columns import TickColumns
from engine.types import Tick
from feeds.fieldparse import INT64_MAX, PAD, padded, parse_iso_ns
from feeds.tick_batches import ReadReport, TickAssembler, TickFileError

ACCEPTED_OBJECTS = (
    '{"symbol", "bid", "ask" | "price", "ts_ns" | "ts_recv_ns" | "ts" (epoch ms or ISO 8601 UTC), '
    'optional "ts_event_ns"}'
)
TIME_KEYS = ("ts_recv_ns", "ts_ns", "ts")
MS_TO_NS = 1_000_000
WRITE_BATCH = 10_000


class _BadRow(Exception):
    """A row that is dropped as unparseable."""


def _ns(value: object) -> int:
    """A non-negative integer time (JSON number or digit string)."""
    if isinstance(value, bool):
        raise _BadRow
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= INT64_MAX:
        return value
    raise _BadRow


def _price(value: object) -> float:
    """A price as `float()` reads it (JSON number or string)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _BadRow
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise _BadRow from None


def _first_object_check(path: Path, line: bytes, obj: object) -> None:
    """The first line plays the header's part: it must be a tick object."""
    if not isinstance(obj, dict) or "symbol" not in obj or not any(k in obj for k in TIME_KEYS) or not (
        ("bid" in obj and "ask" in obj) or "price" in obj
    ):
        found = sorted(obj) if isinstance(obj, dict) else line[:80].decode("utf-8", "replace")
        raise TickFileError(f"{path}: first line {found!r} is not a tick object; accepted: {ACCEPTED_OBJECTS}")


def read_ticks_jsonl(path: Path, chunks: Iterator[bytes]) -> tuple[TickColumns, ReadReport]:
    """Ticks of a JSON-lines file; chunks are blocks of whole lines (the first may lack its newline)."""
    asm = TickAssembler()
    checked = False
    first_line_no = 1
    for chunk in chunks:
        lines = chunk.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        line_nos: list[int] = []
        oks: list[bool] = []
        syms: list[int] = []
        ts: list[int] = []
        te: list[int] = []
        bids: list[float] = []
        asks: list[float] = []
        iso: list[tuple[int, bytes]] = []
        for k, line in enumerate(lines, start=first_line_no):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                obj = None
            if not checked:
                _first_object_check(path, line, obj)
                checked = True
            line_nos.append(k)
            row = len(oks)
            try:
                if not isinstance(obj, dict):
                    raise _BadRow
                time_key = next((t for t in TIME_KEYS if t in obj), None)
                if time_key is None:
                    raise _BadRow
                t = obj[time_key]
                if time_key != "ts":
                    t_ns = _ns(t)
                elif isinstance(t, str) and not (t.isascii() and t.isdigit()):
                    iso.append((row, t.encode("utf-8", "replace")))
                    t_ns = 0
                else:
                    t_ms = _ns(t)
                    if t_ms > INT64_MAX // MS_TO_NS:
                        raise _BadRow
                    t_ns = t_ms * MS_TO_NS
                e_ns = _ns(obj["ts_event_ns"]) if "ts_event_ns" in obj else -1
                if "price" in obj:
                    bid = ask = _price(obj["price"])
                else:
                    bid, ask = _price(obj["bid"]), _price(obj["ask"])
                sym_raw = obj["symbol"]
                sym = asm.symbols.code(sym_raw) if isinstance(sym_raw, str) else -1
            except (_BadRow, KeyError):
                oks.append(False)
                syms.append(-1)
                ts.append(0)
                te.append(0)
                bids.append(0.0)
                asks.append(0.0)
                continue
            oks.append(True)
            syms.append(sym)
            ts.append(t_ns)
            te.append(e_ns)
            bids.append(bid)
            asks.append(ask)
        first_line_no += len(lines)
        ts_a = np.array(ts, dtype=np.int64)
        ok_a = np.array(oks, dtype=np.bool_)
        if iso:
            rows = np.array([r for r, _ in iso], dtype=np.int64)
            iso_ns, iso_ok = parse_iso_texts([text for _, text in iso])
            ts_a[rows] = iso_ns
            ok_a[rows] &= iso_ok
        te_a = np.array(te, dtype=np.int64)
        te_a = np.where(te_a < 0, ts_a, te_a)
        asm.add(
            np.array(line_nos, dtype=np.int64), ok_a, np.array(syms, dtype=np.int32), ts_a, te_a,
            np.array(bids, dtype=np.float64), np.array(asks, dtype=np.float64),
        )
    return asm.finish()


def parse_iso_texts(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """ISO 8601 UTC texts to ns, with the same rules as the CSV reader."""
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    buf = padded(b"".join(texts))
    ends = np.cumsum(lengths) + PAD
    starts = ends - lengths
    return parse_iso_ns(buf, starts, ends)


def write_ticks_jsonl_stream(out: BinaryIO, ticks: Iterable[Tick]) -> None:
    """Ticks as JSON lines with both times; floats are written shortest-exact by orjson."""
    batch: list[bytes] = []
    for t in ticks:
        batch.append(orjson.dumps({
            "ts_recv_ns": t.ts_recv_ns, "ts_event_ns": t.ts_event_ns,
            "symbol": t.symbol, "bid": t.bid, "ask": t.ask,
        }))
        if len(batch) >= WRITE_BATCH:
            out.write(b"\n".join(batch) + b"\n")
            batch.clear()
    if batch:
        out.write(b"\n".join(batch) + b"\n")
