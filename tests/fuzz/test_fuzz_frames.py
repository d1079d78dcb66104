"""Fuzzed exchange frames sent by the real simulator to the real `CryptofeedSource` (Binance, Kraken and OKX).

Each frame is built with the verdict the adapter must reach: a tick (good prices), a counted drop by reason
(`unparseable`, `nan`, `non_positive`, `crossed`, `error`), `ignored` for shapes cryptofeed 2.4.1 itself logs
and skips, or nothing at all for a control message. After every batch a sentinel tick must still arrive on the
same connection.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from cryptofeed.symbols import Symbols
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.types import Tick
from feeds.cryptofeed_source import CryptofeedSource
from feeds.simulator import ExchangeSimulator
from feeds.simulator.exchange_info import binance_name, kraken_wsname, okx_inst_id
from feeds.simulator.kraken import CHANNEL_ID_BASE
from feeds.simulator.wire import text_frame
from tests.fuzz import family
from tests.integration.feed_kit import feeding, simulator, source_for

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("clear_symbols")]

Exchange = Literal["binance", "kraken", "okx"]
EXCHANGES = ["binance", "kraken", "okx"]
SYMBOLS = ("BTC-USDT", "ETH-USDT", "SOL-USDT", "DOGE-USDT")
SENTINEL = Tick("DOGE-USDT", 0.123456, 0.123457, 0, 0)
WAIT_SECS = 10.0
FRAMES_PER_BATCH = (40, 80)
BATCHES = 4  # per exchange and test: a few hundred frames in all, in a few seconds

# Price tokens as JSON values, with the reason the adapter gives when one of them is the bid or the ask.
UNPARSEABLE = ['"abc"', '""', '"1,5"', '"0x10"', '"1..2"', "null", "[]", "{}"]
SIGNALLING = ['"sNaN"']  # parses as a Decimal, then float() raises: the callback's guard counts it as `error`
NOT_FINITE = ['"NaN"', '"nan"', '"Infinity"', '"-Infinity"', '"1e999"', '"-1e999"']
NOT_POSITIVE = ['"0"', '"-0"', '"-1.5"', '"0E-8"', '"1e-999"']
REASON_ORDER = ("unparseable", "error", "nan", "non_positive", "crossed")
BINANCE_SHAPES = ("ok", "ok", "ok", "unknown_symbol", "no_stream", "stream_without_at", "no_data", "missing_bid",
                  "not_json", "truncated", "top_array", "top_number", "top_null", "empty", "padded",
                  "data_without_A", "unknown_event")
KRAKEN_SHAPES = ("ok", "ok", "ok", "unknown_pair", "short_list", "empty_list", "missing_bid", "bid_not_a_list",
                 "no_event", "not_json", "truncated", "top_number", "top_null", "empty", "padded",
                 "unknown_channel", "unknown_event", "subscription_error")
OKX_SHAPES = ("ok", "ok", "ok", "unknown_inst", "inst_id_differs", "no_inst_id", "arg_not_an_object", "no_arg",
              "no_data", "empty_data", "data_not_a_list", "missing_bid", "no_ts", "ts_not_a_number", "two_updates",
              "not_json", "truncated", "top_array", "top_string", "top_number", "top_null", "empty", "padded",
              "pong", "unknown_channel", "index_tickers", "subscribe_answer", "error_event", "unknown_event")
IGNORED_BY_CRYPTOFEED: dict[Exchange, frozenset[str]] = {
    "binance": frozenset({"data_without_A", "unknown_event"}),
    "kraken": frozenset({"unknown_channel", "unknown_event", "subscription_error"}),
    # OKX's message_handler logs an error or unknown event and a frame with neither `event` nor `arg` (a list or
    # a string too: it only asks `"arg" in msg`); an unknown channel and an empty `data` list pass silently.
    "okx": frozenset({"error_event", "unknown_event", "no_arg", "top_array", "top_string", "unknown_channel",
                      "empty_data"}),
}
# Shapes judged by their prices. OKX matches channels by substring (`"tickers" in channel`) and names a tick
# after `arg.instId` whatever `data[].instId` says; `two_updates` delivers its first update before the second.
PRICED = frozenset({"ok", "padded", "inst_id_differs", "index_tickers", "two_updates"})
CONTROL = frozenset({"subscribe_answer"})  # the adapter's `_is_control`: neither a tick nor a count
OKX_TS_MS = 1_700_000_000_000


@dataclass(frozen=True)
class Frame:
    """One raw frame and what the adapter must make of it."""

    payload: bytes
    verdict: str  # "tick", a bad-frame reason, "ignored" or "control"
    tick: tuple[str, float, float] | None = None
    lead: tuple[str, float, float] | None = None  # a good update delivered before the judged one, same frame


def token_value(token: str) -> Decimal | None:
    """The Decimal cryptofeed parses from a JSON token, or None when it cannot."""
    value = json.loads(token, parse_float=Decimal)
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        return None
    try:
        return Decimal(value)
    except ArithmeticError:
        return None


def price_verdict(bid: str, ask: str) -> tuple[str, tuple[float, float] | None]:
    """The adapter's verdict on a well-formed frame carrying these two tokens."""
    b, a = token_value(bid), token_value(ask)
    if b is None or a is None:
        return "unparseable", None
    if b.is_snan() or a.is_snan():
        return "error", None
    fb, fa = float(b), float(a)
    reason = ("nan" if not (b.is_finite() and a.is_finite()) or abs(fb) == float("inf") or abs(fa) == float("inf")
              else "non_positive" if fb <= 0 or fa <= 0 else "crossed" if fb > fa else "tick")
    return reason, (fb, fa) if reason == "tick" else None


def okx_token(token: str) -> str:
    """The token OKX's parser judges: `Decimal(px) if px else Decimal(0)` reads a falsy price ("", null, [])
    as 0."""
    return token if json.loads(token, parse_float=Decimal) else '"0"'


tokens = st.one_of(
    st.floats(1e-8, 1e9).map(lambda x: json.dumps(repr(x))),
    st.sampled_from(["1.5", "7", '"1_000"', '" 7 "']),
    st.sampled_from(UNPARSEABLE + SIGNALLING + NOT_FINITE + NOT_POSITIVE),
)


def binance_frame(shape: str, k: int, bid: str, ask: str) -> Frame:
    symbol = SYMBOLS[k % len(SYMBOLS)]
    name = binance_name(symbol)
    stream = name.lower() + "@bookTicker"
    data = f'"u":1,"s":"{name}","b":{bid},"B":"1","a":{ask},"A":"1"'
    good = f'{{"stream":"{stream}","data":{{{data}}}}}'
    raw = {
        "ok": good,
        "unknown_symbol": good.replace(name, "PEPEUSDT").replace(name.lower(), "pepeusdt"),
        "no_stream": f'{{"data":{{{data}}}}}',
        "stream_without_at": good.replace("@bookTicker", ""),
        "no_data": f'{{"stream":"{stream}"}}',
        "missing_bid": f'{{"stream":"{stream}","data":{{"u":1,"s":"{name}","a":{ask},"A":"1"}}}}',
        "not_json": "this is not json",
        "truncated": good[: len(good) // 2],
        "top_array": "[1,2,3]",
        "top_number": "42",
        "top_null": "null",
        "empty": "",
        "padded": good[:-2] + ',"pad":"' + "x" * 50_000 + '"}}',
        "data_without_A": f'{{"stream":"{stream}","data":{{"u":1,"s":"{name}","b":{bid}}}}}',
        "unknown_event": f'{{"stream":"{stream}","data":{{"e":"bogus","s":"{name}"}}}}',
    }[shape]
    return _frame("binance", shape, raw, symbol, bid, ask)


def kraken_frame(shape: str, k: int, bid: str, ask: str) -> Frame:
    symbol = SYMBOLS[k % len(SYMBOLS)]
    pair, cid = kraken_wsname(symbol), CHANNEL_ID_BASE + k % len(SYMBOLS)
    body = f'"a":[{ask},1,"1.0"],"b":[{bid},1,"1.0"],"c":["1","0.1"]'
    good = f'[{cid},{{{body}}},"ticker","{pair}"]'
    raw = {
        "ok": good,
        "unknown_pair": good.replace(pair, "PEPE/USDT"),
        "short_list": f"[{cid}]",
        "empty_list": "[]",
        "missing_bid": f'[{cid},{{"a":[{ask},1,"1.0"]}},"ticker","{pair}"]',
        "bid_not_a_list": f'[{cid},{{"a":[{ask},1,"1.0"],"b":5}},"ticker","{pair}"]',
        "no_event": '{"status":"online"}',
        "not_json": "this is not json",
        "truncated": good[: len(good) // 2],
        "top_number": "42",
        "top_null": "null",
        "empty": "",
        "padded": f'[{cid},{{{body},"pad":"' + "x" * 50_000 + f'"}},"ticker","{pair}"]',
        "unknown_channel": good.replace('"ticker"', '"bogus"'),
        "unknown_event": '{"event":"bogus"}',
        "subscription_error": '{"event":"subscriptionStatus","status":"error","errorMessage":"nope"}',
    }[shape]
    return _frame("kraken", shape, raw, symbol, bid, ask)


def okx_frame(shape: str, k: int, bid: str, ask: str) -> Frame:
    symbol = SYMBOLS[k % len(SYMBOLS)]
    inst = okx_inst_id(symbol)
    arg = f'"arg":{{"channel":"tickers","instId":"{inst}"}}'
    head, ts = f'{{"instType":"SPOT","instId":"{inst}"', f'"ts":"{OKX_TS_MS + k}"'
    update = f'{head},"bidPx":{bid},"bidSz":"1","askPx":{ask},"askSz":"1",{ts}}}'
    good = f'{{{arg},"data":[{update}]}}'
    answer = f'"arg":{{"channel":"tickers","instId":"{inst}"}},"connId":"0000000a"'
    raw = {
        "ok": good,
        "unknown_inst": good.replace(inst, "PEPE-USDT"),
        "inst_id_differs": f'{{{arg},"data":[{update.replace(inst, "PEPE-USDT")}]}}',
        "no_inst_id": f'{{"arg":{{"channel":"tickers"}},"data":[{update}]}}',
        "arg_not_an_object": f'{{"arg":"tickers","data":[{update}]}}',
        "no_arg": f'{{"data":[{update}]}}',
        "no_data": f"{{{arg}}}",
        "empty_data": f'{{{arg},"data":[]}}',
        "data_not_a_list": f'{{{arg},"data":{update}}}',
        "missing_bid": f'{{{arg},"data":[{head},"askPx":{ask},"askSz":"1",{ts}}}]}}',
        "no_ts": f'{{{arg},"data":[{head},"bidPx":{bid},"askPx":{ask}}}]}}',
        "ts_not_a_number": good.replace(ts, '"ts":"soon"'),
        "two_updates": f'{{{arg},"data":[{head},"bidPx":"100","askPx":"100.5",{ts}}},{update}]}}',
        "not_json": "this is not json",
        "truncated": good[: len(good) // 2],
        "top_array": "[1,2,3]",
        "top_string": '"tickers"',
        "top_number": "42",
        "top_null": "null",
        "empty": "",
        "padded": good[:-3] + ',"pad":"' + "x" * 50_000 + '"}]}',
        "pong": "pong",  # OKX's answer to a text `ping`, which cryptofeed never sends: not JSON
        "unknown_channel": good.replace('"tickers"', '"bogus"'),
        "index_tickers": good.replace('"tickers"', '"index-tickers"'),
        "subscribe_answer": f'{{"event":"subscribe",{answer}}}',
        "error_event": '{"event":"error","code":"60018","msg":"Wrong URL or channel:tickers,instId:PEPE-USDT '
                       'doesn\'t exist.","connId":"0000000a"}',
        "unknown_event": f'{{"event":"bogus",{answer}}}',
    }[shape]
    frame = _frame("okx", shape, raw, symbol, okx_token(bid), okx_token(ask))
    return replace(frame, lead=(symbol, 100.0, 100.5)) if shape == "two_updates" else frame


def _frame(exchange: Exchange, shape: str, raw: str, symbol: str, bid: str, ask: str) -> Frame:
    if shape in IGNORED_BY_CRYPTOFEED[exchange]:
        return Frame(raw.encode(), "ignored")
    if shape in CONTROL:
        return Frame(raw.encode(), "control")
    if shape not in PRICED:
        return Frame(raw.encode(), "unparseable")
    verdict, prices = price_verdict(bid, ask)
    return Frame(raw.encode(), verdict, (symbol, *prices) if prices else None)


BUILDERS: dict[Exchange, tuple[tuple[str, ...], Callable[[str, int, str, str], Frame]]] = {
    "binance": (BINANCE_SHAPES, binance_frame),
    "kraken": (KRAKEN_SHAPES, kraken_frame),
    "okx": (OKX_SHAPES, okx_frame),
}


def expected_ticks(frames: list[Frame]) -> list[tuple[str, float, float]]:
    """The ticks the frames must deliver, in order."""
    return [t for f in frames for t in (f.lead, f.tick) if t is not None]


def frames_for(exchange: Exchange) -> st.SearchStrategy[list[Frame]]:
    shapes, build = BUILDERS[exchange]
    one = st.builds(build, st.sampled_from(shapes), st.integers(0, 3), tokens, tokens)
    return st.lists(one, min_size=FRAMES_PER_BATCH[0], max_size=FRAMES_PER_BATCH[1])


class FuzzSimulator(ExchangeSimulator):
    """The real simulator, plus raw frames written to every client of one exchange, in order with its own."""

    def send_raw(self, exchange: Exchange, payloads: list[bytes]) -> int:
        clients = [c for c in self._clients if c.exchange == exchange and c.is_open]
        for c in clients:
            c.write(b"".join(text_frame(p) for p in payloads))
        return len(clients)


@contextlib.asynccontextmanager
async def feed(cert_dir: Path, exchange: Exchange) -> AsyncIterator[tuple[FuzzSimulator, CryptofeedSource,
                                                                          asyncio.Queue[Tick]]]:
    async with simulator(cert_dir, SYMBOLS, kind=FuzzSimulator) as sim:
        source = source_for(sim, exchange, SYMBOLS, reconnect_max_secs=0.5)
        try:
            async with feeding(source) as ticks:
                await asyncio.wait_for(sim.wait_for_subscribers(1, exchange=exchange, symbol=SYMBOLS[-1]), WAIT_SECS)
                yield sim, source, ticks
        finally:
            Symbols.clear()


async def until_sentinel(ticks: asyncio.Queue[Tick]) -> list[Tick]:
    """Every tick delivered up to and including the sentinel."""
    got: list[Tick] = []
    while not got or (got[-1].symbol, got[-1].bid, got[-1].ask) != (SENTINEL.symbol, SENTINEL.bid, SENTINEL.ask):
        got.append(await asyncio.wait_for(ticks.get(), WAIT_SECS))
    return got[:-1]


async def play(cert_dir: Path, exchange: Exchange, frames: list[Frame]) -> dict[str, Any]:
    async with feed(cert_dir, exchange) as (sim, source, ticks):
        frames_before = source.frames
        assert sim.send_raw(exchange, [f.payload for f in frames]) == 1
        assert await sim.publish(SENTINEL) == 1
        delivered = await until_sentinel(ticks)
        return {"ticks": [(t.symbol, t.bid, t.ask) for t in delivered], "bad": Counter(source.bad_frames),
                "frames": source.frames - frames_before - 1, "reconnects": source.reconnects,
                "accepted": sim.stats.connections_accepted}


@pytest.mark.parametrize("exchange", EXCHANGES)
@settings(max_examples=BATCHES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data())
def test_bad_frames_are_counted_and_the_feed_keeps_delivering(cert_dir: Path, exchange: Exchange,
                                                              data: st.DataObject) -> None:
    frames = data.draw(frames_for(exchange))
    tally = family("frames")
    tally.tried += len(frames)
    bad = [f for f in frames if f.verdict not in ("tick", "control")]
    tally.bad += len(bad)
    try:
        seen = asyncio.run(play(cert_dir, exchange, frames))
    except Exception:
        tally.crashes += 1
        raise
    expected_bad = Counter(f.verdict for f in bad)  # "ignored": frames cryptofeed skips, counted by the adapter
    tally.answered += sum(min(n, seen["bad"][r]) for r, n in expected_bad.items())
    assert seen["bad"] == expected_bad
    assert seen["ticks"] == expected_ticks(frames)
    assert (seen["reconnects"], seen["accepted"]) == (0, 1)
    # Kraken's heartbeat and late subscribe answers may add control frames; nothing else reaches the parser unseen.
    assert seen["frames"] >= len(frames)


prices = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 5e-324, 1.7e308, -1.0])


async def publish_all(cert_dir: Path, exchange: Exchange, quotes: list[tuple[int, float, float]]) -> dict[str, Any]:
    async with feed(cert_dir, exchange) as (sim, source, ticks):
        sim.send_garbage(6)  # the simulator's own broken frames: every kind once
        sim.cross(SYMBOLS[0])  # and its crossed book on the next BTC frame
        await sim.publish(Tick(SYMBOLS[0], 100.0, 100.5, 0, 0))
        for k, bid, ask in quotes:
            await sim.publish(Tick(SYMBOLS[k], bid, ask, 0, 0))
        await sim.publish(SENTINEL)
        delivered = await until_sentinel(ticks)
        return {"ticks": [(t.symbol, t.bid, t.ask) for t in delivered], "bad": Counter(source.bad_frames),
                "reconnects": source.reconnects, "faults": sim.stats.faults_injected}


@pytest.mark.parametrize("exchange", EXCHANGES)
@settings(max_examples=BATCHES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(quotes=st.lists(st.tuples(st.integers(0, 2), prices, prices), min_size=20, max_size=60))
def test_prices_the_simulator_encodes_are_judged_like_the_book_would(
    cert_dir: Path, exchange: Exchange, quotes: list[tuple[int, float, float]],
) -> None:
    tally = family("frames")
    verdicts = [price_verdict(json.dumps(repr(b)), json.dumps(repr(a))) for _, b, a in quotes]
    tally.tried += len(quotes) + 7
    tally.bad += sum(1 for v, _ in verdicts if v != "tick") + 7
    try:
        seen = asyncio.run(publish_all(cert_dir, exchange, quotes))
    except Exception:
        tally.crashes += 1
        raise
    expected = Counter(v for v, _ in verdicts if v != "tick") + Counter(unparseable=6, crossed=1)
    tally.answered += sum(min(n, seen["bad"][r]) for r, n in expected.items())
    assert seen["bad"] == expected
    assert seen["ticks"] == [(SYMBOLS[k], *p) for (k, _, _), (v, p) in zip(quotes, verdicts, strict=True)
                             if v == "tick" and p is not None]
    assert seen["reconnects"] == 0
    assert seen["faults"] == {"garbage": 6, "cross": 1}


def test_the_frame_builders_reach_every_verdict() -> None:
    verdicts = {kraken_frame(s, 0, b, a).verdict for s in KRAKEN_SHAPES for b in ('"1"', *UNPARSEABLE[:1], *SIGNALLING,
                *NOT_FINITE[:1], *NOT_POSITIVE[:1]) for a in ('"2"', '"0.5"')}
    verdicts |= {binance_frame(s, 0, '"1"', '"2"').verdict for s in BINANCE_SHAPES}
    assert verdicts == {"tick", "ignored", *REASON_ORDER}
    okx = {okx_frame(s, 0, b, a).verdict for s in OKX_SHAPES for b in ('"1"', '"abc"', *SIGNALLING, '"NaN"', '""')
           for a in ('"2"', '"0.5"')}
    assert okx == {"tick", "ignored", "control", *REASON_ORDER}
    assert okx_frame("ok", 0, "null", '"2"').verdict == "non_positive"  # a falsy price is read as 0
    two = okx_frame("two_updates", 1, '"abc"', '"2"')  # the first update is delivered before the second raises
    assert (two.verdict, two.tick, two.lead) == ("unparseable", None, ("ETH-USDT", 100.0, 100.5))
    assert price_verdict('"1e-999"', '"1"') == ("non_positive", None)
    assert price_verdict('" 7 "', '"1_000"') == ("tick", (7.0, 1000.0))


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_frames_cryptofeed_skips_are_counted_too(cert_dir: Path, exchange: Exchange) -> None:
    shapes, build = BUILDERS[exchange]
    skipped = [build(s, 0, '"1"', '"2"') for s in shapes if s in IGNORED_BY_CRYPTOFEED[exchange]]
    seen = asyncio.run(play(cert_dir, exchange, skipped))
    assert sum(seen["bad"].values()) == len(skipped)


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_frame_that_breaks_the_protocol_costs_one_reconnect_and_no_tick(cert_dir: Path, exchange: Exchange) -> None:
    async def scenario() -> tuple[int, list[Tick]]:
        async with feed(cert_dir, exchange) as (sim, source, ticks):
            reconnected = asyncio.Event()
            source.on_reconnect = reconnected.set
            sim.send_raw(exchange, [b"\xff\xfe not utf-8"])  # a text frame that is not UTF-8: the client must close
            await asyncio.wait_for(reconnected.wait(), WAIT_SECS)
            await asyncio.wait_for(sim.wait_for_subscribers(1, exchange=exchange, symbol=SYMBOLS[-1]), WAIT_SECS)
            await sim.publish(SENTINEL)
            return source.reconnects, await until_sentinel(ticks)

    family("frames").tried += 1
    family("frames").bad += 1
    reconnects, before_sentinel = asyncio.run(scenario())
    family("frames").answered += 1
    family("frames").note("connections dropped by a protocol error, then rebuilt", reconnects)
    assert reconnects == 1
    assert before_sentinel == []
