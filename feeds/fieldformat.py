"""Vectorised formatting of tick columns as CSV text (the inverse of `fieldparse`), exact both ways.

Each column becomes a right-aligned byte matrix plus the width of each row's text; `join_rows`
concatenates the columns of every row with separators and keeps only the text bytes, so a million
rows are written without a Python object per row.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.columns import F64, I64

U8 = npt.NDArray[np.uint8]
Field = tuple[U8, I64]
FAST_MANTISSA_MAX = 1 << 53
MAX_DECIMALS = 15
_POW10_F = np.array([float(10**k) for k in range(MAX_DECIMALS + 1)], dtype=np.float64)
_POW10_U = np.array([10**k for k in range(20)], dtype=np.uint64)
_ZERO, _DOT = 48, 46


def _digit_count(v: npt.NDArray[np.uint64]) -> I64:
    """Decimal digits of each value (1 for zero)."""
    count = np.ones(v.shape[0], dtype=np.int64)
    for k in range(1, 20):
        count += v >= _POW10_U[k]
    return count


def _digits(v: npt.NDArray[np.uint64], count: int) -> list[U8]:
    """The `count` lowest decimal digits of each value as ASCII, the units digit first."""
    out: list[U8] = []
    rest = v
    while len(out) < count:
        group = (rest % np.uint64(100_000_000)).astype(np.uint32)
        rest = rest // np.uint64(100_000_000)
        for _ in range(min(8, count - len(out))):
            group, digit = np.divmod(group, np.uint32(10))
            out.append(digit.astype(np.uint8) + np.uint8(_ZERO))
    return out


def format_uints(values: I64) -> Field:
    """Non-negative integers as decimal text (negative ones by `str`)."""
    v = values.astype(np.uint64)
    width = _digit_count(v)
    w = int(width.max()) if width.shape[0] else 1
    out = np.empty((values.shape[0], w), dtype=np.uint8)
    for j, digit in enumerate(_digits(v, w)):
        out[:, w - 1 - j] = digit
    negative = np.flatnonzero(values < 0)
    return _with_texts(out, width, negative, [str(x).encode() for x in values[negative].tolist()])


def format_prices(values: F64) -> Field:
    """Floats as the shortest fixed-point text that reads back exactly (`repr` where none is short).

    A value x gets the fewest decimals d with an integer M <= 2**53 such that M / 10**d == x in
    float arithmetic; then `float("M with a dot d digits from the right")` is x again (Clinger).
    """
    n = values.shape[0]
    decimals = np.full(n, -1, dtype=np.int64)
    mantissa = np.zeros(n, dtype=np.float64)
    todo = np.flatnonzero(np.isfinite(values) & (values > 0.0) & (values < FAST_MANTISSA_MAX))
    for places in range(MAX_DECIMALS + 1):
        if todo.shape[0] == 0:
            break
        x = values[todo]
        scaled = np.rint(x * _POW10_F[places])
        exact = (scaled <= FAST_MANTISSA_MAX) & (scaled / _POW10_F[places] == x)
        decimals[todo[exact]] = places
        mantissa[todo[exact]] = scaled[exact]
        todo = todo[~exact]
    nice = decimals >= 0
    d = np.maximum(decimals, 0)
    m = mantissa.astype(np.uint64)
    digits = _digit_count(m)
    width = np.where(d == 0, digits, np.maximum(digits, d + 1) + 1)
    width = np.where(nice, width, 1)
    w = int(width.max()) if n else 1
    out = np.empty((n, w), dtype=np.uint8)
    digit = _digits(m, min(w, 19))
    has_dot = d > 0
    for j in range(w):
        # j counts from the right: fraction digits, the dot at j == d (d > 0), then the integer digits
        if j == 0:
            out[:, w - 1] = digit[0]
            continue
        ch = np.where(has_dot & (d < j), digit[min(j - 1, len(digit) - 1)], digit[min(j, len(digit) - 1)])
        out[:, w - 1 - j] = np.where(has_dot & (d == j), np.uint8(_DOT), ch)
    others = np.flatnonzero(~nice)
    return _with_texts(out, width, others, [repr(x).encode() for x in values[others].tolist()])


def format_texts(texts: list[bytes], codes: npt.NDArray[np.int32]) -> Field:
    """`texts[code]` for each row."""
    w = max((len(t) for t in texts), default=1)
    table = np.zeros((max(len(texts), 1), w), dtype=np.uint8)
    for i, t in enumerate(texts):
        if t:
            table[i, w - len(t):] = np.frombuffer(t, dtype=np.uint8)
    lengths = np.array([len(t) for t in texts] or [0], dtype=np.int64)
    return table[codes], lengths[codes]


def _with_texts(out: U8, width: I64, rows: npt.NDArray[np.intp], texts: list[bytes]) -> Field:
    """The matrix with some rows replaced by given texts (widened if a text needs it)."""
    if not texts:
        return out, width
    w = max(out.shape[1], max(len(t) for t in texts))
    if w > out.shape[1]:
        out = np.concatenate([np.zeros((out.shape[0], w - out.shape[1]), dtype=np.uint8), out], axis=1)
    for r, t in zip(rows.tolist(), texts, strict=True):
        out[r, w - len(t):] = np.frombuffer(t, dtype=np.uint8)
    width = width.copy()
    width[rows] = [len(t) for t in texts]
    return out, width


def join_rows(fields: list[Field], sep: bytes = b",", end: bytes = b"\n") -> bytes:
    """Each row's field texts joined by `sep` and ended by `end`, all rows concatenated."""
    n = fields[0][0].shape[0]
    blocks: list[U8] = []
    keep: list[npt.NDArray[np.bool_]] = []
    for i, (text, width) in enumerate(fields):
        blocks.append(text)
        keep.append(np.arange(text.shape[1]) >= (text.shape[1] - width)[:, None])
        tail = np.frombuffer(end if i == len(fields) - 1 else sep, dtype=np.uint8)
        blocks.append(np.broadcast_to(tail, (n, tail.shape[0])))
        keep.append(np.ones((n, tail.shape[0]), dtype=np.bool_))
    return np.hstack(blocks)[np.hstack(keep)].tobytes()
