"""Vectorised parsing of delimited text held in a numpy byte buffer: no Python object per row.

A chunk of a CSV file such as

    1704067200000000000,BTC-USDT,42001.45,42001.46

is split into rows and fields by the positions of newlines and commas. Each field is then read as
one to four little-endian 64-bit words ending at the field's end, XOR-ed with ASCII zeros (digits
become 0..9) and the bytes before its start shifted out, and parsed with SWAR arithmetic: non-digit
bytes flagged, the dot found as a zero byte and squeezed out, eight digits combined per word in three
multiply-shift steps. Floats take Clinger's fast path (a mantissa up to 2**53 divided by an exact
power of ten is correctly rounded, hence equal to `float(text)`); any other field (exponent, sign,
more than 16 characters, nan) is parsed by `float()` itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from engine.columns import F64, I64

U8 = npt.NDArray[np.uint8]
U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]
B1 = npt.NDArray[np.bool_]

PAD = 32
INT64_MAX = (1 << 63) - 1
MAX_INT_DIGITS = 19
FAST_MANTISSA_MAX = np.uint64(1 << 53)
POW10 = np.array([float(10**k) for k in range(23)], dtype=np.float64)
_ONES = 0x0101010101010101
_ONES_U64 = np.uint64(_ONES)
_SEVENTY_SIXES = np.uint64(0x76 * _ONES)
_HIGH_BITS = np.uint64(0x80 * _ONES)
_DOT_DIGITS = np.uint64((0x2E ^ 0x30) * _ONES)  # a dot XOR-ed with ASCII zero, in every byte
# (0x01 at byte k) times these, >> 56: the digits after a dot at byte k, plus one, of a 1- or 2-word field
_DIGITS_AFTER_8 = np.uint64(0x0807060504030201)
_DIGITS_AFTER_16 = np.uint64(0x100F0E0D0C0B0A09)
_M8 = np.uint64(0x00FF00FF00FF00FF)
_M16 = np.uint64(0x0000FFFF0000FFFF)
_E8 = np.uint64(100_000_000)
_KEY_MIX = np.uint64(0x9E3779B97F4A7C15)
_HASH_MIX = np.uint64(0xD6E8FEB86659FD93)
_U0, _U1, _U7, _U8, _U56 = (np.uint64(k) for k in (0, 1, 7, 8, 56))
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
    special = np.flatnonzero(body <= _COMMA)
    n_rows = special.shape[0] // ncols
    if (n_rows and special.shape[0] == n_rows * ncols
            and body[special].tobytes() == (b"," * (ncols - 1) + b"\n") * n_rows):
        special += PAD
        ends = special.reshape(n_rows, ncols).T.copy()  # field j's ends in row j
        starts = np.empty((ncols, n_rows), dtype=np.int64)
        starts[0, 0] = PAD
        starts[0, 1:] = ends[-1, :-1] + 1
        np.add(ends[:-1], 1, out=starts[1:])
        line_no = first_line_no + np.arange(n_rows, dtype=np.int64)
        return Rows(tuple(starts), tuple(ends), line_no, np.zeros(0, np.int64), n_rows)
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


def _widths(width: I64) -> tuple[int, int]:
    """The narrowest and widest field (1, 1 when there is none)."""
    return (int(width.min()), int(width.max())) if width.shape[0] else (1, 1)


def _field_words(buf: U8, end: I64, width: I64, n_words: int, fill: int, widths: tuple[int, int]) -> U64:
    """(n_words, n): the 8*n_words bytes ending at each `end` as little-endian words XOR-ed with `fill`
    in every byte, the bytes before the field's start set to 0 (they read as `fill`); `widths` are
    the narrowest and widest field."""
    size = 8 * n_words
    if n_words == 1:
        view = np.ndarray(shape=(buf.shape[0] - 7,), dtype="<u8", buffer=buf, offset=0, strides=(1,))
        words = view[end - 8].reshape(1, -1)
    else:
        windows = np.ndarray(shape=(buf.shape[0] - size + 1,), dtype=f"V{size}", buffer=buf, offset=0, strides=(1,))
        words = windows[end - size].view("<u8").reshape(-1, n_words).T.copy()
    if fill:
        words ^= np.uint64(fill * _ONES)
    narrowest, widest = widths
    bits = width * 8 if narrowest != widest else None
    for j in range(n_words):
        span = 8 * (n_words - j)  # bytes from the start of word j to the field's end
        if narrowest >= span:
            break  # every field covers this word (and the later ones) whole
        if bits is None:
            shift: U64 | np.uint64 = np.uint64(min(8 * (span - narrowest), 64))
        else:
            cut = 8 * span - bits  # bits of word j before the field (64 or more clears the word)
            shift = (np.maximum(cut, 0) if widest > span else cut).view(np.uint64)
        word = words[j]
        np.right_shift(word, shift, out=word)
        np.left_shift(word, shift, out=word)
    return words


def _non_digits(x: U64) -> U64:
    """The high bit of each byte of x (text XOR-ed with ASCII zeros) that is not a digit."""
    return ((x + _SEVENTY_SIXES) | x) & _HIGH_BITS


def _digits_value(x: U64) -> U64:
    """Eight digits 0..9, one per byte, the first byte most significant -> their value."""
    x = (x * np.uint64(2561)) >> _U8
    x = ((x & _M8) * np.uint64(6553601)) >> np.uint64(16)
    return ((x & _M16) * np.uint64(42949672960001)) >> np.uint64(32)


def parse_uints(buf: U8, start: I64, end: I64, strict: bool = False) -> tuple[I64, B1]:
    """Unsigned decimal integers (int64); unless strict, `int()` decides the rare field that is not plain digits."""
    width = end - start
    narrowest, widest = _widths(width)
    n_words = max(1, min(3, (widest + 7) // 8))
    x = _field_words(buf, end, width, n_words, _ZERO, (narrowest, widest))
    # sorted timestamps share their leading digits: a leading word equal on every row is parsed once
    lead = 0
    while lead < n_words - 1 and bool((x[lead] == x[lead, 0]).all()):
        lead += 1
    errors = _non_digits(x[lead])
    value = _digits_value(x[lead])
    for w in x[lead + 1:]:
        errors |= _non_digits(w)
        value = value * _E8 + _digits_value(w)
    if lead:
        errors |= _non_digits(x[:lead, 0]).max()
        high = 0
        for v in _digits_value(x[:lead, 0]).tolist():
            high = high * 100_000_000 + v
        value += np.uint64(high * 10 ** (8 * (n_words - lead)) % (1 << 64))
    simple = errors == 0
    out = value.view(np.int64)
    if narrowest < 1 or widest > MAX_INT_DIGITS:
        simple &= (width >= 1) & (width <= MAX_INT_DIGITS)
    if widest >= MAX_INT_DIGITS:
        simple &= out >= 0  # up to 19 digits nothing wraps: a value past INT64_MAX reads negative
    if bool(simple.all()):
        return out, simple
    rows = np.flatnonzero(~simple)
    out[rows] = 0
    if strict:
        return out, simple
    ok = simple.copy()
    for i, text in zip(rows.tolist(), field_texts(buf, start[rows], end[rows]), strict=True):
        try:
            v = int(text)
        except ValueError:
            continue
        if 0 <= v <= INT64_MAX:
            out[i] = v
            ok[i] = True
    return out, ok


def parse_floats(buf: U8, start: I64, end: I64) -> tuple[F64, B1]:
    """Decimal floats, each equal to `float(text)`; ok is False where `float()` refuses the text."""
    width = end - start
    narrowest, widest = _widths(width)
    n_words = 1 if widest <= 8 else 2
    x = _field_words(buf, end, width, n_words, _ZERO, (narrowest, widest))
    # per word: its first dot (0x80 at the byte; the zero-byte test may also flag a '/' after a dot, but
    # never before the first) and what rules the fast path out: any other non-digit (a second dot too)
    dots = []
    bads = []
    for w in x:
        v = w ^ _DOT_DIGITS
        dot = (v - _ONES_U64) & ~v & _HIGH_BITS
        dot &= _U0 - dot
        bads.append(_non_digits(w) ^ dot)
        dots.append(dot >> _U7)
    bad = bads[0] if n_words == 1 else bads[0] | bads[1]
    # squeeze the dot out: the bytes after it move one place earlier and a 0 enters last (ten times the value)
    if n_words == 1:
        x1, d1 = x[0], dots[0]
        x1 ^= (x1 ^ (x1 >> _U8)) & (_U0 - d1)
        mantissa = _digits_value(x1)
        exponent = (d1 * _DIGITS_AFTER_8) >> _U56
    else:
        (x0, x1), (d0, d1) = x, dots
        bad |= np.minimum(d0, d1)  # a dot in each word
        after_first = _U0 - (d1 | np.minimum(d0, _U1))
        x0 ^= (x0 ^ ((x0 >> _U8) | (x1 << _U56))) & (_U0 - d0)
        x1 ^= (x1 ^ (x1 >> _U8)) & after_first
        mantissa = _digits_value(x0) * _E8 + _digits_value(x1)
        exponent = ((d0 * _DIGITS_AFTER_16) >> _U56) + ((d1 * _DIGITS_AFTER_8) >> _U56)
        bad |= mantissa > FAST_MANTISSA_MAX
    simple = bad == 0
    if narrowest < 2 or widest > 8 * n_words:
        simple &= (width > (exponent != 0)) & (width <= 8 * n_words)  # not "" nor "." nor cut off
    # Clinger: a mantissa up to 2**53 over an exact power of ten is correctly rounded
    out = mantissa.astype(np.float64) / POW10.take(exponent.view(np.int64), mode="clip")
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
    MAX_HASH_BITS = 16

    def __init__(self) -> None:
        self.texts: list[bytes] = []
        self._keys = np.zeros(0, dtype=np.uint64)
        self._key_codes = np.zeros(0, dtype=np.int32)
        self._words = [np.zeros(0, dtype=np.uint64) for _ in range(self.MAX_WIDTH // 8)]
        self._table: tuple[np.uint64, U64, I32] | None = None  # a collision-free hash of the keys

    def codes(self, buf: U8, start: I64, end: I64) -> I32:
        """Code per field (index into `texts`); -1 for an empty or over-long field."""
        width = end - start
        narrowest, widest = _widths(width)
        valid = None if narrowest >= 1 and widest <= self.MAX_WIDTH else (width >= 1) & (width <= self.MAX_WIDTH)
        n_words = max(1, min(self.MAX_WIDTH // 8, (min(widest, self.MAX_WIDTH) + 7) // 8))
        words = _field_words(buf, end, width, n_words, 0, (narrowest, widest))
        key = words[0]
        for w in words[1:]:
            key = (key * _KEY_MIX) ^ w
        codes, complete = self._lookup(key)
        new = np.zeros(0, np.int64) if complete else np.flatnonzero(codes < 0 if valid is None else (codes < 0) & valid)
        if new.shape[0]:
            _, first = np.unique(key[new], return_index=True)
            rows = np.sort(new[first])  # codes in order of first appearance
            self._add(key[rows], list(words[:, rows]), field_texts(buf, start[rows], end[rows]))
            codes = self._lookup(key)[0]
        if valid is not None:
            codes[~valid] = -1
        if n_words == 1 or not self.texts:
            return codes
        # the key mixes the words, so a key and all words but the last fix the last one: comparing those
        # with the code's text makes the codes exact
        known_at = np.maximum(codes, 0)
        same = np.ones(key.shape[0], dtype=np.bool_) if valid is None else valid.copy()
        for j, w in enumerate(words[:-1]):
            same &= self._words[j - n_words].take(known_at) == w
        for i in np.flatnonzero(~same if valid is None else valid & ~same).tolist():
            text = bytes(field_texts(buf, start[i:i + 1], end[i:i + 1])[0])
            codes[i] = self.texts.index(text) if text in self.texts else self._append(text, [])
        return codes

    def _lookup(self, key: U64) -> tuple[I32, bool]:
        """The code of each key (-1 when unknown) and whether every key was known."""
        if self._keys.shape[0] == 0:
            return np.full(key.shape[0], -1, dtype=np.int32), key.shape[0] == 0
        if self._table is not None:
            shift, keys, codes = self._table
            at = ((key * _HASH_MIX) >> shift).view(np.int64)
            found = codes.take(at)
            missed = keys.take(at) != key
            if not bool(missed.any()):
                return found, True
            found[missed] = -1
            return found, False
        at = np.minimum(np.searchsorted(self._keys, key), self._keys.shape[0] - 1)
        found = np.where(self._keys.take(at) == key, self._key_codes.take(at), np.int32(-1))
        return found, False

    def _add(self, keys: U64, words: list[U64], texts: list[bytes]) -> None:
        codes = [self._append(t, [int(w[i]) for w in words]) for i, t in enumerate(texts)]
        all_keys = np.concatenate([self._keys, keys])
        all_codes = np.concatenate([self._key_codes, np.array(codes, dtype=np.int32)])
        order = np.argsort(all_keys, kind="stable")
        self._keys, self._key_codes = all_keys[order], all_codes[order]
        self._table = None
        bits = max(6, int(self._keys.shape[0]).bit_length() + 2)
        while bits <= self.MAX_HASH_BITS and self._table is None:
            shift = np.uint64(64 - bits)
            at = ((self._keys * _HASH_MIX) >> shift).view(np.int64)
            ordered = np.sort(at)
            if bool((ordered[1:] != ordered[:-1]).all()):  # (np.unique would import numpy.ma: 20-80 ms)
                # an empty bucket holds a key that hashes elsewhere, so no key finds it
                table_keys = np.full(1 << bits, self._keys[0], dtype=np.uint64)
                table_codes = np.full(1 << bits, -1, dtype=np.int32)
                table_keys[at] = self._keys
                table_codes[at] = self._key_codes
                self._table = (shift, table_keys, table_codes)
            bits += 2

    def _append(self, text: bytes, words: list[int]) -> int:
        row = [0] * (len(self._words) - len(words)) + words
        self.texts.append(bytes(text))
        self._words = [np.append(column, np.uint64(v)) for column, v in zip(self._words, row, strict=True)]
        return len(self.texts) - 1
