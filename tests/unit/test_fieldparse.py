"""The vectorised field parsers against Python's own int() and float(), and the symbol interner's codes."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import feeds.fieldparse as fieldparse
from feeds.fieldparse import PAD, FieldInterner, padded, parse_floats, parse_uints, split_rows

T0 = 1_704_067_200_000_000_000


def fields_of(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A padded buffer holding the texts comma-separated, and each text's start and end."""
    buf = padded(b",".join(texts) + b"\n")
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    starts = PAD + np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
    return buf, starts, starts + lengths


def python_uint(text: bytes) -> int | None:
    """What parse_uints must give: int() of the text when it is an int64 >= 0."""
    try:
        v = int(text)
    except ValueError:
        return None
    return v if 0 <= v <= fieldparse.INT64_MAX else None


uint_text = st.one_of(
    st.integers(0, 2**64).map(lambda v: str(v).encode()),
    st.text("0123456789", max_size=24).map(str.encode),
    st.text("0123456789 +-_.xe", max_size=12).map(str.encode),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(uint_text, min_size=1, max_size=30), st.booleans())
def test_uints_equal_python_int(texts: list[bytes], strict: bool) -> None:
    buf, start, end = fields_of(texts)
    values, ok = parse_uints(buf, start, end, strict=strict)
    for text, value, parsed in zip(texts, values.tolist(), ok.tolist(), strict=True):
        expected = python_uint(text)
        plain = expected is not None and text.isdigit() and len(text) <= 19
        if expected is None or (strict and not plain):
            assert not parsed and value == 0, text
        else:
            assert parsed and value == expected, text


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6), st.lists(st.integers(0, 10**9), min_size=2, max_size=50), st.sampled_from([T0, 17, 2**63 - 10**10]))
def test_times_sharing_their_leading_digits(first: int, steps: list[int], base: int) -> None:
    times = np.cumsum([base + first, *steps])
    texts = [str(t).encode() for t in times.tolist()]
    buf, start, end = fields_of(texts)
    values, ok = parse_uints(buf, start, end)
    assert values.tolist() == [python_uint(t) or 0 for t in texts]
    assert ok.tolist() == [python_uint(t) is not None for t in texts]


@pytest.mark.parametrize(("text", "plain", "lenient"), [
    (b"9223372036854775807", 2**63 - 1, 2**63 - 1), (b"9223372036854775808", None, None),
    (b"9999999999999999999", None, None), (b"18446744073709551616", None, None),
    (b"00000000000000000001", None, 1), (b"0000000000000000001", 1, 1), (b"", None, None),
])
def test_uint_limits(text: bytes, plain: int | None, lenient: int | None) -> None:
    buf, start, end = fields_of([text, b"7"])
    for strict, expected in ((True, plain), (False, lenient)):
        values, ok = parse_uints(buf, start, end, strict=strict)
        assert ok.tolist() == [expected is not None, True] and values.tolist() == [expected or 0, 7]


def test_a_bad_shared_lead_word_fails_every_row() -> None:
    texts = [b"x2345" + str(10**13 + i).encode() for i in range(5)]
    buf, start, end = fields_of(texts)
    assert parse_uints(buf, start, end, strict=True)[1].tolist() == [False] * 5


@pytest.mark.parametrize("widths", [(1, 8), (8, 8), (3, 16), (9, 16), (1, 16), (12, 17)])
def test_floats_of_one_and_two_words_with_mixed_widths(widths: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(widths))
    texts = []
    for _ in range(400):
        width = int(rng.integers(widths[0], widths[1] + 1))
        digits = bytearray(rng.choice(list(b"0123456789"), width).tolist())
        if width > 1 and rng.random() < 0.8:
            digits[int(rng.integers(0, width))] = ord(".")
        texts.append(bytes(digits))
    buf, start, end = fields_of(texts)
    values, ok = parse_floats(buf, start, end)
    for text, value, parsed in zip(texts, values.tolist(), ok.tolist(), strict=True):
        try:
            expected = float(text)
        except ValueError:
            assert not parsed, text
            continue
        assert parsed and np.float64(value).tobytes() == np.float64(expected).tobytes(), text


@pytest.mark.parametrize("text", [b"1./2", b"./", b"1.2/3", b"12/", b"/1.2", b"1..2", b"9.9.", b".\xff", b"\xff.1"])
def test_slashes_and_stray_bytes_next_to_dots_are_refused(text: bytes) -> None:
    buf, start, end = fields_of([text, b"1.5", b"123456789.25"])
    values, ok = parse_floats(buf, start, end)
    assert ok.tolist() == [False, True, True] and values[1:].tolist() == [1.5, 123456789.25]


def test_clean_chunks_split_as_the_general_path_does() -> None:
    text = b"".join(b"%d,BTC-USDT,%d.5,%d\n" % (T0 + i, i, i + 1) for i in range(50))
    buf = padded(text)
    fast, general = split_rows(buf, 4, 2), fieldparse._split_rows_general(buf, 4, 2)
    for a, b in ((fast.starts, general.starts), (fast.ends, general.ends)):
        assert [x.tolist() for x in a] == [x.tolist() for x in b]
    assert fast.line_no.tolist() == general.line_no.tolist() == list(range(2, 52)) and fast.n_lines == 50
    # a space is a byte up to ',' too: the chunk leaves the fast path and the row still reads
    assert split_rows(padded(b"1,A-B,1,2 \n"), 4, 2).ends[3].tolist() == [PAD + 10]


def interned(interner: FieldInterner, names: list[bytes]) -> list[int]:
    buf, start, end = fields_of(names)
    return interner.codes(buf, start, end).tolist()


@pytest.mark.parametrize("max_hash_bits", [16, 0])
def test_interner_codes_follow_first_appearance_across_chunks(max_hash_bits: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FieldInterner, "MAX_HASH_BITS", max_hash_bits)  # 0: no hash table, a sorted search
    names = [f"C{i}-USDT".encode() for i in range(300)] + [b"DOGE-USDT", b"A" * 20 + b"-" + b"B" * 11]
    rng = np.random.default_rng(1)
    interner = FieldInterner()
    seen: dict[bytes, int] = {}
    for _ in range(4):
        chunk = [names[i] for i in rng.integers(0, len(names), 200)] + [b"", b"X" * 33]
        expected = [seen.setdefault(n, len(seen)) if 1 <= len(n) <= 32 else -1 for n in chunk]
        assert interned(interner, chunk) == expected
    assert interner.texts == list(seen)


def test_an_empty_bucket_of_the_hash_table_matches_no_key() -> None:
    interner = FieldInterner()
    assert interned(interner, [b"BTC-USDT", b"ETH-USDT"]) == [0, 1]
    assert interned(interner, [b"\0", b"ETH-USDT", b"BTC-USDT"]) == [2, 1, 0]  # (key 0: the bucket is empty)
