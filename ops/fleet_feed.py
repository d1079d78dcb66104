"""The fleet's tick publisher: one live feed fanned out to every worker on core NATS.

A single process reads the market (cryptofeed against an exchange, or the embedded simulator) and
publishes each tick on `keel.ticks.<symbol>` as `[n, bid, ask, ts_ns]`, plus a clock beat on
`keel.clock` every `beat_secs`, so that windows close while a symbol is quiet. Times are the ticks'
receive times made non-decreasing (`ts = max(previous, received)`), and `n` counts every message, so
each worker restores one order and decides on the same times as every other worker. JetStream keeps
each symbol's last tick (`KEEL_LAST_TICKS`): a worker that takes over a partition seeds its prices
from it. A tick with a price that is not a positive finite number, or a crossed book, is counted and
dropped here; nothing else is filtered (the workers' fleets apply their own checks).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nats

from engine.types import Tick
from feeds.cryptofeed_source import CryptofeedSource
from feeds.simulator import ExchangeSimulator, SyntheticSource
from ops.worker_record import ensure_streams
from ops.worker_wire import CLOCK, TICKS, clock_body, read_portfolios, tick_body

log = logging.getLogger(__name__)


def fleet_symbols(portfolios_file: Path) -> list[str]:
    """Every BASE-QUOTE symbol a portfolio in the file holds (sorted)."""
    out = set()
    for p in read_portfolios(portfolios_file):
        out.update(f"{a}-{p.quote}" for a in p.targets if a != p.quote)
    return sorted(out)


class TickPublisher:
    """Takes ticks from a feed callback and publishes them, and clock beats, in one numbered order."""

    def __init__(self, nc: nats.NATS, *, beat_secs: float = 1.0) -> None:
        if not beat_secs > 0:
            raise ValueError(f"beat_secs must be > 0, got {beat_secs}")
        self.nc = nc
        self.beat_secs = beat_secs
        self.pending: list[Tick] = []
        self.wake = asyncio.Event()
        self.n = 0
        self.last_ts = 0
        self.published = 0
        self.beats = 0
        self.dropped: Counter[str] = Counter()

    def on_tick(self, tick: Tick) -> None:
        """The feed's callback (synchronous): queue the tick for publishing."""
        self.pending.append(tick)
        self.wake.set()

    async def run(self) -> None:
        """Publish queued ticks as they come and a clock beat every `beat_secs`, until cancelled."""
        next_beat = time.monotonic() + self.beat_secs
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.0, next_beat - time.monotonic()))
            self.wake.clear()
            batch, self.pending = self.pending, []
            for tick in batch:
                await self._publish(tick)
            if time.monotonic() >= next_beat:
                await self.beat()
                next_beat = time.monotonic() + self.beat_secs

    async def _publish(self, tick: Tick) -> None:
        bid, ask = tick.bid, tick.ask
        if not (math.isfinite(bid) and math.isfinite(ask) and bid > 0.0 and ask > 0.0):
            self.dropped["bad_price"] += 1
            return
        if bid > ask:
            self.dropped["crossed"] += 1
            return
        self.last_ts = max(self.last_ts, tick.ts_recv_ns)
        await self.nc.publish(f"{TICKS}.{tick.symbol}", tick_body(self.n, bid, ask, self.last_ts))
        self.n += 1
        self.published += 1

    async def beat(self) -> None:
        """Publish the clock: the later of the last tick's time and now."""
        self.last_ts = max(self.last_ts, time.time_ns())
        await self.nc.publish(CLOCK, clock_body(self.n, self.last_ts))
        self.n += 1
        self.beats += 1


@dataclass(frozen=True, slots=True)
class FeedPlan:
    """Where the fleet's ticks come from: `sim` (the embedded simulator), `binance`, `kraken` or `okx`."""

    source: str = "sim"
    sim_seed: int = 1
    sim_rate_hz: float = 20.0
    sim_swing: float = 0.05
    beat_secs: float = 1.0


async def run_fleet_feed(nats_url: str, symbols: Sequence[str], plan: FeedPlan, *, cert_dir: Path,
                         stop: asyncio.Event, simulator: ExchangeSimulator | None = None) -> TickPublisher:
    """Run the feed and publish to NATS until `stop` is set; returns the publisher (its counters)."""
    sim = simulator
    if sim is None and plan.source == "sim":
        source = SyntheticSource(symbols, seed=plan.sim_seed, rate_hz=plan.sim_rate_hz * len(symbols),
                                 swing=plan.sim_swing)
        sim = ExchangeSimulator(cert_dir=cert_dir, source=source, exchanges=("binance",))
    exchange = "binance" if sim is not None else plan.source
    nc = await nats.connect(nats_url, name="keel-fleet-feed", max_reconnect_attempts=-1)
    try:
        await ensure_streams(nc.jetstream())
        if sim is not None and simulator is None:
            await sim.start()
        feed = CryptofeedSource(
            exchange,  # type: ignore[arg-type]
            symbols,
            ws_url=sim.ws_url("binance") if sim is not None else None,
            rest_url=sim.rest_url("binance") if sim is not None else None,
            ssl_context=sim.ssl_context_for_clients() if sim is not None else None,
        )
        publisher = TickPublisher(nc, beat_secs=plan.beat_secs)
        log.info("fleet feed: %d symbols from %s to %s", len(symbols), exchange, nats_url)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(feed.run(publisher.on_tick)), tg.create_task(publisher.run())]
            await stop.wait()
            for t in tasks:
                t.cancel()
        await nc.flush()
        log.info("fleet feed stopped: %d ticks, %d beats, dropped %s", publisher.published, publisher.beats,
                 dict(publisher.dropped))
        return publisher
    finally:
        if sim is not None and simulator is None:
            await sim.stop()
        with contextlib.suppress(Exception):
            await nc.close()
