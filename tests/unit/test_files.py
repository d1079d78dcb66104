"""Tick and candle files: every format, every bad-row rule, header errors, gzip, exact round trips."""
from __future__ import annotations

import gzip
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import feeds.fieldparse as fieldparse
import feeds.tick_batches as tick_batches
from engine.columns import TickColumns
from engine.types import Tick
from feeds.fieldformat import format_prices, format_uints, join_rows
from feeds.fieldparse import PAD, padded, parse_floats, parse_iso_ns
from feeds.files import TickFileError, read_candles, read_ticks, write_ticks_csv, write_ticks_jsonl
from feeds.synth import synth_ticks

T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z


def put(tmp_path: Path, name: str, text: str | bytes) -> Path:
    """Write a file (gzipped when the name ends with .gz) and return its path."""
    data = text.encode() if isinstance(text, str) else text
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def same_columns(a: TickColumns, b: TickColumns) -> bool:
    """Bit-for-bit equality of two column sets."""
    return a.symbols == b.symbols and all(
        getattr(a, n).tobytes() == getattr(b, n).tobytes() for n in ("ts_ns", "ts_event_ns", "sym", "bid", "ask")
    )


def fields_of(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A padded buffer holding the texts comma-separated, and each text's start and end."""
    buf = padded(",".join(texts).encode() + b"\n")
    lengths = np.array([len(t.encode()) for t in texts], dtype=np.int64)
    starts = PAD + np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
    return buf, starts, starts + lengths


def test_main_csv_format_reads_exact_values(tmp_path: Path) -> None:
    path = put(tmp_path, "t.csv", f"ts_ns,symbol,bid,ask\n{T0},BTC-USDT,42000.5,42001\n{T0 + 7},ETH-USDT,0.1,0.30000000000000004\n")
    cols, report = read_ticks(path)
    assert list(cols.ticks()) == [
        Tick("BTC-USDT", 42000.5, 42001.0, T0, T0),
        Tick("ETH-USDT", 0.1, 0.30000000000000004, T0 + 7, T0 + 7),
    ]
    assert (report.rows_read, report.rows_kept, report.dropped, report.first_bad) == (2, 2, {}, [])
    assert cols.sym.dtype == np.int32 and cols.ts_ns.dtype == np.int64


def test_receive_and_event_times(tmp_path: Path) -> None:
    path = put(tmp_path, "t.csv", f"symbol,ts_event_ns,bid,ask,ts_recv_ns\nBTC-USDT,{T0 - 5},1,2,{T0}\nBTC-USDT,{T0 + 1},1,2,{T0 + 2}\n")
    cols, _ = read_ticks(path)
    assert cols.ts_ns.tolist() == [T0, T0 + 2]
    assert cols.ts_event_ns.tolist() == [T0 - 5, T0 + 1]


def test_ts_column_in_milliseconds_or_iso_and_price_column(tmp_path: Path) -> None:
    text = (
        "ts,symbol,price\r\n"
        "1704067200000,BTC-USDT,42000\r\n"
        "2024-01-01T00:00:01Z,BTC-USDT,42001\r\n"
        "2024-01-01T00:00:01.123Z,BTC-USDT,42002\r\n"
        "2024-01-01 00:00:02,ETH-USDT,2300.5"
    )
    cols, report = read_ticks(put(tmp_path, "t.csv", text))
    assert report.rows_kept == 4
    assert cols.ts_ns.tolist() == [T0, T0 + 10**9, T0 + 1_123_000_000, T0 + 2 * 10**9]
    assert cols.bid.tolist() == cols.ask.tolist() == [42000.0, 42001.0, 42002.0, 2300.5]


def test_jsonl_variants(tmp_path: Path) -> None:
    lines = [
        {"ts_recv_ns": T0, "ts_event_ns": T0 - 9, "symbol": "BTC-USDT", "bid": 42000.5, "ask": "42001"},
        {"ts": "2024-01-01T00:00:01.123456789Z", "symbol": "ETH-USDT", "price": 2300},
        {"ts": 1704067202000, "symbol": "ETH-USDT", "price": "2300.5"},
        {"ts_ns": T0 + 3 * 10**9, "symbol": "SOL-USDT", "bid": 1e-05, "ask": 2e-05},
    ]
    text = b"\n".join(orjson.dumps(x) for x in lines)
    bad = b'\nnot json\n{"ts_ns": 5, "symbol": "ETH-USDT"}\n{"ts_ns": true, "symbol": "ETH-USDT", "price": 1}\n[1]\n\n'
    for name in ("t.jsonl", "t.jsonl.gz", "t.ndjson"):
        cols, report = read_ticks(put(tmp_path, name, text + bad))
        assert list(cols.ticks()) == [
            Tick("BTC-USDT", 42000.5, 42001.0, T0 - 9, T0),
            Tick("ETH-USDT", 2300.0, 2300.0, T0 + 1_123_456_789, T0 + 1_123_456_789),
            Tick("ETH-USDT", 2300.5, 2300.5, T0 + 2 * 10**9, T0 + 2 * 10**9),
            Tick("SOL-USDT", 1e-05, 2e-05, T0 + 3 * 10**9, T0 + 3 * 10**9),
        ]
        assert report.rows_read == 8 and report.dropped == {"unparseable": 4}
        assert report.first_bad == [(5, "unparseable"), (6, "unparseable"), (7, "unparseable"), (8, "unparseable")]


def test_every_bad_row_rule_counts_and_drops(tmp_path: Path) -> None:
    rows = [
        f"{T0},BTC-USDT,42000.5,42001",      # 2 kept
        "bad line",                           # 3 unparseable (field count)
        f"{T0 + 1},BTC-USDT,4x2,42001",      # 4 unparseable (number)
        f"{T0 + 1},BTC-USDT,,42001",         # 5 unparseable (empty)
        "17x,BTC-USDT,1,2",                  # 6 unparseable (time)
        f"{T0 + 2},BTCUSDT,1,2",             # 7 bad symbol
        f"{T0 + 2},BTC-USD-T,1,2",           # 8 bad symbol
        f"{T0 + 3},BTC-USDT,nan,2",          # 9 not finite
        f"{T0 + 3},BTC-USDT,1,inf",          # 10 not finite
        f"{T0 + 4},BTC-USDT,0,2",            # 11 not positive
        f"{T0 + 4},BTC-USDT,-1,2",           # 12 not positive
        f"{T0 + 5},BTC-USDT,3,2",            # 13 crossed
        f"{T0 - 1},BTC-USDT,1,2",            # 14 backwards
        "",                                   # 15 blank: skipped
        f"{T0 + 6},ETH-USDT, 1e-5 ,2.5E+1",  # 16 kept (float() accepts it)
        f"{T0 + 6},ETH-USDT,2,2",            # 17 kept (equal time, bid == ask)
    ]
    cols, report = read_ticks(put(tmp_path, "t.csv", "ts_ns,symbol,bid,ask\n" + "\n".join(rows) + "\n"))
    assert report.rows_read == 15 and report.rows_kept == 3 == len(cols)
    assert report.dropped == {"unparseable": 4, "bad_symbol": 2, "not_finite": 2, "not_positive": 2,
                              "crossed": 1, "backwards": 1}
    assert report.first_bad == [
        (3, "unparseable"), (4, "unparseable"), (5, "unparseable"), (6, "unparseable"), (7, "bad_symbol"),
        (8, "bad_symbol"), (9, "not_finite"), (10, "not_finite"), (11, "not_positive"), (12, "not_positive"),
    ]
    assert cols.bid.tolist() == [42000.5, 1e-05, 2.0] and cols.symbols == ("BTC-USDT", "ETH-USDT")


def test_backwards_is_judged_against_the_last_kept_row_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tick_batches, "CHUNK_BYTES", 64)
    times = [10, 30, 20, 29, 30, 31, 5, 40, *range(41, 80)]
    text = "ts_ns,symbol,bid,ask\n" + "".join(f"{t},BTC-USDT,1,2\n" for t in times)
    cols, report = read_ticks(put(tmp_path, "t.csv", text))
    assert cols.ts_ns.tolist() == [10, 30, 30, 31, 40, *range(41, 80)]
    assert report.dropped == {"backwards": 3}
    assert report.first_bad == [(4, "backwards"), (5, "backwards"), (8, "backwards")]


def test_first_bad_keeps_the_first_ten_in_line_order_over_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tick_batches, "CHUNK_BYTES", 50)
    body = "".join(f"{T0 + i},BTC-USDT,{'x' if i % 3 == 0 else 1},2\n" for i in range(60))
    cols, report = read_ticks(put(tmp_path, "t.csv", "ts_ns,symbol,bid,ask\n" + body))
    assert report.dropped == {"unparseable": 20} and len(cols) == 40
    assert report.first_bad == [(2 + 3 * k, "unparseable") for k in range(10)]


def test_small_chunks_give_the_same_result_as_one_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cols = synth_ticks(["BTC", "ETH", "LONGNAMECOIN", "X"], n_ticks=500, seed=4)
    path = tmp_path / "t.csv"
    write_ticks_csv(path, cols)
    whole, _ = read_ticks(path)
    monkeypatch.setattr(tick_batches, "CHUNK_BYTES", 37)
    pieces, report = read_ticks(path)
    assert same_columns(whole, pieces) and same_columns(whole, cols) and report.rows_kept == 500


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("time,symbol,bid,ask\n", "unknown column(s) 'time'"),
        ("ts_ns,symbol,bid\n", "no price"),
        ("ts_ns,bid,ask\n", "no symbol"),
        ("symbol,bid,ask,ts_event_ns\n", "no time column"),
        ("ts_ns,symbol,bid,ask,price\n", "price together with bid/ask"),
        ("ts_ns,symbol,bid,bid,ask\n", "repeats a column"),
        ("1704067200000000000,BTC-USDT,1,2\n", "unknown column"),
    ],
)
def test_a_wrong_header_is_one_error_naming_file_header_and_accepted(tmp_path: Path, text: str, why: str) -> None:
    path = put(tmp_path, "t.csv", text)
    with pytest.raises(TickFileError) as info:
        read_ticks(path)
    message = str(info.value)
    assert str(path) in message and repr(text.strip()) in message and why in message
    assert "accepted headers: ts_ns,symbol,bid,ask" in message and "\n" not in message


def test_missing_empty_and_header_only_files(tmp_path: Path) -> None:
    with pytest.raises(TickFileError, match=r"nope\.csv: no such file"):
        read_ticks(tmp_path / "nope.csv")
    with pytest.raises(TickFileError, match="empty file"):
        read_ticks(put(tmp_path, "e.csv", ""))
    with pytest.raises(TickFileError, match="is not a tick object"):
        read_ticks(put(tmp_path, "x.jsonl", '{"a": 1}\n'))
    cols, report = read_ticks(put(tmp_path, "h.csv", "\ufeffts_ns,symbol,bid,ask\n"))
    assert len(cols) == 0 and cols.symbols == () and report.rows_read == 0
    assert cols.ts_ns.dtype == np.int64 and cols.bid.dtype == np.float64
    assert len(read_ticks(put(tmp_path, "e.jsonl", ""))[0]) == 0


def test_gzip_is_read_and_a_broken_gzip_is_an_error(tmp_path: Path) -> None:
    text = f"ts_ns,symbol,bid,ask\n{T0},BTC-USDT,1.5,2.5\n"
    cols, _ = read_ticks(put(tmp_path, "t.csv.gz", text))
    assert cols.bid.tolist() == [1.5]
    broken = tmp_path / "b.csv.gz"
    broken.write_bytes(gzip.compress(text.encode() * 2000)[:-40])
    with pytest.raises(TickFileError, match=r"b\.csv\.gz: cannot read"):
        read_ticks(broken)


def test_long_lines_many_symbols_and_symbol_width_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tick_batches, "CHUNK_BYTES", 16)
    names = [f"C{i}-USDT" for i in range(40)] + ["A" * 20 + "-" + "B" * 11, "A" * 21 + "-" + "B" * 11]
    text = "ts_ns,symbol,bid,ask\n" + "".join(f"{T0 + i},{s},1,2\n" for i, s in enumerate(names))
    cols, report = read_ticks(put(tmp_path, "t.csv", text))
    assert cols.symbols == tuple(names[:-1]) and report.dropped == {"bad_symbol": 1}
    assert [cols.symbols[s] for s in cols.sym] == names[:-1]


def test_symbol_key_collisions_are_caught_word_for_word(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fieldparse, "_KEY_MIX", np.uint64(0))  # the key is then the last 8 bytes only
    names = ["XDOGE-USDT", "YDOGE-USDT", "XDOGE-USDT", "ZDOGE-USDT", "YDOGE-USDT"]
    text = "ts_ns,symbol,bid,ask\n" + "".join(f"{T0 + i},{s},1,2\n" for i, s in enumerate(names))
    cols, _ = read_ticks(put(tmp_path, "t.csv", text))
    assert [cols.symbols[s] for s in cols.sym] == names


def test_csv_round_trip_is_bit_exact_including_event_times(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 3000
    values = np.concatenate([rng.uniform(1e-9, 1e6, n // 2), 10.0 ** rng.uniform(-12, 12, n - n // 2)])
    cols = TickColumns(
        ("BTC-USDT", "ETH-USDT"),
        T0 + np.arange(n, dtype=np.int64) * 3,
        T0 - rng.integers(0, 10**6, n),
        (np.arange(n) % 2).astype(np.int32),
        values,
        values * (1 + rng.uniform(0, 1e-3, n)),
    )
    for name in ("r.csv", "r.csv.gz"):
        write_ticks_csv(tmp_path / name, cols)
        back, report = read_ticks(tmp_path / name)
        assert same_columns(back, cols) and report.rows_kept == n
    assert (tmp_path / "r.csv").read_text().startswith("ts_ns,ts_event_ns,symbol,bid,ask\n")


def test_synthetic_market_round_trips_through_both_formats(tmp_path: Path) -> None:
    cols = synth_ticks(["BTC", "ETH", "SOL", "DOGE"], n_ticks=5000, seed=6, swing=0.05)
    write_ticks_csv(tmp_path / "s.csv", cols)
    assert (tmp_path / "s.csv").read_text().startswith("ts_ns,symbol,bid,ask\n")
    assert same_columns(read_ticks(tmp_path / "s.csv")[0], cols)
    write_ticks_jsonl(tmp_path / "s.jsonl.gz", cols.ticks())
    assert same_columns(read_ticks(tmp_path / "s.jsonl.gz")[0], cols)


def test_price_and_integer_formatting_reads_back_exactly_for_any_value() -> None:
    rng = np.random.default_rng(8)
    prices = np.concatenate([
        [0.0, -0.0, -1.5, np.nan, np.inf, -np.inf, 1e300, 5e-324, 2.0**53, 2.0**53 + 2, 0.1, 1e-05, 42001.0],
        [round(v, d) for v, d in zip(rng.uniform(0, 1e5, 500).tolist(), rng.integers(0, 10, 500).tolist(), strict=True)],
        10.0 ** rng.uniform(-20, 20, 500),
    ])
    ints = np.array([0, 7, 10, 1704067200000000000, 2**63 - 1, -5], dtype=np.int64)
    text = join_rows([format_prices(prices)]).decode()
    assert np.array([float(t) for t in text.splitlines()]).tobytes() == prices.tobytes()
    assert join_rows([format_uints(ints)]).decode().splitlines() == [str(i) for i in ints.tolist()]
    assert join_rows([format_prices(np.array([42001.45, 42001.0, 0.00001]))]) == b"42001.45\n42001\n0.00001\n"


def test_assembler_backfills_event_times_and_asks_that_start_mid_file() -> None:
    asm = tick_batches.TickAssembler()
    code = asm.symbols.code("BTC-USDT")
    one = np.ones(2, dtype=np.bool_)
    sym = np.full(2, code, dtype=np.int32)
    asm.add(np.array([2, 3]), one, sym, np.array([10, 20]), None, np.array([1.0, 2.0]), None)
    asm.add(np.array([4, 5]), one, sym, np.array([30, 40]), np.array([29, 39]), np.array([3.0, 4.0]),
            np.array([3.5, 4.5]))
    cols, report = asm.finish()
    assert cols.ts_event_ns.tolist() == [10, 20, 29, 39] and cols.ask.tolist() == [1.0, 2.0, 3.5, 4.5]
    assert report.rows_kept == 4


def test_gzip_output_is_reproducible(tmp_path: Path) -> None:
    cols = synth_ticks(["BTC"], n_ticks=100, seed=1)
    write_ticks_csv(tmp_path / "a.csv.gz", cols)
    write_ticks_csv(tmp_path / "b.csv.gz", cols)
    assert (tmp_path / "a.csv.gz").read_bytes() == (tmp_path / "b.csv.gz").read_bytes()


def test_read_columns_are_read_only(tmp_path: Path) -> None:
    cols, _ = read_ticks(put(tmp_path, "t.csv", f"ts_ns,symbol,price\n{T0},BTC-USDT,1\n"))
    with pytest.raises(ValueError, match="read-only"):
        cols.bid[0] = 2.0


decimal_text = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
    st.sampled_from(["", "", "", "-", "+"]),
    st.text("0123456789", min_size=0, max_size=20) | st.text("0123456789.", min_size=0, max_size=17),
    st.one_of(st.just(""), st.text("0123456789", min_size=0, max_size=20).map(lambda d: "." + d)),
    st.one_of(st.just(""), st.integers(-330, 330).map(lambda e: f"e{e}")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(decimal_text | st.floats(allow_nan=False).map(repr), min_size=1, max_size=40))
def test_parsed_floats_equal_python_float_bit_for_bit(texts: list[str]) -> None:
    buf, start, end = fields_of(texts)
    values, ok = parse_floats(buf, start, end)
    for text, value, parsed in zip(texts, values.tolist(), ok.tolist(), strict=True):
        try:
            expected = float(text)
        except ValueError:
            assert not parsed, text
            continue
        assert parsed, text
        assert math.copysign(1.0, value) == math.copysign(1.0, expected) and value == expected, text
        assert np.float64(value).tobytes() == np.float64(expected).tobytes(), text


@pytest.mark.parametrize(
    "text",
    ["9007199254740992", "9007199254740993", "900719925474099.3", "0.9007199254740993", "1234567890123456",
     "12345678901234567", "0.000000000000001", "1.2345678.123456", "1.2.3", "..", ".", ".5", "5.", "", "-0", "1_0",
     " 7 ", "0x10", "1e400", "4.9e-324", "inf", "-nan", "00000000000000000001.5"],
)
def test_float_edge_cases_equal_python_float(text: str) -> None:
    buf, start, end = fields_of([text, "1.5"])
    values, ok = parse_floats(buf, start, end)
    try:
        expected = float(text)
    except ValueError:
        assert not ok[0] and ok[1]
        return
    assert ok.tolist() == [True, True] and values[1] == 1.5
    assert np.float64(values[0]).tobytes() == np.float64(expected).tobytes()


@settings(max_examples=200, deadline=None)
@given(st.text("0123456789", min_size=1, max_size=17), st.text("0123456789", min_size=1, max_size=17))
def test_orjson_reads_json_numbers_as_python_float_does(whole: str, frac: str) -> None:
    text = f"{whole.lstrip('0') or '0'}.{frac}"
    assert orjson.loads(text) == float(text)


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2199, 12, 31)), st.integers(0, 999))
def test_iso_times_match_python_datetime(when: datetime, nanos: int) -> None:
    epoch_ns = (when.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    texts = [
        when.strftime("%Y-%m-%dT%H:%M:%S") + "Z",
        when.strftime("%Y-%m-%d %H:%M:%S"),
        when.strftime("%Y-%m-%dT%H:%M:%S.%f") + f"{nanos:03d}Z",
        when.strftime("%Y-%m-%d"),
    ]
    buf, start, end = fields_of(texts)
    ns, ok = parse_iso_ns(buf, start, end)
    whole_s = epoch_ns - when.microsecond * 1000
    day = whole_s - (when.hour * 3600 + when.minute * 60 + when.second) * 10**9
    assert ok.tolist() == [True] * 4
    assert ns.tolist() == [whole_s, whole_s, epoch_ns + nanos, day]


def test_iso_rejects_impossible_or_other_forms() -> None:
    texts = ["2024-02-29", "2023-02-29", "2024-13-01", "2024-01-01T24:00:00Z", "2024-01-01T00:00:00.1234567890Z",
             "2024-01-01T00:00:00+01:00", "2024-01-01T00:00", "1969-12-31", "2024-1-1", "20240101", ""]
    buf, start, end = fields_of(texts)
    _, ok = parse_iso_ns(buf, start, end)
    assert ok.tolist() == [True] + [False] * (len(texts) - 1)


CANDLES = "timestamp,open,high,low,close,volume\n"


def test_candles_price_the_close_at_open_plus_inferred_interval(tmp_path: Path) -> None:
    text = CANDLES + (
        "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
        "2024-01-01T01:00:00Z,1,2,0.5,1.75,10\n"
        "2024-01-01T03:00:00Z,1,2,0.5,2.5,10\n"  # a gap: two hours missing
        "2024-01-01T02:00:00Z,1,2,0.5,9,10\n"    # backwards
        "2024-01-01T04:00:00Z,1,2,0.5,0,10\n"    # not positive
    )
    cols, report = read_candles(put(tmp_path, "c.csv.gz", text), "BTC-USDT")
    hour = 3600 * 10**9
    assert cols.symbols == ("BTC-USDT",)
    assert cols.ts_ns.tolist() == [T0 + hour, T0 + 2 * hour, T0 + 4 * hour]
    assert np.array_equal(cols.ts_event_ns, cols.ts_ns)
    assert cols.bid.tolist() == cols.ask.tolist() == [1.5, 1.75, 2.5]
    assert report.dropped == {"backwards": 1, "not_positive": 1} and report.first_bad == [(5, "backwards"), (6, "not_positive")]


def test_daily_candles_and_a_given_interval(tmp_path: Path) -> None:
    path = put(tmp_path, "d.csv", CANDLES + "2024-01-01,1,1,1,100.5,1\n2024-01-03,1,1,1,101,1\n2024-01-04,1,1,1,102,1\n")
    day = 86400 * 10**9
    cols, _ = read_candles(path, "BTC-USD")
    assert cols.ts_ns.tolist() == [T0 + day, T0 + 3 * day, T0 + 4 * day]
    cols, _ = read_candles(path, "BTC-USD", interval_ns=60 * 10**9)
    assert cols.ts_ns.tolist() == [T0 + 60 * 10**9, T0 + 2 * day + 60 * 10**9, T0 + 3 * day + 60 * 10**9]


def test_candle_errors(tmp_path: Path) -> None:
    with pytest.raises(TickFileError, match="not a candle header"):
        read_candles(put(tmp_path, "x.csv", "ts_ns,symbol,bid,ask\n"), "BTC-USDT")
    with pytest.raises(TickFileError, match="cannot infer the candle interval"):
        read_candles(put(tmp_path, "one.csv", CANDLES + "2024-01-01,1,1,1,1,1\n"), "BTC-USDT")
    assert len(read_candles(tmp_path / "one.csv", "BTC-USDT", interval_ns=10)[0]) == 1
    with pytest.raises(ValueError, match="BASE-QUOTE"):
        read_candles(tmp_path / "one.csv", "BTCUSDT")
    empty, report = read_candles(put(tmp_path, "e.csv", CANDLES), "BTC-USDT")
    assert len(empty) == 0 and report.rows_read == 0


@pytest.mark.data
def test_a_real_one_minute_candle_file(shared_data: Path) -> None:
    path = shared_data / "candles" / "binance_BTCUSDT_1m_2025.csv.gz"
    cols, report = read_candles(path, "BTC-USDT")
    with gzip.open(path, "rt") as f:
        rows = [line.rstrip("\n").split(",") for line in f][1:]
    assert report.rows_read == len(rows) == len(cols) > 100_000 and report.dropped == {}
    first_open = datetime.fromisoformat(rows[0][0]).timestamp()
    assert int(cols.ts_ns[0]) == round(first_open) * 10**9 + 60 * 10**9
    assert cols.bid[:1000].tolist() == [float(r[4]) for r in rows[:1000]]
    assert cols.bid[-1] == float(rows[-1][4])
