"""Vectorised parsing of delimited text held in a numpy byte buffer: no Python object per row.

A chunk of a CSV file such as

    1704067200000000000,BTC-USDT,42001.45,42001.46

is split into rows and fields by the positions of newlines and commas. Each field is then read as
one to four little-endian 64-bit words ending at the field's end (the bytes before its start masked)
and parsed with SWAR arithmetic: digit checks, the dot found as a zero byte, eight digits combined
per word in three multiply-shift steps. Floats take Clinger's fast path (a mantissa below 2**53
divided by an exact power of ten is correctly rounded, hence equal to `float(text)`); any other
field (exponent, sign, more than 16 characters, nan) is parsed by `float()` itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from engine.columns import F64, I64

U8 = npt.NDArray[np.uint8]
U64 = npt.NDArray[np.uint64]
B1 = npt.NDArray[np.bool_]

PAD = 32
INT64_MAX = (1 << 63) - 1
MAX_INT_DIGITS = 19
FAST_MANTISSA_MAX = np.uint64(1 << 53)
POW10 = np.array([float(10**k) for k in range(23)], dtype=np.float64)
POW10_U64 = np.array([10**k for k in range(20)], dtype=np.uint64)
_ONES = 0x0101010101010101
_ASCII_ZEROS = np.uint64(0x30 * _ONES)
_LOW_NIBBLES = np.uint64(0x0F * _ONES)
_SEVENTY_SIXES = np.uint64(0x76 * _ONES)
_HIGH_BITS = np.uint64(0x80 * _ONES)
_LOW7 = np.uint64(0x7F * _ONES)
_DOTS = np.uint64(0x2E * _ONES)
_DOT_TO_ZERO = np.uint64(0x2E ^ 0x30)
_BYTES_AFTER = np.uint64(0x0706050403020100)
_M8 = np.uint64(0x00FF00FF00FF00FF)
_M16 = np.uint64(0x0000FFFF0000FFFF)
_KEY_MIX = np.uint64(0x9E3779B97F4A7C15)
# _KEEP[k]: keeps the bytes of a word from its k-th (in memory order) on; the first k belong to the mask
_KEEP = np.array([((1 << 64) - 1) ^ ((1 << (8 * k)) - 1) for k in range(9)], dtype=np.uint64)
_COMMA, _NEWLINE, _CR, _DOT, _ZERO = 44, 10, 13, 46, 48


def padded(data: bytes) -> U8:
    """The bytes as a uint8 array with PAD zero bytes on both sides (so windows never leave it)."""
    return np.frombuffer(b"\0" * PAD + data + b"\0" * PAD, dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class Rows:
    """Field boundaries of the well-formed rows of one chunk; positions index the padded buffer."""

    starts: tuple[I64, ...]
    ends: tuple[I64, ...]
    line_no: I64
    bad_line_no: I64
    n_lines: int

    def __len__(self) -> int:
        return int(self.line_no.shape[0])


def split_rows(buf: U8, ncols: int, first_line_no: int) -> Rows:
    """Rows of a padded chunk whose text ends with a newline; a row without exactly `ncols` fields is bad.

    Empty lines are skipped (they still count for line numbers); a trailing CR is not part of the row.
    """
    body = buf[PAD:buf.shape[0] - PAD]
    special = np.flatnonzero(body < _COMMA + 1) + PAD
    n_rows = special.shape[0] // ncols
    if n_rows and special.shape[0] == n_rows * ncols:
        pattern = b"," * (ncols - 1) + b"\n"
        if buf[special].tobytes() == pattern * n_rows:
            table = special.reshape(n_rows, ncols).T.copy()
            starts = np.empty(n_rows, dtype=np.int64)
            starts[0] = PAD
            starts[1:] = table[-1, :-1] + 1
            line_no = first_line_no + np.arange(n_rows, dtype=np.int64)
            fs = (starts, *(table[j] + 1 for j in range(ncols - 1)))
            return Rows(fs, tuple(table), line_no, np.zeros(0, np.int64), n_rows)
    return _split_rows_general(buf, ncols, first_line_no)


def _split_rows_general(buf: U8, ncols: int, first_line_no: int) -> Rows:
    """split_rows for chunks with empty lines, CRs, odd characters or bad rows."""
    nl = np.flatnonzero(buf == _NEWLINE)
    starts = np.empty_like(nl)
    if nl.shape[0]:
        starts[0] = PAD
        starts[1:] = nl[:-1] + 1
    ends = np.maximum(nl - (buf[np.maximum(nl - 1, 0)] == _CR), starts)
    line_no = first_line_no + np.arange(nl.shape[0], dtype=np.int64)
    commas = np.flatnonzero(buf == _COMMA)
    first = np.searchsorted(commas, starts)
    count = np.diff(first, append=commas.shape[0])
    nonempty = ends > starts
    good = nonempty & (count == ncols - 1)
    bad_line_no = line_no[nonempty & ~good]
    first, starts, ends, line_no = first[good], starts[good], ends[good], line_no[good]
    fs = (starts, *(commas[first + j] + 1 for j in range(ncols - 1)))
    fe = (*(commas[first + j] for j in range(ncols - 1)), ends)
    return Rows(fs, fe, line_no, bad_line_no, int(nl.shape[0]))


def _words(buf: U8, start: I64, end: I64, n_words: int, fill: int) -> U64:
    """(n_words, n): the 8*n_words bytes ending at each `end` as little-endian words, bytes before `start` = fill."""
    size = 8 * n_words
    windows = np.ndarray(shape=(buf.shape[0] - size + 1,), dtype=f"V{size}", buffer=buf, offset=0, strides=(1,))
    block = windows[end - size].view("<u8").reshape(-1, n_words)
    words = block.T.copy()
    n_pad = size - (end - start)
    fill_word = np.uint64(fill * _ONES)
    for j in range(n_words):
        pad_bytes = np.minimum(np.maximum(n_pad - 8 * j, 0), 8)
        low, high = (int(pad_bytes.min()), int(pad_bytes.max())) if pad_bytes.shape[0] else (0, 0)
        if low == high == 0:
            continue
        keep = _KEEP[low] if low == high else _KEEP.take(pad_bytes)
        words[j] = ((words[j] ^ fill_word) & keep) ^ fill_word
    return words


def _n_words(width: I64, most: int) -> int:
    """Words needed for the widest field, at most `most`."""
    widest = int(width.max()) if width.shape[0] else 1
    return max(1, min(most, (widest + 7) // 8))


def _digit_errors(w: U64) -> U64:
    """Non-zero (high bit of a byte set) where some byte of the word is not an ASCII digit."""
    v = w - _ASCII_ZEROS
    return ((v + _SEVENTY_SIXES) | v) & _HIGH_BITS


def _digits_value(w: U64) -> U64:
    """Eight ASCII digits (first byte most significant) -> their value (three multiply-shift steps)."""
    w = ((w & _LOW_NIBBLES) * np.uint64(2561)) >> np.uint64(8)
    w = ((w & _M8) * np.uint64(6553601)) >> np.uint64(16)
    return ((w & _M16) * np.uint64(42949672960001)) >> np.uint64(32)


def _zero_bytes(v: U64) -> U64:
    """The high bit of each zero byte of v (exact, no false positives)."""
    t = (v & _LOW7) + _LOW7
    return ~(t | v | _LOW7)


def _combine(values: U64) -> U64:
    """(k, n) values of 8 digits each, most significant first -> one number per row (wraps past 2**64)."""
    out: U64 = values[0]
    for row in values[1:]:
        out = out * np.uint64(100_000_000) + row
    return out


def parse_uints(buf: U8, start: I64, end: I64, strict: bool = False) -> tuple[I64, B1]:
    """Unsigned decimal integers (int64); unless strict, `int()` decides the rare field that is not plain digits."""
    width = end - start
    words = _words(buf, start, end, _n_words(width, 3), _ZERO)
    # sorted timestamps share their leading digits: a leading word equal on every row is parsed once
    lead = 0
    while lead < words.shape[0] - 1 and bool((words[lead] == words[lead, 0]).all()):
        lead += 1
    errors = np.bitwise_or.reduce(_digit_errors(words[lead:]), axis=0)
    value = _combine(_digits_value(words[lead:]))
    if lead:
        errors |= _digit_errors(words[:lead, :1]).max()
        high = int(_combine(_digits_value(words[:lead, :1]))[0])
        value = value + np.uint64(high * 10 ** (8 * (words.shape[0] - lead)) % (1 << 64))
    simple = (errors == 0) & (width >= 1) & (width <= MAX_INT_DIGITS) & (value <= np.uint64(INT64_MAX))
    out = value.astype(np.int64)
    if strict or bool(simple.all()):
        out[~simple] = 0
        return out, simple
    ok = simple.copy()
    rows = np.flatnonzero(~simple)
    for i, text in zip(rows.tolist(), field_texts(buf, start[rows], end[rows]), strict=True):
        try:
            v = int(text)
        except ValueError:
            continue
        if 0 <= v <= INT64_MAX:
            out[i] = v
            ok[i] = True
    out[~ok] = 0
    return out, ok


def parse_floats(buf: U8, start: I64, end: I64) -> tuple[F64, B1]:
    """Decimal floats, each equal to `float(text)`; ok is False where `float()` refuses the text."""
    width = end - start
    n_words = _n_words(width, 2)
    words = _words(buf, start, end, n_words, _ZERO)
    dots = _zero_bytes(words ^ _DOTS) >> np.uint64(7)  # 0x01 at each dot byte
    n_dots = np.bitwise_count(dots).sum(axis=0, dtype=np.uint8)
    words ^= dots * _DOT_TO_ZERO
    errors = np.bitwise_or.reduce(_digit_errors(words), axis=0)
    mantissa = _combine(_digits_value(words))
    # digits after the dot: 7 - its byte index in its word (a multiply moves that byte of _BYTES_AFTER
    # to the top), plus 8 per later word
    frac_digits = ((dots * _BYTES_AFTER) >> np.uint64(56)).astype(np.uint8).sum(axis=0, dtype=np.uint8)
    if n_words == 2:
        frac_digits += (dots[0] != 0).view(np.uint8) * np.uint8(8)
    np.minimum(frac_digits, np.uint8(15), out=frac_digits)  # more only with several dots: not simple anyway
    scale = POW10_U64.take(frac_digits + np.uint8(1))
    integer = mantissa // scale
    with_dot = integer * POW10_U64.take(frac_digits) + (mantissa - integer * scale)
    mantissa = np.where(n_dots == 1, with_dot, mantissa)
    simple = (errors == 0) & (n_dots <= 1) & (width > n_dots) & (width <= 8 * n_words)
    simple &= mantissa <= FAST_MANTISSA_MAX
    out = mantissa.astype(np.float64) / POW10.take(frac_digits)
    if bool(simple.all()):
        return out, simple
    ok = simple.copy()
    rows = np.flatnonzero(~simple)
    values, parsed = _floats(field_texts(buf, start[rows], end[rows]))
    out[rows] = values
    ok[rows] = parsed
    return out, ok


def _floats(texts: list[bytes]) -> tuple[list[float], list[bool]]:
    """`float()` of each text; NaN and False where it refuses."""
    values: list[float] = []
    parsed: list[bool] = []
    for text in texts:
        try:
            values.append(float(text))
            parsed.append(True)
        except ValueError:
            values.append(np.nan)
            parsed.append(False)
    return values, parsed


def field_texts(buf: U8, start: I64, end: I64) -> list[bytes]:
    """The fields as bytes objects (for the few rows the vectorised parsers leave to Python)."""
    view = buf.data
    return [view[s:e].tobytes() for s, e in zip(start.tolist(), end.tolist(), strict=True)]


def parse_iso_ns(buf: U8, start: I64, end: I64) -> tuple[I64, B1]:
    """UTC ISO 8601 times to ns: `YYYY-MM-DD`, `YYYY-MM-DD[T ]HH:MM:SS`, an optional `.f` (1-9 digits), an optional `Z`."""
    n = start.shape[0]
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.bool_)
    end = end - (buf[end - 1] == ord("Z"))
    width = end - start
    win = np.array(sliding_window_view(buf, PAD)[start])
    np.putmask(win, np.arange(PAD, dtype=np.int64) >= width[:, None], np.uint8(0))
    d = win.astype(np.int64) - _ZERO
    is_digit = (d >= 0) & (d <= 9)

    def num(*cols: int) -> I64:
        v = np.zeros(n, np.int64)
        for c in cols:
            v = v * 10 + d[:, c]
        return v

    date_ok = is_digit[:, [0, 1, 2, 3, 5, 6, 8, 9]].all(axis=1) & (win[:, 4] == ord("-")) & (win[:, 7] == ord("-"))
    has_time = width >= 19
    time_ok = (
        is_digit[:, [11, 12, 14, 15, 17, 18]].all(axis=1)
        & ((win[:, 10] == ord("T")) | (win[:, 10] == ord(" ")))
        & (win[:, 13] == ord(":")) & (win[:, 16] == ord(":"))
    )
    has_frac = width >= 21
    frac_pos = np.arange(20, 29)
    frac_ok = (win[:, 19] == _DOT) & (is_digit[:, 20:29] | (frac_pos >= width[:, None])).all(axis=1)
    with_frac = has_frac & (width <= 29) & frac_ok
    ok = date_ok & ((width == 10) | (has_time & time_ok & ((width == 19) | with_frac)))
    year, month, day = num(0, 1, 2, 3), num(5, 6), num(8, 9)
    hour, minute, sec = (np.where(has_time, x, 0) for x in (num(11, 12), num(14, 15), num(17, 18)))
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
    month_c = np.clip(month, 1, 12)
    days_in_month = month_days[month_c] + ((month_c == 2) & leap)
    ok &= (year >= 1970) & (year <= 2200) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= days_in_month)
    ok &= (hour <= 23) & (minute <= 59) & (sec <= 59)
    frac_digits = np.where(is_digit[:, 20:29] & (frac_pos < width[:, None]), d[:, 20:29], 0)
    frac_ns = np.where(has_frac, frac_digits @ (10 ** np.arange(8, -1, -1, dtype=np.int64)), 0)
    # days since the epoch from the civil date (H. Hinnant's days_from_civil)
    y = year - (month_c <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month_c + np.where(month_c > 2, -3, 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    ns = (days * 86400 + hour * 3600 + minute * 60 + sec) * 1_000_000_000 + frac_ns
    return np.where(ok, ns, 0), ok


class FieldInterner:
    """Stable small-integer codes for short byte strings (symbols), kept across chunks."""

    MAX_WIDTH = 32

    def __init__(self) -> None:
        self.texts: list[bytes] = []
        self._keys = np.zeros(0, dtype=np.uint64)
        self._key_codes = np.zeros(0, dtype=np.int32)
        self._words = [np.zeros(0, dtype=np.uint64) for _ in range(self.MAX_WIDTH // 8)]

    def codes(self, buf: U8, start: I64, end: I64) -> npt.NDArray[np.int32]:
        """Code per field (index into `texts`); -1 for an empty or over-long field."""
        width = end - start
        valid = (width >= 1) & (width <= self.MAX_WIDTH)
        n_words = _n_words(np.where(valid, width, 1), self.MAX_WIDTH // 8)
        words = _words(buf, start, end, n_words, 0)
        key = words[0]
        for w in words[1:]:
            key = (key * _KEY_MIX) ^ w
        codes = self._lookup(key)
        new = np.flatnonzero(valid & (codes < 0))
        if new.shape[0]:
            _, first = np.unique(key[new], return_index=True)
            rows = np.sort(new[first])  # codes in order of first appearance
            self._add(key[rows], list(words[:, rows]), field_texts(buf, start[rows], end[rows]))
            codes = self._lookup(key)
        codes[~valid] = -1
        # the key mixes the words, so a key and all words but the last fix the last one: comparing those
        # with the code's text makes the codes exact
        known_at = np.maximum(codes, 0)
        same = valid.copy()
        for j, w in enumerate(words[:-1]):
            same &= self._words[j - n_words].take(known_at) == w
        for i in np.flatnonzero(valid & ~same).tolist():
            text = bytes(field_texts(buf, start[i:i + 1], end[i:i + 1])[0])
            codes[i] = self.texts.index(text) if text in self.texts else self._append(text, [])
        return codes

    def _lookup(self, key: U64) -> npt.NDArray[np.int32]:
        if self._keys.shape[0] == 0:
            return np.full(key.shape[0], -1, dtype=np.int32)
        at = np.minimum(np.searchsorted(self._keys, key), self._keys.shape[0] - 1)
        return np.where(self._keys.take(at) == key, self._key_codes.take(at), np.int32(-1))

    def _add(self, keys: U64, words: list[U64], texts: list[bytes]) -> None:
        codes = [self._append(t, [int(w[i]) for w in words]) for i, t in enumerate(texts)]
        all_keys = np.concatenate([self._keys, keys])
        all_codes = np.concatenate([self._key_codes, np.array(codes, dtype=np.int32)])
        order = np.argsort(all_keys, kind="stable")
        self._keys, self._key_codes = all_keys[order], all_codes[order]

    def _append(self, text: bytes, words: list[int]) -> int:
        row = [0] * (len(self._words) - len(words)) + words
        self.texts.append(bytes(text))
        self._words = [np.append(column, np.uint64(v)) for column, v in zip(self._words, row, strict=True)]
        return len(self.texts) - 1
