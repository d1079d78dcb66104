"""TickRecorder: JSON lines that read back bit for bit, buffered until flush or close."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.types import Tick
from feeds.recorder import TickRecorder

AWKWARD = [
    Tick("BTC-USDT", 42001.45, 42001.46, 1_704_067_200_000_000_000, 1_704_067_200_000_312_001),
    Tick("ETH-USDT", 0.1 + 0.2, 0.30000000000000004, 1, 2),
    Tick("DOGE-USDT", 5e-324, 2.2250738585072014e-308, 0, 0),
    Tick("SOL-USDT", 1.7976931348623157e308, 1e300, -1, 9_223_372_036_854_775_807),
    Tick("XRP-USDT", 1.0, 1e16, 3, 4),
]


def read_back(path: Path) -> list[Tick]:
    return [Tick(**orjson.loads(line)) for line in path.read_bytes().splitlines()]


def bits(t: Tick) -> tuple[str, str, str, int, int]:
    return (t.symbol, t.bid.hex(), t.ask.hex(), t.ts_event_ns, t.ts_recv_ns)


def test_lines_have_the_five_fields_and_read_back_bit_identical(tmp_path: Path) -> None:
    path = tmp_path / "ticks.jsonl"
    with TickRecorder(path) as rec:
        for t in AWKWARD:
            rec.write(t)
    first = orjson.loads(path.read_bytes().splitlines()[0])
    assert list(first) == ["symbol", "bid", "ask", "ts_event_ns", "ts_recv_ns"]
    assert [bits(t) for t in read_back(path)] == [bits(t) for t in AWKWARD]
    assert all(isinstance(t.bid, float) for t in read_back(path))


def test_ticks_stay_buffered_until_flush_or_a_full_buffer(tmp_path: Path) -> None:
    path = tmp_path / "ticks.jsonl"
    rec = TickRecorder(path, buffer_ticks=3)
    rec.write(AWKWARD[0])
    rec.write(AWKWARD[1])
    assert path.read_bytes() == b""
    rec.write(AWKWARD[2])  # the third fills the buffer
    assert len(read_back(path)) == 3
    rec.write(AWKWARD[3])
    rec.flush()
    assert len(read_back(path)) == 4 and rec.written == 4
    rec.close()
    with pytest.raises(ValueError, match="closed"):
        rec.write(AWKWARD[4])


def test_appends_by_default_and_truncates_with_mode_w(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ticks.jsonl"
    with TickRecorder(path) as rec:
        rec.write(AWKWARD[0])
    with TickRecorder(path) as rec:
        rec.write(AWKWARD[1])
    assert [t.symbol for t in read_back(path)] == ["BTC-USDT", "ETH-USDT"]
    with TickRecorder(path, mode="w") as rec:
        rec.write(AWKWARD[2])
    assert [t.symbol for t in read_back(path)] == ["DOGE-USDT"]


def test_a_non_finite_price_is_refused(tmp_path: Path) -> None:
    with TickRecorder(tmp_path / "t.jsonl") as rec, pytest.raises(ValueError, match="non-finite"):
        rec.write(Tick("BTC-USDT", float("nan"), 1.0, 0, 0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(
    st.floats(allow_nan=False, allow_infinity=False), st.floats(allow_nan=False, allow_infinity=False),
    st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1),
), min_size=1, max_size=20))
def test_any_finite_floats_round_trip(tmp_path_factory: pytest.TempPathFactory,
                                     rows: list[tuple[float, float, int, int]]) -> None:
    path = tmp_path_factory.mktemp("rt") / "ticks.jsonl"
    ticks = [Tick("BTC-USDT", b, a, e, r) for b, a, e, r in rows]
    with TickRecorder(path, mode="w", buffer_ticks=7) as rec:
        for t in ticks:
            rec.write(t)
    assert [bits(t) for t in read_back(path)] == [bits(t) for t in ticks]
