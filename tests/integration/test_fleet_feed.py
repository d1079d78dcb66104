"""The fleet's tick publisher: simulator -> cryptofeed -> NATS -> a worker that decides and records."""
from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import nats
import orjson
import pytest
from cryptofeed.symbols import Symbols
from nats.aio.msg import Msg

from engine.fleet_load import FleetPortfolio
from engine.types import Tick
from feeds.simulator import ExchangeSimulator, PushSource
from ops.fleet_feed import FeedPlan, TickPublisher, fleet_symbols, run_fleet_feed
from ops.worker import run_worker
from ops.worker_record import PartitionRecord, read_subject
from ops.worker_wire import CLOCK, INTENT_STREAM, INTENTS, TICKS, partition_of, write_portfolios
from tests.builders import SEC
from tests.integration.services import RunningService, nats_client, nats_jetstream  # noqa: F401 (fixtures)
from tests.integration.test_workers_nats import heartbeats, pair_portfolio, wait_until

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]
SYMBOLS = ["BTC-USDT", "ETH-USDT"]


def tick(symbol: str, bid: float, ask: float) -> Tick:
    now = time.time_ns()
    return Tick(symbol, bid, ask, now, now)


@pytest.mark.asyncio
async def test_ticks_from_the_simulator_reach_a_worker_through_nats_and_it_trades_on_them(
    nats_jetstream: RunningService, nats_client: nats.NATS, tmp_path: Path,  # noqa: F811
) -> None:
    Symbols.clear()
    _, file = pair_portfolio("solo", tmp_path)
    assert fleet_symbols(file) == SYMBOLS
    part = partition_of("solo", 4)
    nc = nats_client
    js = nc.jetstream()
    seen: list[tuple[str, list[float]]] = []
    arrived = asyncio.Event()

    async def watch(msg: Msg) -> None:
        seen.append((msg.subject, orjson.loads(msg.data)))
        arrived.set()

    await nc.subscribe(f"{TICKS}.*", cb=watch)
    await nc.subscribe(CLOCK, cb=watch)

    async def ticks_seen(n: int) -> bool:
        return sum(s != CLOCK for s, _ in seen) >= n

    sim = ExchangeSimulator(cert_dir=tmp_path / "certs", source=PushSource(SYMBOLS))
    await sim.start()
    stop_feed, stop_worker = asyncio.Event(), asyncio.Event()
    feed = asyncio.create_task(run_fleet_feed(nats_jetstream.url, SYMBOLS, FeedPlan(beat_secs=0.2),
                                              cert_dir=tmp_path / "certs", stop=stop_feed, simulator=sim))
    try:
        await sim.wait_for_subscribers(1, symbol="ETH-USDT")
        await sim.publish(tick("BTC-USDT", 50.0, 50.0))
        await sim.publish(tick("ETH-USDT", 50.0, 50.0))
        await wait_until(lambda: ticks_seen(2), 20, "the first prices on NATS")  # kept as the last ticks too
        worker = asyncio.create_task(run_worker(nats_jetstream.url, "w0", file, tmp_path / "ledger", partitions=4,
                                                lease_secs=3.0, stop=stop_worker))

        async def owns() -> bool:
            return part in (await heartbeats(js)).get("w0", {}).get("active", [])

        async def intents() -> list[dict[str, object]]:
            return [orjson.loads(b) for b in await read_subject(js, INTENT_STREAM, f"{INTENTS}.{part}")]

        async def done() -> bool:
            return bool((await PartitionRecord(js, tmp_path / "read").read(part)).done)

        await wait_until(owns, 20, "the worker owns the portfolio's partition")
        assert await intents() == []  # balanced at 50/50: nothing to do
        await sim.publish(tick("BTC-USDT", 61.0, 59.0))  # a crossed book: counted and dropped by the feed
        await sim.publish(tick("BTC-USDT", 60.0, 60.0))  # BTC is now 54.5% of the basket: over its 4% band
        await wait_until(done, 20, "the intent executed and recorded")
        stop_worker.set()
        await worker
    finally:
        stop_feed.set()
        publisher = await feed
        await sim.stop()
    (intent,) = await intents()
    assert intent["prices"] == {"BTC-USDT": 60.0, "ETH-USDT": 50.0}
    history = await PartitionRecord(js, tmp_path / "read").read(part)
    assert {(f.symbol, f.side.value) for _, _, f in history.fills} == {("BTC-USDT", "sell"), ("ETH-USDT", "buy")}
    ticks = [body for s, body in seen if s != CLOCK]
    assert [b[1] for b in ticks] == [50.0, 50.0, 60.0] and publisher.published == 3
    assert any(s == CLOCK for s, _ in seen) and publisher.beats >= 1
    numbers = [body[0] for _, body in seen]
    times = [body[-1] for _, body in seen]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)  # one numbered order
    assert times == sorted(times)  # never backwards
    assert intent["ts_ns"] == ticks[-1][3]  # the worker decided on the publisher's time for that tick


@pytest.mark.asyncio
async def test_the_publisher_counts_and_drops_bad_prices_and_keeps_time_from_going_back(
    nats_jetstream: RunningService, nats_client: nats.NATS,  # noqa: F811
) -> None:
    nc = nats_client
    got: list[list[float]] = []
    three = asyncio.Event()

    async def watch(msg: Msg) -> None:
        got.append(orjson.loads(msg.data))
        if len(got) == 3:
            three.set()

    await nc.subscribe(f"{TICKS}.BTC-USDT", cb=watch)
    publisher = TickPublisher(nc, beat_secs=60.0)
    run = asyncio.create_task(publisher.run())
    t = time.time_ns()
    for bid, ask, ts in [(float("nan"), 1.0, t), (0.0, 1.0, t), (2.0, 1.0, t), (1.0, float("inf"), t),
                         (10.0, 10.5, t), (11.0, 11.0, t - SEC), (12.0, 12.0, t + SEC)]:
        publisher.on_tick(Tick("BTC-USDT", bid, ask, ts, ts))
    await asyncio.wait_for(three.wait(), 10)
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    assert [(b[1], b[2]) for b in got] == [(10.0, 10.5), (11.0, 11.0), (12.0, 12.0)]
    assert [b[3] for b in got] == [t, t, t + SEC]  # a tick received "before" the last one keeps the last time
    assert publisher.dropped == {"bad_price": 3, "crossed": 1}


@pytest.mark.asyncio
async def test_keel_fleet_feed_publishes_the_portfolios_symbols_from_the_simulator_until_sigterm(
    nats_jetstream: RunningService, nats_client: nats.NATS, tmp_path: Path,  # noqa: F811
) -> None:
    file = tmp_path / "portfolios.jsonl"
    write_portfolios(file, [FleetPortfolio("a", {"BTC": 0.5, "SOL": 0.5}, {"BTC": 0.05, "SOL": 0.05}, {}, SEC),
                            FleetPortfolio("b", {"ETH": 0.7, "USDT": 0.3}, {"ETH": 0.05, "USDT": 0.05}, {}, SEC)])
    nc = nats_client
    subjects: set[str] = set()
    every = asyncio.Event()

    async def watch(msg: Msg) -> None:
        subjects.add(msg.subject)
        if len(subjects) == 4:
            every.set()

    await nc.subscribe("keel.>", cb=watch)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.cli", "fleet-feed", "--portfolios", str(file), "--nats", nats_jetstream.url,
        "--sim-rate-hz", "50", "--beat-secs", "0.2", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await asyncio.wait_for(every.wait(), 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert subjects == {f"{TICKS}.BTC-USDT", f"{TICKS}.ETH-USDT", f"{TICKS}.SOL-USDT", CLOCK}
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().startswith("published ")
