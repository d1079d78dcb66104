"""UTC-aligned calendar intervals (`15m`, `4h`, `1d`, `1w`, `3M`, `1y`) and their boundaries.

Alignment: minutes, hours and days are multiples of their length since the UTC epoch;
weeks (and days in multiples of 7, such as `7d`) are multiples of their length since
Monday 1970-01-05 00:00 UTC; `NM` falls on the 1st of every month whose
`(year * 12 + month - 1) % N == 0` (so `3M` gives Jan/Apr/Jul/Oct); `Ny` on Jan 1 of every
year with `year % N == 0`. Times are int ns since the epoch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Literal, cast, get_args

IntervalUnit = Literal["m", "h", "d", "w", "M", "y"]
INTERVAL_UNITS: tuple[str, ...] = get_args(IntervalUnit)

MINUTE_NS = 60 * 1_000_000_000
HOUR_NS = 60 * MINUTE_NS
DAY_NS = 24 * HOUR_NS
WEEK_NS = 7 * DAY_NS
FIRST_MONDAY_NS = 4 * DAY_NS  # 1970-01-05, the first Monday after the epoch
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_UNIT_NS = {"m": MINUTE_NS, "h": HOUR_NS, "d": DAY_NS, "w": WEEK_NS}
_PATTERN = re.compile(r"([0-9]+)([mhdwMy])")
_FORMS = "N followed by m (minutes), h (hours), d (days), w (weeks), M (months) or y (years), e.g. 15m, 4h, 1d, 1w, 3M, 1y"


class IntervalError(ValueError):
    """An interval text that cannot be parsed, or a boundary outside the calendar's range."""


@dataclass(frozen=True, slots=True)
class Interval:
    """A calendar interval: `count` units of `unit` (`m` minute, `h`, `d`, `w`, `M` month, `y`)."""

    text: str
    unit: IntervalUnit
    count: int

    def __post_init__(self) -> None:
        if self.unit not in INTERVAL_UNITS:
            raise IntervalError(f"interval unit {self.unit!r} is not one of {', '.join(INTERVAL_UNITS)}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise IntervalError(f"interval count must be an integer >= 1, got {self.count!r}")

    @property
    def length_ns(self) -> int | None:
        """The fixed length in ns, or None for months and years (whose length varies)."""
        unit_ns = _UNIT_NS.get(self.unit)
        return None if unit_ns is None else unit_ns * self.count

    @property
    def origin_ns(self) -> int:
        """The boundary that fixed-length intervals count from: the epoch, or a Monday for weeks."""
        length = self.length_ns
        return FIRST_MONDAY_NS if length is not None and length % WEEK_NS == 0 else 0


def parse_interval(text: str) -> Interval:
    """`4h` -> Interval('4h', 'h', 4); `M` is months and `m` minutes (case matters)."""
    if not isinstance(text, str):
        raise IntervalError(f"interval must be text, got {text!r}; use {_FORMS}")
    m = _PATTERN.fullmatch(text.strip())
    if m is None or int(m.group(1)) < 1:
        raise IntervalError(f"interval {text!r} is not valid; use {_FORMS}")
    return Interval(text.strip(), cast(IntervalUnit, m.group(2)), int(m.group(1)))


def next_boundary(interval: Interval, ts_ns: int) -> int:
    """The first boundary strictly after `ts_ns`."""
    length = interval.length_ns
    if length is not None:
        origin = interval.origin_ns
        return origin + ((ts_ns - origin) // length + 1) * length
    day = date.fromordinal(_ordinal(ts_ns))
    n = interval.count
    try:
        if interval.unit == "M":
            index = (day.year * 12 + day.month - 1) // n * n + n
            start = date(index // 12, index % 12 + 1, 1)
        else:
            start = date(day.year // n * n + n, 1, 1)
    except ValueError as e:
        raise IntervalError(f"the {interval.text} boundary after {ts_ns} ns is beyond the calendar ({e})") from e
    return (start.toordinal() - _EPOCH_ORDINAL) * DAY_NS


def boundaries_between(interval: Interval, start_ns: int, end_ns: int) -> list[int]:
    """Every boundary b with start_ns < b <= end_ns, in order (empty when end_ns <= start_ns)."""
    if end_ns <= start_ns:
        return []
    first = next_boundary(interval, start_ns)
    length = interval.length_ns
    if length is not None:
        return list(range(first, end_ns + 1, length))
    out = []
    b = first
    while b <= end_ns:
        out.append(b)
        b = next_boundary(interval, b)
    return out


def _ordinal(ts_ns: int) -> int:
    """The proleptic Gregorian ordinal of the UTC day holding `ts_ns`."""
    ordinal = _EPOCH_ORDINAL + ts_ns // DAY_NS
    if not date.min.toordinal() <= ordinal <= date.max.toordinal():
        raise IntervalError(f"time {ts_ns} ns is outside the calendar (years 1 to 9999)")
    return ordinal
