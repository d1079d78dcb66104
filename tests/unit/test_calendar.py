"""Calendar intervals: parsing, UTC alignment of boundaries, boundaries in a range."""
from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from strategies.calendar import (
    DAY_NS,
    HOUR_NS,
    MINUTE_NS,
    Interval,
    IntervalError,
    boundaries_between,
    next_boundary,
    parse_interval,
)


def ns(*args: int) -> int:
    """UTC calendar time -> ns since the epoch."""
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1_000_000_000  # type: ignore[misc]


def utc(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=UTC)


def nb(text: str, *when: int) -> datetime:
    return utc(next_boundary(parse_interval(text), ns(*when)))


@pytest.mark.parametrize(
    ("text", "unit", "count"),
    [("15m", "m", 15), ("1h", "h", 1), ("4h", "h", 4), ("1d", "d", 1), ("7d", "d", 7), ("1w", "w", 1),
     ("1M", "M", 1), ("3M", "M", 3), ("1y", "y", 1), (" 2w ", "w", 2)],
)
def test_parse_interval(text: str, unit: str, count: int) -> None:
    assert parse_interval(text) == Interval(text.strip(), unit, count)  # type: ignore[arg-type]


def test_month_and_minute_are_case_sensitive() -> None:
    assert parse_interval("1M").unit == "M"
    assert parse_interval("1m").unit == "m"
    assert parse_interval("1m").length_ns == MINUTE_NS
    assert parse_interval("1M").length_ns is None


@pytest.mark.parametrize("text", ["", "h", "0h", "1H", "1D", "1.5h", "-1h", "1 h", "1hr", "1s", "1Y", "１h"])
def test_parse_interval_errors_say_what_was_given_and_what_is_allowed(text: str) -> None:
    with pytest.raises(IntervalError, match=r"interval '.*' is not valid; use N followed by m \(minutes\)"):
        parse_interval(text)


def test_interval_validates_its_fields() -> None:
    with pytest.raises(IntervalError):
        Interval("0h", "h", 0)
    with pytest.raises(IntervalError):
        Interval("1s", "s", 1)  # type: ignore[arg-type]


def test_minutes_and_hours_align_to_the_epoch() -> None:
    assert nb("15m", 2024, 3, 10, 12, 7, 30) == datetime(2024, 3, 10, 12, 15, tzinfo=UTC)
    assert nb("1h", 2024, 3, 10, 12, 59, 59) == datetime(2024, 3, 10, 13, tzinfo=UTC)
    assert nb("4h", 2024, 3, 10, 1) == datetime(2024, 3, 10, 4, tzinfo=UTC)
    assert nb("4h", 2024, 12, 31, 22) == datetime(2025, 1, 1, tzinfo=UTC)


def test_next_boundary_is_strictly_after() -> None:
    b = ns(2024, 3, 10, 12)
    assert next_boundary(parse_interval("1h"), b) == b + HOUR_NS
    assert next_boundary(parse_interval("1h"), b - 1) == b
    assert next_boundary(parse_interval("1d"), ns(2024, 3, 10)) == ns(2024, 3, 11)
    assert nb("1M", 2024, 3, 1) == datetime(2024, 4, 1, tzinfo=UTC)
    assert nb("1y", 2024, 1, 1) == datetime(2025, 1, 1, tzinfo=UTC)


def test_days_cross_month_and_leap_day() -> None:
    assert nb("1d", 2024, 2, 28, 23, 59) == datetime(2024, 2, 29, tzinfo=UTC)
    assert nb("1d", 2024, 2, 29, 0, 0, 1) == datetime(2024, 3, 1, tzinfo=UTC)
    assert nb("1d", 2023, 2, 28, 5) == datetime(2023, 3, 1, tzinfo=UTC)
    # 2d counts from 1970-01-01: 2024-01-01 is day 19723 (odd), so boundaries fall on even days.
    assert nb("2d", 2024, 1, 1, 5) == datetime(2024, 1, 2, tzinfo=UTC)


def test_weeks_align_to_monday() -> None:
    # 2024-03-10 is a Sunday; 2024-03-11 a Monday.
    assert nb("1w", 2024, 3, 10, 23) == datetime(2024, 3, 11, tzinfo=UTC)
    assert nb("7d", 2024, 3, 10, 23) == datetime(2024, 3, 11, tzinfo=UTC)
    assert nb("1w", 2024, 3, 11) == datetime(2024, 3, 18, tzinfo=UTC)
    assert nb("1w", 2024, 12, 31) == datetime(2025, 1, 6, tzinfo=UTC)
    for text in ("1w", "7d", "2w", "14d", "4w"):
        assert nb(text, 2024, 5, 17).weekday() == 0


def test_two_weeks_count_from_the_first_monday() -> None:
    first = next_boundary(parse_interval("2w"), 0)
    assert utc(first) == datetime(1970, 1, 5, tzinfo=UTC)
    got = next_boundary(parse_interval("2w"), ns(2024, 3, 11))
    assert (got - first) % (14 * DAY_NS) == 0
    assert 0 < got - ns(2024, 3, 11) <= 14 * DAY_NS
    assert next_boundary(parse_interval("14d"), ns(2024, 3, 11)) == got


def test_months_align_to_the_first() -> None:
    assert nb("1M", 2024, 1, 31, 23, 59, 59) == datetime(2024, 2, 1, tzinfo=UTC)
    assert nb("1M", 2024, 2, 29, 12) == datetime(2024, 3, 1, tzinfo=UTC)
    assert nb("1M", 2024, 12, 31, 23) == datetime(2025, 1, 1, tzinfo=UTC)
    assert nb("1M", 2024, 4, 30) == datetime(2024, 5, 1, tzinfo=UTC)


def test_quarters_fall_on_jan_apr_jul_oct() -> None:
    assert nb("3M", 2024, 1, 1) == datetime(2024, 4, 1, tzinfo=UTC)
    assert nb("3M", 2024, 2, 15) == datetime(2024, 4, 1, tzinfo=UTC)
    assert nb("3M", 2024, 6, 30, 23) == datetime(2024, 7, 1, tzinfo=UTC)
    assert nb("3M", 2024, 11, 5) == datetime(2025, 1, 1, tzinfo=UTC)
    got = boundaries_between(parse_interval("3M"), ns(2024, 1, 1), ns(2025, 1, 1))
    assert [utc(b).month for b in got] == [4, 7, 10, 1]
    assert [utc(b).month for b in boundaries_between(parse_interval("6M"), ns(2023, 3, 1), ns(2024, 12, 1))] == [
        7, 1, 7]


def test_years_align_to_jan_first() -> None:
    assert nb("1y", 2024, 12, 31, 23, 59, 59) == datetime(2025, 1, 1, tzinfo=UTC)
    assert nb("2y", 2024, 6, 1) == datetime(2026, 1, 1, tzinfo=UTC)
    assert nb("2y", 2025, 6, 1) == datetime(2026, 1, 1, tzinfo=UTC)
    assert nb("4y", 2024, 2, 29) == datetime(2028, 1, 1, tzinfo=UTC)


def test_before_the_epoch() -> None:
    assert nb("1h", 1969, 12, 31, 23, 30) == datetime(1970, 1, 1, tzinfo=UTC)
    assert nb("1w", 1969, 12, 31) == datetime(1970, 1, 5, tzinfo=UTC)
    assert nb("1M", 1969, 12, 15) == datetime(1970, 1, 1, tzinfo=UTC)


def test_beyond_the_calendar_is_an_error() -> None:
    with pytest.raises(IntervalError, match="beyond the calendar"):
        next_boundary(parse_interval("1y"), ns(9999, 6, 1))
    with pytest.raises(IntervalError, match="outside the calendar"):
        next_boundary(parse_interval("1M"), 10**30)


def test_boundaries_between_is_half_open() -> None:
    h = parse_interval("1h")
    start = ns(2024, 3, 10, 12)
    got = boundaries_between(h, start, start + 3 * HOUR_NS)
    assert got == [start + HOUR_NS, start + 2 * HOUR_NS, start + 3 * HOUR_NS]
    assert boundaries_between(h, start, start + HOUR_NS - 1) == []
    assert boundaries_between(h, start, start) == []
    assert boundaries_between(h, start, start - 1) == []


def test_boundaries_between_months_over_a_leap_year() -> None:
    got = boundaries_between(parse_interval("1M"), ns(2023, 12, 31, 12), ns(2024, 12, 31, 12))
    assert [utc(b).date().isoformat() for b in got] == [f"2024-{m:02d}-01" for m in range(1, 13)]
    gaps = {(b - a) // DAY_NS for a, b in itertools.pairwise(got)}
    assert gaps == {29, 30, 31}


def test_next_boundary_strictly_increases_across_units() -> None:
    start = ns(2023, 11, 20, 7, 13)
    for text in ("5m", "1h", "4h", "1d", "3d", "1w", "7d", "1M", "3M", "1y"):
        iv = parse_interval(text)
        b = start
        for _ in range(30):
            nxt = next_boundary(iv, b)
            assert nxt > b
            assert next_boundary(iv, nxt - 1) == nxt
            b = nxt
