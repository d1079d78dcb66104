"""cryptofeed's real Binance, Kraken and OKX parsers against the local TLS exchange simulator."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptofeed.exchange import Exchange
from cryptofeed.symbols import Symbols

from engine.columns import TickColumns
from engine.types import Tick
from feeds.cryptofeed_source import FEED_CLASSES, CryptofeedSource, FeedConfigError
from feeds.recorder import TickRecorder
from feeds.simulator import (
    ExchangeSimulator,
    PushSource,
    ReplaySource,
    SyntheticSource,
    run_exchange_sim,
)
from feeds.simulator.certs import client_ssl_context
from feeds.simulator.exchange_info import EXCHANGES as SIMULATED
from ops.config_schema import LIVE_EXCHANGES
from tests.integration.feed_kit import feeding, simulator, source_for
from tests.integration.services import free_port

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("clear_symbols")]

EXCHANGES = ("binance", "kraken", "okx")

SYMBOLS = ("BTC-USDT", "ETH-USDT", "SOL-USDT", "DOGE-USDT")
WAIT = 10.0


def test_every_exchange_a_config_or_command_may_name_has_an_adapter_and_a_simulated_venue() -> None:
    assert set(LIVE_EXCHANGES) == set(FEED_CLASSES) == set(SIMULATED) == set(EXCHANGES)


@pytest_asyncio.fixture
async def sim(cert_dir: Path) -> AsyncIterator[ExchangeSimulator]:
    async with simulator(cert_dir, SYMBOLS) as s:
        yield s


async def next_tick(ticks: asyncio.Queue[Tick]) -> Tick:
    return await asyncio.wait_for(ticks.get(), WAIT)


async def subscribed(sim: ExchangeSimulator, exchange: Any, symbol: str = SYMBOLS[-1]) -> None:
    await asyncio.wait_for(sim.wait_for_subscribers(1, exchange=exchange, symbol=symbol), WAIT)


def same(a: Tick, b: Tick) -> bool:
    return a.symbol == b.symbol and a.bid.hex() == b.bid.hex() and a.ask.hex() == b.ask.hex()


@pytest.mark.asyncio
@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_published_ticks_arrive_exactly(sim: ExchangeSimulator, exchange: str) -> None:
    sent = [
        Tick("BTC-USDT", 42001.45, 42001.46, 0, 0),
        Tick("ETH-USDT", 0.1 + 0.2, 0.30000000000000010, 0, 0),
        Tick("DOGE-USDT", 1e-8, 1.0000000000000002e-8, 0, 0),
        Tick("SOL-USDT", 123456789.123, 123456789.125, 0, 0),
        Tick("BTC-USDT", 42001.5, 42001.5, 0, 0),  # a locked book is a valid tick
    ]
    source = source_for(sim, exchange, SYMBOLS)
    async with feeding(source) as ticks:
        await subscribed(sim, exchange)
        before = time.time_ns()
        for t in sent:
            assert await sim.publish(t) == 1
        got = [await next_tick(ticks) for _ in sent]
        after = time.time_ns()
    for want, have in zip(sent, got, strict=True):
        assert same(want, have), (want, have)
        assert before - 1_000_000 <= have.ts_recv_ns <= after + 1_000_000
        if exchange == "okx":  # OKX stamps its own time in ms (`ts`); the simulator's clock is the wall clock
            assert have.ts_event_ns % 1_000_000 == 0
            assert before - 1_000_000 < have.ts_event_ns <= have.ts_recv_ns
        else:  # neither Binance spot bookTicker nor Kraken's ticker carries a venue time: event time = receipt
            assert have.ts_event_ns == have.ts_recv_ns
    assert source.ticks == len(sent)
    assert not source.bad_frames


@pytest.mark.asyncio
@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_spike_multiplies_the_next_frame_only(sim: ExchangeSimulator, exchange: str) -> None:
    async with feeding(source_for(sim, exchange, SYMBOLS)) as ticks:
        await subscribed(sim, exchange)
        sim.spike("ETH-USDT", 2.0)
        await sim.publish(Tick("ETH-USDT", 2000.25, 2000.5, 0, 0))
        await sim.publish(Tick("ETH-USDT", 2000.25, 2000.5, 0, 0))
        first, second = await next_tick(ticks), await next_tick(ticks)
    assert (first.bid, first.ask) == (4000.5, 4001.0)
    assert (second.bid, second.ask) == (2000.25, 2000.5)
    assert sim.stats.faults_injected["spike"] == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_reconnects_after_drop_connections(sim: ExchangeSimulator, exchange: str) -> None:
    reconnected = asyncio.Event()
    source = source_for(sim, exchange, SYMBOLS, on_reconnect=reconnected.set, reconnect_max_secs=1.0)
    async with feeding(source) as ticks:
        await subscribed(sim, exchange)
        await sim.publish(Tick("BTC-USDT", 100.0, 101.0, 0, 0))
        assert (await next_tick(ticks)).bid == 100.0
        assert sim.drop_connections() == 1
        await asyncio.wait_for(reconnected.wait(), WAIT)
        await subscribed(sim, exchange)
        await sim.publish(Tick("BTC-USDT", 102.0, 103.0, 0, 0))
        again = await next_tick(ticks)
    assert (again.symbol, again.bid, again.ask) == ("BTC-USDT", 102.0, 103.0)
    assert source.reconnects == 1
    assert sim.stats.connections_accepted == 2
    assert sim.stats.faults_injected["drop"] == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_garbage_and_bad_prices_are_counted_and_dropped(sim: ExchangeSimulator, exchange: str) -> None:
    reasons: list[str] = []
    source = source_for(sim, exchange, SYMBOLS, on_bad_frame=reasons.append)
    async with feeding(source) as ticks:
        await subscribed(sim, exchange)
        sim.send_garbage(6)  # every kind once: broken JSON, missing fields, bad numbers, wrong shapes
        sim.cross("BTC-USDT")
        await sim.publish(Tick("BTC-USDT", 100.0, 101.0, 0, 0))
        await sim.publish(Tick("ETH-USDT", float("nan"), 101.0, 0, 0))
        await sim.publish(Tick("SOL-USDT", 0.0, 101.0, 0, 0))
        await sim.publish(Tick("ETH-USDT", 2000.0, 2000.5, 0, 0))
        good = await next_tick(ticks)
    assert (good.symbol, good.bid, good.ask) == ("ETH-USDT", 2000.0, 2000.5)
    assert ticks.empty()
    assert source.bad_frames == {"unparseable": 6, "crossed": 1, "nan": 1, "non_positive": 1}
    assert sorted(reasons) == sorted(["unparseable"] * 6 + ["crossed", "nan", "non_positive"])
    assert source.reconnects == 0 and sim.stats.connections_accepted == 1
    assert sim.stats.faults_injected == {"garbage": 6, "cross": 1}


@pytest.mark.asyncio
async def test_a_raising_tick_sink_never_drops_the_websocket(sim: ExchangeSimulator) -> None:
    got: list[Tick] = []
    two = asyncio.Event()

    def sink(tick: Tick) -> None:
        got.append(tick)
        if len(got) == 2:
            two.set()
        if len(got) == 1:
            raise RuntimeError("engine hiccup")

    source = source_for(sim, "binance", SYMBOLS)
    task = asyncio.create_task(source.run(sink))
    try:
        await subscribed(sim, "binance")
        await sim.publish(Tick("BTC-USDT", 1.0, 2.0, 0, 0))
        await sim.publish(Tick("BTC-USDT", 3.0, 4.0, 0, 0))
        await asyncio.wait_for(two.wait(), WAIT)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [t.bid for t in got] == [1.0, 3.0]
    assert source.callback_errors == 1 and source.reconnects == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_symbols_are_seeded_without_calling_a_real_exchange(
    sim: ExchangeSimulator, exchange: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    class RefusingHTTP:
        def read(self, address: str, *args: object, **kwargs: object) -> None:
            calls.append(address)
            raise AssertionError(f"cryptofeed tried to fetch {address}")

    monkeypatch.setattr(Exchange, "http_sync", RefusingHTTP())
    # No rest_url: the production path, which builds the document from the configured symbols.
    source = CryptofeedSource(exchange, SYMBOLS, ws_url=sim.ws_url(exchange),  # type: ignore[arg-type]
                              ssl_context=sim.ssl_context_for_clients())
    async with feeding(source) as ticks:
        await subscribed(sim, exchange)
        await sim.publish(Tick("DOGE-USDT", 0.08, 0.0801, 0, 0))
        assert (await next_tick(ticks)).symbol == "DOGE-USDT"
    assert calls == []
    normalized, _ = Symbols.get(FEED_CLASSES[exchange].id)
    assert set(SYMBOLS) <= set(normalized)


@pytest.mark.asyncio
async def test_a_symbol_the_venue_does_not_list_is_a_config_error(sim: ExchangeSimulator) -> None:
    source = source_for(sim, "kraken", ("BTC-USDT", "PEPE-USDT"))
    with pytest.raises(FeedConfigError, match="PEPE-USDT"):
        await asyncio.wait_for(source.run(lambda tick: None), WAIT)


@pytest.mark.asyncio
@pytest.mark.parametrize("exchange", EXCHANGES)
async def test_synthetic_market_arrives_bit_for_bit(cert_dir: Path, exchange: str) -> None:
    market = SyntheticSource(SYMBOLS[:3], seed=7, rate_hz=2000.0, swing=0.05, swing_period_secs=1.0)
    expected = list(next(iter(SyntheticSource(SYMBOLS[:3], seed=7, rate_hz=2000.0, swing=0.05, swing_period_secs=1.0).chunks()))
                    .columns.ticks())[:60]
    async with (simulator(cert_dir, SYMBOLS, market) as sim,
                feeding(source_for(sim, exchange, SYMBOLS[:3])) as ticks):
        got = [await next_tick(ticks) for _ in expected]
    assert all(same(w, h) for w, h in zip(expected, got, strict=True))


@pytest.mark.asyncio
async def test_replay_as_fast_as_possible_keeps_order_and_prices(cert_dir: Path) -> None:
    rows = [Tick(SYMBOLS[i % 3], 100.0 + i * 0.01, 100.5 + i * 0.01, i, 1_000 + i) for i in range(3000)]
    replay = ReplaySource(TickColumns.from_ticks(rows), speed=float("inf"))
    async with (simulator(cert_dir, SYMBOLS, replay) as sim,
                feeding(source_for(sim, "binance", SYMBOLS[:3])) as ticks):
        got = [await next_tick(ticks) for _ in rows]
    assert all(same(w, h) for w, h in zip(rows, got, strict=True))
    assert sim.stats.frames_sent == len(rows)


@pytest.mark.asyncio
async def test_rest_serves_exchange_info_and_refuses_unknown_paths(sim: ExchangeSimulator) -> None:
    import aiohttp

    ctx = sim.ssl_context_for_clients()
    async with aiohttp.ClientSession() as http:
        async with http.get(sim.rest_url("binance") + "/api/v3/exchangeInfo", ssl=ctx) as resp:
            doc = await resp.json()
        async with http.get(sim.rest_url("kraken") + "/0/public/Nope", ssl=ctx) as missing:
            status = missing.status
    assert [s["symbol"] for s in doc["symbols"]] == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]
    assert status == 404


@pytest.mark.asyncio
async def test_run_exchange_sim_replays_a_recorded_file(cert_dir: Path, tmp_path: Path) -> None:
    recorded = [Tick(SYMBOLS[i % 2], 50.0 + i / 3, 50.5 + i / 3, 10 * i, 10 * i + 1) for i in range(40)]
    with TickRecorder(tmp_path / "ticks.jsonl") as rec:
        for t in recorded:
            rec.write(t)
    port, stop = free_port(), asyncio.Event()
    sim_task = asyncio.create_task(run_exchange_sim(
        port=port, file=tmp_path / "ticks.jsonl", speed=0.0, symbols=SYMBOLS[:2], cert_dir=cert_dir, stop=stop,
    ))
    base = f"127.0.0.1:{port}/kraken"
    source = CryptofeedSource("kraken", SYMBOLS[:2], ws_url=f"wss://{base}", rest_url=f"https://{base}",
                              ssl_context=client_ssl_context(cert_dir), reconnect_max_secs=0.5)
    try:
        async with feeding(source) as ticks:
            got = [await next_tick(ticks) for _ in recorded]
    finally:
        stop.set()
        await asyncio.wait_for(sim_task, WAIT)
    assert all(same(w, h) for w, h in zip(recorded, got, strict=True))


@pytest.mark.asyncio
async def test_feed_keeps_retrying_until_the_exchange_comes_back(cert_dir: Path) -> None:
    port = free_port()
    reconnecting = asyncio.Event()
    source = CryptofeedSource("binance", SYMBOLS, ws_url=f"wss://127.0.0.1:{port}/binance",
                              rest_url=f"https://127.0.0.1:{port}/binance", ssl_context=client_ssl_context(cert_dir),
                              reconnect_max_secs=0.3, on_reconnect=reconnecting.set)
    async with feeding(source) as ticks:
        await asyncio.wait_for(reconnecting.wait(), WAIT)  # nothing listens yet: the first attempt failed
        sim = ExchangeSimulator(port=port, cert_dir=cert_dir, source=PushSource(SYMBOLS))
        await sim.start()
        try:
            await subscribed(sim, "binance")
            await sim.publish(Tick("SOL-USDT", 99.5, 99.75, 0, 0))
            tick = await next_tick(ticks)
        finally:
            await sim.stop()
    assert (tick.symbol, tick.bid, tick.ask) == ("SOL-USDT", 99.5, 99.75)
    assert source.reconnects >= 1
