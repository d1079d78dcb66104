"""OKX spot end to end: the simulator's v5 public websocket and instruments document, read by cryptofeed's own OKX
parser through `CryptofeedSource` (the cases shared with Binance and Kraken run in test_simulator_cryptofeed.py)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import pytest_asyncio
from cryptofeed.exchanges import OKX
from cryptofeed.symbols import Symbols
from websockets.asyncio.client import connect

from engine.types import Tick
from feeds.simulator import ExchangeSimulator
from feeds.simulator.exchange_info import OKX_INSTRUMENTS_PATH, exchange_info
from feeds.simulator.okx import OkxDialect
from ops.config import load_config
from ops.feed import feed_source
from tests.integration.feed_kit import feeding, simulator, source_for

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("clear_symbols")]

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ("BTC-USDT", "ETH-USDT", "DOGE-USDT")
WAIT = 10.0
OKX_PUBLIC_WS = "wss://ws.okx.com:8443/ws/v5/public"


@pytest_asyncio.fixture
async def sim(cert_dir: Path) -> AsyncIterator[ExchangeSimulator]:
    async with simulator(cert_dir, SYMBOLS, exchanges=("okx",)) as s:
        yield s


def okx_dialect(sim: ExchangeSimulator) -> OkxDialect:
    dialect = sim.dialect("okx")
    assert isinstance(dialect, OkxDialect)
    return dialect


async def subscribed(sim: ExchangeSimulator, symbol: str = SYMBOLS[-1]) -> None:
    await asyncio.wait_for(sim.wait_for_subscribers(1, exchange="okx", symbol=symbol), WAIT)


@pytest.mark.asyncio
async def test_ticks_carry_okxs_own_time_and_the_receive_time(sim: ExchangeSimulator) -> None:
    exchange_ns = 1_700_000_000_123_456_789  # OKX sends whole milliseconds: the adapter sees ...123 ms
    okx_dialect(sim).clock_ns = lambda: exchange_ns
    source = source_for(sim, "okx", SYMBOLS)
    async with feeding(source) as ticks:
        await subscribed(sim)
        before = time.time_ns()
        await sim.publish(Tick("DOGE-USDT", 0.08123, 0.08124, 0, 0))
        tick = await asyncio.wait_for(ticks.get(), WAIT)
        after = time.time_ns()
    assert (tick.symbol, tick.bid, tick.ask) == ("DOGE-USDT", 0.08123, 0.08124)
    assert tick.ts_event_ns == 1_700_000_000_123_000_000
    assert before - 1_000_000 <= tick.ts_recv_ns <= after + 1_000_000
    # Every frame was either a tick or one of OKX's subscribe answers, one per instrument.
    assert source.frames == len(SYMBOLS) + 1 and source.ticks == 1
    assert not source.bad_frames


@pytest.mark.asyncio
async def test_the_websocket_speaks_okx_v5(sim: ExchangeSimulator) -> None:
    okx_dialect(sim).clock_ns = lambda: 1_597_026_383_085_000_000
    request = {"op": "subscribe", "args": [{"channel": "tickers", "instId": "BTC-USDT"},
                                           {"channel": "tickers", "instId": "PEPE-USDT"},
                                           {"channel": "books", "instId": "ETH-USDT"}]}
    async with connect(sim.ws_url("okx"), ssl=sim.ssl_context_for_clients(), proxy=None) as ws:
        await ws.send(orjson.dumps(request).decode())
        answers = [orjson.loads(await asyncio.wait_for(ws.recv(), WAIT)) for _ in range(3)]
        await ws.send("ping")
        pong = await asyncio.wait_for(ws.recv(), WAIT)
        assert await sim.publish(Tick("BTC-USDT", 42001.45, 42001.5, 0, 0)) == 1
        push = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
        await ws.send(orjson.dumps({"op": "unsubscribe", "args": [request["args"][0]]}).decode())
        gone = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
        await ws.send("{not json")
        bad = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
    conn_id = answers[0]["connId"]
    assert answers[0] == {"event": "subscribe", "arg": {"channel": "tickers", "instId": "BTC-USDT"}, "connId": conn_id}
    assert [(a["event"], a["code"]) for a in answers[1:]] == [("error", "60018"), ("error", "60018")]
    assert pong == "pong"
    assert push["arg"] == {"channel": "tickers", "instId": "BTC-USDT"}
    [data] = push["data"]
    assert {k: data[k] for k in ("instType", "instId", "bidPx", "askPx", "bidSz", "askSz", "ts")} == {
        "instType": "SPOT", "instId": "BTC-USDT", "bidPx": "42001.45", "askPx": "42001.5", "bidSz": "1",
        "askSz": "1", "ts": "1597026383085"}
    assert all(isinstance(v, str) for v in data.values())  # OKX sends every number as a string
    assert gone == {"event": "unsubscribe", "arg": {"channel": "tickers", "instId": "BTC-USDT"}, "connId": conn_id}
    assert (bad["event"], bad["code"]) == ("error", "60012")
    assert sim.subscriber_count("okx") == 0


@pytest.mark.asyncio
async def test_the_instruments_document_seeds_cryptofeeds_symbols(sim: ExchangeSimulator) -> None:
    ctx = sim.ssl_context_for_clients()
    async with aiohttp.ClientSession() as http:
        async with http.get(sim.rest_url("okx") + OKX_INSTRUMENTS_PATH, ssl=ctx) as resp:
            doc = await resp.json()
        async with http.get(sim.rest_url("okx") + "/api/v5/public/instruments?instType=SWAP", ssl=ctx) as swap:
            swap_status = swap.status
    assert (doc["code"], doc["msg"]) == ("0", "")
    assert [(d["instId"], d["baseCcy"], d["quoteCcy"], d["state"]) for d in doc["data"]] == [
        (s, *s.split("-"), "live") for s in SYMBOLS]
    assert doc == exchange_info("okx", SYMBOLS)  # what a live feed builds for itself instead of asking OKX
    assert swap_status == 404  # only spot instruments are listed
    async with feeding(source_for(sim, "okx", SYMBOLS)) as ticks:  # rest_url given: the document is fetched
        await subscribed(sim)
        await sim.publish(Tick("ETH-USDT", 2000.25, 2000.5, 0, 0))
        assert (await asyncio.wait_for(ticks.get(), WAIT)).symbol == "ETH-USDT"
    normalized, info = Symbols.get(OKX.id)
    assert normalized == {s: s for s in SYMBOLS}
    assert info["tick_size"]["BTC-USDT"] == "0.00000001" and info["instrument_type"]["BTC-USDT"] == "spot"


@pytest.mark.asyncio
async def test_a_feed_silent_from_the_start_is_rebuilt_and_resumes(sim: ExchangeSimulator) -> None:
    sim.go_silent(True)  # not even the subscribe answers: cryptofeed's own watchdog would never notice
    rebuilt = asyncio.Event()
    source = source_for(sim, "okx", SYMBOLS, stale_secs=0.3, reconnect_max_secs=0.2, on_reconnect=rebuilt.set)
    async with feeding(source) as ticks:
        await asyncio.wait_for(rebuilt.wait(), WAIT)
        sim.go_silent(False)
        await subscribed(sim)
        await sim.publish(Tick("BTC-USDT", 100.0, 100.5, 0, 0))
        tick = await asyncio.wait_for(ticks.get(), WAIT)
    assert (tick.symbol, tick.bid, tick.ask) == ("BTC-USDT", 100.0, 100.5)
    assert source.reconnects >= 1 and sim.stats.faults_injected["silent"] == 1


@pytest.mark.asyncio
async def test_a_live_okx_feed_uses_okxs_public_websocket(cert_dir: Path) -> None:
    config = load_config(ROOT / "examples" / "okx_live.toml")
    assert config.feed.source == "okx"
    async with feed_source(config, config.symbols(), cert_dir=cert_dir) as source:  # built, never run
        endpoint = source.websocket_endpoint()
    assert (source.exchange, source.ws_url, source.rest_url, source.ssl_context) == ("okx", None, None, None)
    assert endpoint.address == OKX_PUBLIC_WS == OKX.websocket_endpoints[0].address
    assert endpoint.options["compression"] is None and "proxy" not in endpoint.options
