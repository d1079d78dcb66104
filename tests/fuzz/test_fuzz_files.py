"""Fuzzed tick and candle files: every file is refused with a one-line `TickFileError` or read with each bad
row counted in `ReadReport.dropped` under its reason; no other exception, and every kept row is sound.

Structured files carry an exact expectation per row (an independent model of the readers' rules, first
failing rule wins: unparseable, bad_symbol, not_finite, not_positive, crossed, backwards). Chaos files
(random bytes, broken gzip, truncations, wrong headers, mixed formats) only have to be answered cleanly.
"""
from __future__ import annotations

import gzip
import itertools
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.columns import TickColumns
from engine.types import split_symbol
from feeds.files import ReadReport, TickFileError, read_candles, read_ticks
from tests.fuzz import family

T0_NS = 1_704_067_200 * 10**9
MINUTE_NS = 60 * 10**9
GOOD_SYMBOLS = ("BTC-USDT", "ETH-USDT", "SOL-USDT", "btc-usdt")
BAD_SYMBOLS = ("BTCUSDT", "B TC-USDT", "-USDT", "BTC-", "BTC-USDT-X", "", "ÄBC-USDT", '"BTC-USDT"', "B;TC-USDT")
# Both readers refuse a non-ASCII symbol (test_both_readers_refuse_a_non_ascii_symbol).
BAD_SYMBOLS_JSONL = tuple(s for s in BAD_SYMBOLS if s.isascii())
BAD_TIMES = ("-1", "abc", "", "1.5", "99999999999999999999", "9223372036854775808")
NOT_FINITE = ("nan", "NaN", "inf", "-inf", "1e999")
NOT_POSITIVE = ("0", "-5", "-0", "1e-400", "-0.0")
UNPARSEABLE = ("abc", "", "0x10", "1..2")
CSV_LAYOUTS = ("ts_ns,symbol,bid,ask", "symbol,bid,ask,ts_ns", "ts_recv_ns,ts_event_ns,symbol,bid,ask",
               "ts_ns,symbol,price")
ROW_KINDS = ("good", "good", "good", "good", "bad_time", "bad_event_time", "bad_symbol", "not_finite",
             "not_positive", "unparseable_price", "crossed", "backwards", "extra_field", "missing_field", "foreign")
MAX_EXAMPLES = 240
SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_names = itertools.count()


@dataclass(frozen=True)
class Row:
    """One fuzzed row: its fields as text (or JSON values) and the reader's expected verdict."""

    fields: dict[str, object]
    reason: str | None  # None: kept
    foreign: bool = False  # a line in the other format


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-files")


def fresh(folder: Path, suffix: str) -> Path:
    return folder / f"f{next(_names)}{suffix}"


def build_rows(kinds: list[tuple[str, int, float, float, int]], price_only: bool, with_event: bool,
               bad_symbols: tuple[str, ...] = BAD_SYMBOLS) -> list[Row]:
    """Rows with known verdicts; `judge_time` then decides which candidates are `backwards`."""
    rows: list[Row] = []
    ts = T0_NS
    for kind, pick, bid, ask, gap in kinds:
        ts += gap
        sym = GOOD_SYMBOLS[pick % len(GOOD_SYMBOLS)]
        b, a = repr(bid), repr(bid if price_only else max(bid, ask))
        fields: dict[str, object] = {"ts": str(ts), "te": str(ts - pick), "symbol": sym, "bid": b, "ask": a}
        reason: str | None = None
        if kind == "bad_time":
            fields["ts"], reason = BAD_TIMES[pick % len(BAD_TIMES)], "unparseable"
        elif kind == "bad_event_time":
            fields["te"] = BAD_TIMES[pick % len(BAD_TIMES)]
            reason = "unparseable" if with_event else None
        elif kind == "bad_symbol":
            fields["symbol"], reason = bad_symbols[pick % len(bad_symbols)], "bad_symbol"
        elif kind == "not_finite":
            fields["bid"], reason = NOT_FINITE[pick % len(NOT_FINITE)], "not_finite"
        elif kind == "not_positive":
            fields["bid" if pick % 2 or price_only else "ask"] = NOT_POSITIVE[pick % len(NOT_POSITIVE)]
            reason = "not_positive"
        elif kind == "unparseable_price":
            fields["bid"], reason = UNPARSEABLE[pick % len(UNPARSEABLE)], "unparseable"
        elif kind == "crossed" and not price_only:
            fields["bid"], fields["ask"], reason = repr(max(bid, ask) * 1.5), repr(max(bid, ask)), "crossed"
        elif kind == "backwards":
            fields["ts"] = str(ts - 1 - pick * 10**7)
        elif kind in ("extra_field", "missing_field"):
            fields["shape"], reason = kind, "unparseable"
        rows.append(Row(fields, reason, foreign=kind == "foreign"))
        if kind == "foreign":
            rows[-1] = Row(fields, "unparseable", foreign=True)
    return judge_time(rows)


def judge_time(rows: list[Row]) -> list[Row]:
    """Rows no earlier rule drops are candidates: one older than the newest candidate so far is `backwards`."""
    out, high = [], -1
    for r in rows:
        if r.reason in (None, "backwards"):
            ts = int(str(r.fields["ts"]))
            r = Row(r.fields, "backwards" if ts < high else None, r.foreign)
            high = max(high, ts)
        out.append(r)
    return out


def csv_text(layout: str, rows: list[Row], newline: str, bom: bool, blank_every: int) -> bytes:
    cols = layout.split(",")
    source = {"ts_ns": "ts", "ts_recv_ns": "ts", "ts_event_ns": "te", "symbol": "symbol", "bid": "bid", "ask": "ask",
              "price": "bid"}
    lines = [layout]
    for n, r in enumerate(rows):
        if r.foreign:
            lines.append(json.dumps({"ts_ns": r.fields["ts"], "symbol": r.fields["symbol"], "bid": 1.0, "ask": 2.0}))
        else:
            values = [str(r.fields[source[c]]) for c in cols]
            shape = r.fields.get("shape")
            values = [*values, "1"] if shape == "extra_field" else values[:-1] if shape == "missing_field" else values
            lines.append(",".join(values))
        if blank_every and n % blank_every == 0:
            lines.append("")
    return (b"\xef\xbb\xbf" if bom else b"") + (newline.join(lines) + newline).encode()


def jsonl_text(rows: list[Row], newline: str) -> bytes:
    lines = []
    for r in rows:
        if r.foreign:
            lines.append(f"{r.fields['ts']},BTC-USDT,1,2")
            continue
        obj: dict[str, object] = {"ts_ns": _json_time(r.fields["ts"]), "symbol": r.fields["symbol"],
                                  "bid": r.fields["bid"], "ask": r.fields["ask"]}
        obj["ts_event_ns"] = _json_time(r.fields["te"])
        shape = r.fields.get("shape")
        if shape == "missing_field":
            del obj["bid"]
        elif shape == "extra_field":
            obj = {"not": "a tick"}  # type: ignore[assignment]
        lines.append(json.dumps(obj))
    return (newline.join(lines) + newline).encode()


def _json_time(text: object) -> object:
    """A time as the JSON writer would put it: a number when it is one."""
    s = str(text)
    return int(s) if s.isdigit() and int(s) < 2**64 else s


def expected_of(rows: list[Row]) -> Counter[str]:
    """Drops by reason."""
    return Counter(r.reason for r in rows if r.reason is not None)


def check_sound(cols: TickColumns, report: ReadReport) -> None:
    """What any read must hold: counts add up and every kept row is a valid tick."""
    assert report.rows_read == report.rows_kept + sum(report.dropped.values())
    assert report.rows_kept == len(cols)
    assert set(report.dropped) <= {"unparseable", "bad_symbol", "not_finite", "not_positive", "crossed", "backwards"}
    if len(cols):
        assert bool(np.all(np.isfinite(cols.bid))) and bool(np.all(np.isfinite(cols.ask)))
        assert bool(np.all(cols.bid > 0)) and bool(np.all(cols.bid <= cols.ask))
        assert bool(np.all(np.diff(cols.ts_ns) >= 0))
        for s in cols.symbols:
            split_symbol(s)


def read_answered(read: Callable[[], tuple[TickColumns, ReadReport]]) -> tuple[TickColumns, ReadReport] | str:
    """The read, or the one-line message of its TickFileError; any other exception is a crash."""
    tally = family("files")
    try:
        return read()
    except TickFileError as e:
        assert "\n" not in str(e) and str(e)
        return str(e)
    except Exception:
        tally.crashes += 1
        raise


rows_strategy = st.lists(
    st.tuples(st.sampled_from(ROW_KINDS), st.integers(0, 40), st.floats(1e-6, 1e9), st.floats(1e-6, 1e9),
              st.integers(0, 10**9)),
    min_size=5, max_size=60,
)


@SETTINGS
@given(kinds=rows_strategy, layout=st.sampled_from((*CSV_LAYOUTS, "jsonl")), newline=st.sampled_from(["\n", "\r\n"]),
       bom=st.booleans(), blank_every=st.integers(0, 7), gz=st.booleans())
def test_every_bad_row_is_counted_under_its_reason(folder: Path, kinds: list[tuple[str, int, float, float, int]],
                                                   layout: str, newline: str, bom: bool, blank_every: int,
                                                   gz: bool) -> None:
    tally = family("files")
    if layout == "jsonl":
        rows = build_rows(kinds, price_only=False, with_event=True, bad_symbols=BAD_SYMBOLS_JSONL)
        if rows[0].foreign or rows[0].fields.get("shape"):  # the first line plays the header: a tick object
            first = {k: v for k, v in rows[0].fields.items() if k != "shape"}
            rows = judge_time([Row(first, None), *rows[1:]])
        content, suffix = jsonl_text(rows, newline), ".jsonl"
    else:
        rows = build_rows(kinds, price_only="price" in layout, with_event="ts_event_ns" in layout)
        content, suffix = csv_text(layout, rows, newline, bom, blank_every), ".csv"
    path = fresh(folder, suffix + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(content, mtime=0) if gz else content)
    expected = expected_of(rows)
    tally.tried += 1
    tally.note("rows", len(rows))
    if expected:
        tally.bad += 1
    got = read_answered(lambda: read_ticks(path))
    assert not isinstance(got, str), got
    cols, report = got
    check_sound(cols, report)
    if expected and Counter(report.dropped) == expected:
        tally.answered += 1
    assert Counter(report.dropped) == expected
    assert report.rows_read == len(rows)


@SETTINGS
@given(kinds=rows_strategy, iso=st.booleans(), gz=st.booleans(), order=st.permutations(
    ["timestamp", "open", "high", "low", "close", "volume"]))
def test_every_bad_candle_is_counted_under_its_reason(folder: Path, kinds: list[tuple[str, int, float, float, int]],
                                                      iso: bool, gz: bool, order: list[str]) -> None:
    tally = family("files")
    candle_kinds = [(k if k in ("good", "bad_time", "not_finite", "not_positive", "unparseable_price", "backwards",
                                "extra_field", "missing_field") else "good", p, b, a, g) for k, p, b, a, g in kinds]
    rows = build_rows(candle_kinds, price_only=True, with_event=False)
    lines = [",".join(order)]
    for r in rows:
        ts = str(r.fields["ts"])
        if ts.isdigit() and int(ts) < 2**63:
            ms = int(ts) // 10**6
            ts = str(ms)
            if iso:
                ts = np.datetime64(ms, "ms").astype(str) + "Z"
        values = {"timestamp": ts, "close": str(r.fields["bid"]), "open": "1", "high": "2", "low": "0.5",
                  "volume": "10"}
        line = [values[c] for c in order]
        shape = r.fields.get("shape")
        line = [*line, "1"] if shape == "extra_field" else line[:-1] if shape == "missing_field" else line
        lines.append(",".join(line))
    content = ("\n".join(lines) + "\n").encode()
    path = fresh(folder, ".csv.gz" if gz else ".csv")
    path.write_bytes(gzip.compress(content, mtime=0) if gz else content)
    # Times are read to the millisecond: two rows inside one millisecond may tie (not backwards) or swap.
    rows = judge_time([Row({**r.fields, "ts": str(int(str(r.fields["ts"])) // 10**6)}, r.reason, r.foreign)
                       if r.reason in (None, "backwards") else r for r in rows])
    expected = expected_of(rows)
    tally.tried += 1
    tally.note("rows", len(rows))
    if expected:
        tally.bad += 1
    got = read_answered(lambda: read_candles(path, "BTC-USDT", MINUTE_NS))
    assert not isinstance(got, str), got
    cols, report = got
    check_sound(cols, report)
    if expected and Counter(report.dropped) == expected:
        tally.answered += 1
    assert Counter(report.dropped) == expected
    assert report.rows_read == len(rows)


def valid_csv(n: int) -> bytes:
    return ("ts_ns,symbol,bid,ask\n" + "".join(f"{T0_NS + i},BTC-USDT,{100 + i},{101 + i}\n" for i in range(n))).encode()


CHAOS = ("random_bytes", "random_after_gzip_magic", "truncated_gzip", "random_header", "csv_then_json",
         "json_then_csv", "no_header", "truncated_plain", "binary_in_rows")


@SETTINGS
@given(kind=st.sampled_from(CHAOS), blob=st.binary(max_size=3000), cut=st.integers(1, 5000),
       header=st.lists(st.sampled_from(["ts_ns", "symbol", "bid", "ask", "price", "ts", "ts_event_ns", "volume", "x",
                                        "", "ts_recv_ns", "BID"]), max_size=6),
       reader=st.sampled_from(["ticks", "candles"]), suffix=st.sampled_from([".csv", ".jsonl", ".csv.gz", ".txt"]))
def test_chaos_files_get_a_one_line_error_or_a_counted_read(folder: Path, kind: str, blob: bytes, cut: int,
                                                             header: list[str], reader: str, suffix: str) -> None:
    tally = family("files")
    good = valid_csv(40)
    content = {
        "random_bytes": blob,
        "random_after_gzip_magic": b"\x1f\x8b" + blob,
        "truncated_gzip": gzip.compress(good, mtime=0)[: cut % (len(gzip.compress(good, mtime=0)) - 1) + 1],
        "random_header": (",".join(header) + "\n").encode() + good.split(b"\n", 1)[1],
        "csv_then_json": good + b'{"ts_ns": 1, "symbol": "BTC-USDT", "bid": 1, "ask": 2}\n' * (1 + cut % 5),
        "json_then_csv": b'{"ts_ns": 1, "symbol": "BTC-USDT", "bid": 1, "ask": 2}\n' + good.split(b"\n", 1)[1],
        "no_header": good.split(b"\n", 1)[1],
        "truncated_plain": good[: cut % len(good)],
        "binary_in_rows": good + blob + b"\n",
    }[kind]
    path = fresh(folder, suffix)
    path.write_bytes(content)
    tally.tried += 1
    bad = kind not in ("truncated_plain", "random_header", "binary_in_rows")
    tally.bad += bad
    read = (lambda: read_ticks(path)) if reader == "ticks" else (lambda: read_candles(path, "BTC-USDT"))
    got = read_answered(read)
    if isinstance(got, str):
        tally.answered += bad
        tally.note("files refused with a one-line TickFileError", 1)
        return
    cols, report = got
    check_sound(cols, report)
    empty = kind == "random_bytes" and report.rows_read == 0  # e.g. a lone header: nothing read, nothing to count
    tally.note("random files read as empty (no rows)", empty)
    tally.answered += bad and (report.rows_dropped > 0 or empty)
    if bad:
        assert report.rows_dropped > 0 or empty, (kind, report)


def test_one_far_future_row_drops_every_later_row_as_backwards(folder: Path) -> None:
    """A known weakness, counted but costly: the readers keep the first of two rows out of order."""
    lines = valid_csv(20).decode().splitlines()
    lines.insert(5, f"{T0_NS + 10 * 365 * 86_400 * 10**9},BTC-USDT,100,101")
    path = fresh(folder, ".csv")
    path.write_text("\n".join(lines) + "\n")
    cols, report = read_ticks(path)
    assert report.dropped == {"backwards": 16}
    assert len(cols) == 5 and report.first_bad[0] == (7, "backwards")


def test_both_readers_refuse_a_non_ascii_symbol(folder: Path) -> None:
    path = fresh(folder, ".jsonl")
    path.write_text(json.dumps({"ts_ns": T0_NS, "symbol": "ÄBC-USDT", "bid": 1.0, "ask": 2.0}) + "\n")
    _, report = read_ticks(path)
    assert report.dropped == {"bad_symbol": 1}


def test_the_row_model_reaches_every_reason() -> None:
    rows = build_rows([(k, 3, 10.0, 20.0, 5) for k in ROW_KINDS] * 2, price_only=False, with_event=True)
    reasons = {r.reason for r in rows}
    assert {"unparseable", "bad_symbol", "not_finite", "not_positive", "crossed", "backwards"} <= reasons
    assert None in reasons
    assert math.isfinite(float(str(rows[0].fields["bid"])))
