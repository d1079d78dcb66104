"""What every tick-file reader shares: opening (plain or gzip), chunks of whole lines, judging rows, the report."""
from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from engine.columns import F64, I32, I64, TickColumns
from engine.types import split_symbol
from feeds.fieldparse import PAD, U8

UNPARSEABLE = "unparseable"
BAD_SYMBOL = "bad_symbol"
NOT_FINITE = "not_finite"
NOT_POSITIVE = "not_positive"
CROSSED = "crossed"
BACKWARDS = "backwards"
REASONS = (UNPARSEABLE, BAD_SYMBOL, NOT_FINITE, NOT_POSITIVE, CROSSED, BACKWARDS)
FIRST_BAD_KEPT = 10
CHUNK_BYTES = 1 << 20
_SYMBOL_TEXT = re.compile(r"[^\s,;\"'\\]+")


class TickFileError(ValueError):
    """A tick or candle file that cannot be read at all (missing, wrong header, broken compression)."""


@dataclass(frozen=True, slots=True)
class ReadReport:
    """What a reader did: rows read and kept, drops by reason, the first bad rows as (line number, reason)."""

    rows_read: int
    rows_kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    first_bad: list[tuple[int, str]] = field(default_factory=list)

    @property
    def rows_dropped(self) -> int:
        """Rows read but not kept."""
        return self.rows_read - self.rows_kept


def open_tick_file(path: Path) -> BinaryIO:
    """The file as a binary stream, gunzipped when it starts with the gzip magic; TickFileError if it cannot be opened."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise TickFileError(f"{path}: no such file") from None
    except OSError as e:
        raise TickFileError(f"{path}: cannot open ({e.strerror or e})") from None
    with f:
        is_gzip = f.read(2) == b"\x1f\x8b"
    try:
        return gzip.open(path, "rb") if is_gzip else path.open("rb")  # type: ignore[return-value]
    except OSError as e:
        raise TickFileError(f"{path}: cannot open ({e.strerror or e})") from None


def iter_line_blocks(path: Path, stream: BinaryIO) -> Iterator[U8]:
    """The rest of the stream as blocks of whole lines (the last newline added if missing).

    Each block is a uint8 view with PAD zero bytes on both sides (see `fieldparse.padded`); it reuses
    one buffer, so it is valid only until the next block is asked for.
    """
    size = CHUNK_BYTES
    store = bytearray(PAD + size + PAD)
    held = 0
    while True:
        n = _readinto(path, stream, memoryview(store)[PAD + held:PAD + size])
        if n == 0:
            if held == 0:
                return
            store[PAD + held] = 10
            filled = held + 1
        else:
            filled = held + n
        cut = store.rfind(b"\n", PAD, PAD + filled) + 1
        if cut == 0:
            held = filled
            if held == size:
                size *= 2
                store = store[:PAD + held] + bytearray(size - held + PAD)
            continue
        tail = bytes(store[cut:cut + PAD])
        store[cut:cut + PAD] = bytes(PAD)
        yield np.frombuffer(store, dtype=np.uint8, count=cut + PAD)
        store[cut:cut + PAD] = tail
        held = PAD + filled - cut
        store[PAD:PAD + held] = store[cut:cut + held]
        if n == 0:
            return


def uncompressed_size(path: Path) -> int | None:
    """Bytes of the file's content: its size, or for gzip the size its trailer records (mod 2**32)."""
    try:
        with path.open("rb") as f:
            if f.read(2) != b"\x1f\x8b":
                return path.stat().st_size
            f.seek(-4, 2)
            return int.from_bytes(f.read(4), "little")
    except OSError:
        return None


def read_first_line(path: Path, stream: BinaryIO) -> bytes:
    """The first line as raw bytes (with its newline, if any), the stream left after it."""
    try:
        return stream.readline()
    except (OSError, EOFError, zlib.error) as e:
        raise TickFileError(f"{path}: cannot read ({e})") from None


def header_text(line: bytes) -> str:
    """A header line as text: BOM, CR and newline stripped."""
    return line.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r\n").decode("utf-8", "replace")


def _readinto(path: Path, stream: BinaryIO, into: memoryview) -> int:
    """Fill `into` as far as the stream goes; the number of bytes read (0 at the end)."""
    got = 0
    try:
        while got < len(into):
            n = stream.readinto(into[got:])  # type: ignore[attr-defined]
            if not n:
                break
            got += n
    except (OSError, EOFError, zlib.error) as e:
        raise TickFileError(f"{path}: cannot read ({e})") from None
    return got


class SymbolTable:
    """Symbol text -> index into the output's `symbols`; -1 for text that is not a `BASE-QUOTE` symbol."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._codes: dict[bytes | str, int] = {}

    @property
    def symbols(self) -> tuple[str, ...]:
        """The valid symbols in order of first appearance."""
        return tuple(self._index)

    def code(self, raw: bytes | str) -> int:
        """Index of the symbol spelled by `raw` (surrounding whitespace ignored), or -1."""
        cached = self._codes.get(raw)
        if cached is not None:
            return cached
        code = -1
        try:
            text = (raw.decode("ascii") if isinstance(raw, bytes) else raw).strip()
            if text.isascii() and _SYMBOL_TEXT.fullmatch(text):  # the same rule for CSV bytes and JSON strings
                split_symbol(text)
                code = self._index.setdefault(text, len(self._index))
        except (UnicodeDecodeError, ValueError):
            pass
        if len(self._codes) < 100_000:
            self._codes[raw] = code
        return code


class TickAssembler:
    """Judges parsed rows batch by batch (first failing rule wins), tallies drops, keeps the good rows."""

    def __init__(self) -> None:
        self.symbols = SymbolTable()
        self._rows_read = 0
        self._counts = np.zeros(len(REASONS) + 1, dtype=np.int64)
        self._first_bad: list[tuple[int, int]] = []
        self._last_ts = np.iinfo(np.int64).min
        self._columns = {
            "ts": _Column(np.int64), "sym": _Column(np.int32), "bid": _Column(np.float64),
        }

    def reserve(self, rows: int) -> None:
        """Expect about this many kept rows in all (saves growing the columns)."""
        for column in self._columns.values():
            column.reserve(rows)

    def unparseable(self, line_no: I64) -> None:
        """Rows that could not even be split into fields."""
        self._rows_read += int(line_no.shape[0])
        self._counts[1] += line_no.shape[0]
        self._note_bad(line_no, np.ones(line_no.shape[0], dtype=np.int8))

    def add(
        self, line_no: I64, parsed: npt.NDArray[np.bool_], sym: I32, ts: I64, te: I64 | None,
        bid: F64, ask: F64 | None,
    ) -> None:
        """One batch of rows in file order; `te` None means event time = `ts`, `ask` None means ask = bid."""
        n = int(line_no.shape[0])
        self._rows_read += n
        ask_ = bid if ask is None else ask
        # the common case first: every row good (0 < bid <= ask < inf rules out NaN too) and in time order
        if n and self._all_good(parsed, sym, ts, bid, ask_):
            self._last_ts = int(ts[-1])
            self._keep(ts, te, sym, bid, ask)
            return
        reason = np.where(parsed, 0, 1).astype(np.int8)
        for code, bad in (
            (2, sym < 0),
            (3, ~(np.isfinite(bid) & np.isfinite(ask_))),
            (4, (bid <= 0.0) | (ask_ <= 0.0)),
            (5, bid > ask_),
        ):
            reason[(reason == 0) & bad] = code
        candidates = np.flatnonzero(reason == 0)
        if candidates.shape[0]:
            cand_ts = ts[candidates]
            before = np.maximum.accumulate(np.concatenate(([self._last_ts], cand_ts[:-1])))
            reason[candidates[cand_ts < before]] = 6
            self._last_ts = max(self._last_ts, int(cand_ts.max()))
        self._counts += np.bincount(reason, minlength=len(REASONS) + 1)
        bad_rows = np.flatnonzero(reason)
        if bad_rows.shape[0]:
            self._note_bad(line_no[bad_rows[:FIRST_BAD_KEPT]], reason[bad_rows[:FIRST_BAD_KEPT]])
        keep = reason == 0
        self._keep(ts[keep], None if te is None else te[keep], sym[keep], bid[keep], None if ask is None else ask[keep])

    def _all_good(self, parsed: npt.NDArray[np.bool_], sym: I32, ts: I64, bid: F64, ask: F64) -> bool:
        return (
            bool(parsed.all()) and int(sym.min()) >= 0 and int(ts[0]) >= self._last_ts
            and bool((ts[1:] >= ts[:-1]).all()) and bool(((bid > 0.0) & (bid <= ask) & (ask < np.inf)).all())
        )

    def _keep(self, ts: I64, te: I64 | None, sym: I32, bid: F64, ask: F64 | None) -> None:
        cols = self._columns
        for name, values, default in (("te", te, "ts"), ("ask", ask, "bid")):
            if values is not None and name not in cols:  # first batch with its own event times / asks
                cols[name] = _Column(cols[default].data.dtype.type, cols[default].data.shape[0])
                cols[name].extend(cols[default].values())
            if name in cols:
                cols[name].extend(values if values is not None else (ts if name == "te" else bid))
        cols["ts"].extend(ts)
        cols["sym"].extend(sym)
        cols["bid"].extend(bid)

    def _note_bad(self, line_no: I64, reason: npt.NDArray[np.int8]) -> None:
        pairs = self._first_bad + list(zip(line_no.tolist(), reason.tolist(), strict=True))
        self._first_bad = sorted(pairs)[:FIRST_BAD_KEPT]

    def report(self, rows_kept: int) -> ReadReport:
        """The report so far."""
        dropped = {r: int(c) for r, c in zip(REASONS, self._counts[1:].tolist(), strict=True) if c}
        first_bad = [(line, REASONS[code - 1]) for line, code in self._first_bad]
        return ReadReport(self._rows_read, rows_kept, dropped, first_bad)

    def finish(self) -> tuple[TickColumns, ReadReport]:
        """The kept rows as read-only TickColumns (event times = ts, ask = bid where the file had none)."""
        arrays = {name: column.final() for name, column in self._columns.items()}
        ts, bid = arrays["ts"], arrays["bid"]
        cols = TickColumns(
            self.symbols.symbols, ts, arrays.get("te", ts), arrays["sym"], bid, arrays.get("ask", bid)
        )
        return cols, self.report(len(cols))


class _Column:
    """One output column filled batch by batch in place, grown by doubling (no parts to concatenate)."""

    def __init__(self, dtype: type[np.generic], capacity: int = 1 << 16) -> None:
        self.data: npt.NDArray[Any] = np.empty(capacity, dtype=dtype)
        self.size = 0

    def reserve(self, rows: int) -> None:
        """Make room for `rows` in all."""
        if rows > self.data.shape[0]:
            self._grow(rows)

    def extend(self, values: npt.NDArray[Any]) -> None:
        """Append a batch."""
        end = self.size + values.shape[0]
        if end > self.data.shape[0]:
            self._grow(max(end, 2 * self.data.shape[0]))
        self.data[self.size:end] = values
        self.size = end

    def values(self) -> npt.NDArray[Any]:
        """The rows so far (a view)."""
        return self.data[:self.size]

    def final(self) -> npt.NDArray[Any]:
        """The rows, read-only; copied only when much of the capacity is unused (untouched pages cost no RAM)."""
        out = self.values()
        if self.data.shape[0] > self.size * 5 // 4 + (1 << 16):
            out = out.copy()
        out.flags.writeable = False
        return out

    def _grow(self, capacity: int) -> None:
        grown = np.empty(capacity, dtype=self.data.dtype)
        grown[:self.size] = self.data[:self.size]
        self.data = grown
