"""A fleet worker: leases partitions of the portfolios on NATS, decides with a `Fleet`, executes on paper.

Every worker loads the whole portfolios file into one `Fleet` with every portfolio inactive, then
activates the portfolios of the partitions it leases (`ops.worker_leases`). It subscribes on core
NATS to the tick subjects of the symbols its active portfolios hold, restores the publisher's order
(ticks carry the publisher's sequence number), and runs the fleet on the ticks' own times, so that
its decisions are those a single process would make on the same ticks. An intent is recorded in
JetStream, executed (paper fills at the mids it saw), each fill recorded before it is applied, then
marked done (`ops.worker_record`). Taking over a partition rebuilds its portfolios from that record
and finishes any intent that was cut short; deterministic ids make every step idempotent.

Limits: ticks published while a partition has no owner (a dead worker's lease still running) are
not evaluated for it; the new owner evaluates its portfolios at its current prices, so decisions
match a single process exactly when no tick crossed a band during the gap. A check that found
nothing to trade starts a window too: it is recorded as a `check` marker, so a takeover resumes it.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import numpy as np
import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from engine.fleet import Fleet
from engine.fleet_math import execute_at_mid
from engine.types import Fill, Intent
from ops.worker_leases import Leases
from ops.worker_record import PartitionRecord, ensure_streams
from ops.worker_wire import CLOCK, LAST_TICK_STREAM, TICKS, partition_of, read_portfolios

log = logging.getLogger(__name__)
YIELD_EVERY = 256  # ticks applied between two yields to the event loop


class Worker:
    """One worker's state: the fleet, its leases, its tick subscriptions, its record of partitions."""

    def __init__(self, nc: nats.NATS, tick_nc: nats.NATS, worker_id: str, fleet: Fleet, record: PartitionRecord,
                 leases: Leases) -> None:
        self.nc = nc  # the control plane: leases, heartbeats, the JetStream record
        self.tick_nc = tick_nc  # the data plane: ticks only, so that no reply waits behind a backlog of ticks
        self.js = nc.jetstream()
        self.worker_id = worker_id
        self.fleet = fleet
        self.record = record
        self.leases = leases
        self.row_of = {name: k for k, name in enumerate(fleet.names)}
        part = np.array([partition_of(n, leases.partitions) for n in fleet.names], dtype=np.int64)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(leases.partitions + 1))
        self.rows_by_part = [order[bounds[p]:bounds[p + 1]] for p in range(leases.partitions)]
        self.part_of_row = part
        self.initial_q = fleet.q.copy()
        self.symbol_index = {s: i for i, s in enumerate(fleet.symbols)}
        self.active_parts: set[int] = set()
        self.subs: dict[str, Subscription] = {}
        self.inbox: list[tuple[int, int, int, float, float]] = []  # (ts, n, symbol or -1 for a clock beat, bid, ask)
        self.wake = asyncio.Event()
        self.lock = asyncio.Lock()
        self.ticks = self.intents = self.fills = self.dropped = 0
        self.live = 1

    # ticks ------------------------------------------------------------------------------------------

    async def _on_tick(self, msg: Msg) -> None:
        n, bid, ask, ts = orjson.loads(msg.data)
        self.inbox.append((ts, n, self.symbol_index[msg.subject[len(TICKS) + 1:]], bid, ask))
        self.wake.set()

    async def _on_clock(self, msg: Msg) -> None:
        n, ts = orjson.loads(msg.data)
        self.inbox.append((ts, n, -1, 0.0, 0.0))
        self.wake.set()

    async def tick_loop(self) -> None:
        """Apply ticks in the publisher's order and execute what the fleet decides."""
        self.subs[CLOCK] = await self.tick_nc.subscribe(CLOCK, cb=self._on_clock)
        while True:
            await self.wake.wait()
            self.wake.clear()
            # nats-py hands each subscription's messages over in that subscription's own task, so messages
            # read together may reach the inbox out of order: yield until every queue is empty, then sort.
            while any(sub.pending_msgs for sub in self.subs.values()):  # noqa: ASYNC110 (no event to await)
                await asyncio.sleep(0)
            batch = sorted(self.inbox)
            self.inbox = []
            async with self.lock:
                fleet = self.fleet
                for k, (ts, _, s, bid, ask) in enumerate(batch):
                    if k % YIELD_EVERY == YIELD_EVERY - 1:
                        await asyncio.sleep(0)  # a long batch must not starve the lease renewals
                    if ts < fleet.now_ns:
                        self.dropped += 1
                        continue
                    intents = fleet.advance_to(ts) if s < 0 else fleet.on_tick(s, bid, ask, ts)
                    self.ticks += s >= 0
                    await self._decided(intents)

    async def _watch(self, symbols: Sequence[int]) -> int:
        """Subscribe to new symbols and seed each one's last price from the last-tick stream; returns the
        latest time among the seeded ticks (-1 when none)."""
        latest = -1
        for s in symbols:
            name = self.fleet.symbols[s]
            if name in self.subs:
                continue
            subject = f"{TICKS}.{name}"
            self.subs[name] = await self.tick_nc.subscribe(subject, cb=self._on_tick)
            try:
                last = await self.js.get_last_msg(LAST_TICK_STREAM, subject)
            except nats.js.errors.NotFoundError:
                continue
            _, bid, ask, ts = orjson.loads(last.data)
            if ts >= self.fleet.now_ns and math.isnan(self.fleet.px[s]):
                self.fleet.set_price(s, bid, ask)
                latest = max(latest, ts)
        return latest

    # execution -----------------------------------------------------------------------------------------

    async def _decided(self, intents: list[Intent]) -> None:
        """Record the fleet's quiet checks (each started a window), then execute its intents."""
        for row, ts in self.fleet.take_quiet_checks():
            part = int(self.part_of_row[row])
            if await self._confirm(part, f"quiet check of {self.fleet.names[row]}"):
                await self.record.add_check(part, self.fleet.names[row], ts)
        for intent in intents:
            await self._execute(intent)

    async def _confirm(self, part: int, what: str) -> bool:
        """Whether we still hold the partition's lease; when not, stop deciding for it."""
        if await self.leases.confirm(part):
            return True
        log.warning("%s: lease on partition %d lost: dropping it and %s", self.worker_id, part, what)
        self._deactivate(part)
        self.leases.forget(part)  # the lease expires; whoever takes it next rebuilds from the record
        return False

    async def _execute(self, intent: Intent) -> None:
        row = self.row_of[intent.portfolio]
        part = int(self.part_of_row[row])
        if not await self._confirm(part, f"intent {intent.id}"):
            return
        await self.record.add_intent(part, intent)
        self.intents += 1
        await self._run_intent(part, row, intent, {})

    async def _run_intent(self, part: int, row: int, intent: Intent, recorded: dict[str, Fill]) -> None:
        """Execute an intent from the holdings before it; record the fills not yet recorded, apply all."""
        fleet = self.fleet
        fills = execute_at_mid(intent, fleet.holdings(row), fleet.quote, fleet.fee_rate, fleet.rules)
        for f in fills:
            if f.trade_id not in recorded:
                await self.record.add_fill(part, intent.portfolio, intent.id, f)
                self.fills += 1
            fleet.apply_fill(row, f)
        self.record.mirror(part, [(intent.portfolio, intent.id, f) for f in fills])
        await self.record.add_done(part, intent.portfolio, intent.id)
        log.info("%s: intent %s of %s executed (%d fills)", self.worker_id, intent.id, intent.portfolio, len(fills))

    # partitions ----------------------------------------------------------------------------------------

    async def take_over(self, part: int) -> None:
        """Rebuild a partition's portfolios from the record, finish cut-short intents, start deciding."""
        rows = self.rows_by_part[part]
        history = await self.record.read(part)
        async with self.lock:
            fleet = self.fleet
            fleet.deactivate(rows)
            fleet.q[rows] = self.initial_q[rows]
            pending = {i.id: i for i in history.pending()}
            recorded: dict[str, dict[str, Fill]] = {i: {} for i in pending}
            for portfolio, intent_id, fill in history.fills:
                if intent_id in pending:
                    recorded[intent_id][fill.trade_id] = fill
                else:
                    fleet.apply_fill(self.row_of[portfolio], fill)
            seq = {int(r): 0 for r in rows}
            for intent in history.intents:
                seq[self.row_of[intent.portfolio]] += 1
            window_from = history.window_from()
            latest = await self._watch(fleet.symbols_of(rows))
            if latest > fleet.now_ns and self.ticks == 0:  # a worker that applied no tick yet takes the seeds' time
                await self._decided(fleet.advance_to(latest))
            for intent in pending.values():
                log.info("%s: finishing intent %s cut short", self.worker_id, intent.id)
                await self._run_intent(part, self.row_of[intent.portfolio], intent, recorded[intent.id])
            self.active_parts.add(part)
            keys = list(seq)
            await self._decided(fleet.activate(keys, seq=[seq[r] for r in keys],
                                               window_from_ns=[window_from.get(fleet.names[r], -1) for r in keys]))
        log.info("%s: took over partition %d (%d portfolios, %d intents, %d fills, %d finished)", self.worker_id,
                 part, len(rows), len(history.intents), len(history.fills), len(pending))

    def _deactivate(self, part: int) -> None:
        self.fleet.deactivate(self.rows_by_part[part])
        self.active_parts.discard(part)

    async def renew_loop(self) -> None:
        """Renew our leases and beat our heart every quarter of the lease time (alone, so nothing delays it)."""
        while True:
            lost = await self.leases.renew()
            if lost:
                async with self.lock:
                    for part in lost:
                        self._deactivate(part)
            try:
                self.live = await self.leases.heartbeat(self.status())
            except nats.errors.TimeoutError:
                log.warning("%s: heartbeat timed out", self.worker_id)
            await asyncio.sleep(self.leases.lease_secs / 4)  # the renewal period, not a synchronisation

    async def balance_round(self) -> None:
        """Shed partitions beyond our share, or take free ones up to it."""
        leases = self.leases
        target = leases.target(self.live)
        extras = leases.extras(target)
        if extras:
            async with self.lock:
                for part in extras:
                    self._deactivate(part)
            await leases.release(extras)
            log.info("%s: released %d partitions (share %d of %d workers)", self.worker_id, len(extras), target,
                     self.live)
        elif len(leases.owned) < target:
            for part in await leases.acquire(target - len(leases.owned)):
                await self.take_over(part)

    async def balance_loop(self) -> None:
        """A balance round every quarter of the lease time."""
        while True:
            await self.balance_round()
            await asyncio.sleep(self.leases.lease_secs / 4)  # the balancing period, not a synchronisation

    def status(self) -> bytes:
        """The heartbeat body: what this worker owns and has done."""
        return orjson.dumps({"worker": self.worker_id, "active": sorted(self.active_parts), "ticks": self.ticks,
                             "intents": self.intents, "fills": self.fills, "dropped": self.dropped})

    async def stop(self) -> None:
        """A clean stop: give every lease back so that others take over at once."""
        async with self.lock:
            for part in list(self.active_parts):
                self._deactivate(part)
        await self.leases.release(list(self.leases.owned))
        await self.leases.leave()


async def run_worker(nats_url: str, worker_id: str, portfolios_file: Path, ledger_dir: Path, *,
                     partitions: int = 1024, lease_secs: float, stop: asyncio.Event,
                     fee_rate: Decimal = Decimal("0.001")) -> None:
    """Run one worker until `stop` is set (then release its leases); cancelling it is a crash (leases stay)."""
    portfolios = read_portfolios(portfolios_file)
    fleet = Fleet.load(portfolios, fee_rate=fee_rate, active=np.zeros(len(portfolios), dtype=bool),
                       record_quiet_checks=True)
    nc = await nats.connect(nats_url, name=f"keel-worker-{worker_id}", max_reconnect_attempts=-1)
    tick_nc = await nats.connect(nats_url, name=f"keel-worker-{worker_id}-ticks", max_reconnect_attempts=-1)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        leases = Leases(js, worker_id, partitions, lease_secs)
        await leases.open()
        worker = Worker(nc, tick_nc, worker_id, fleet, PartitionRecord(js, ledger_dir), leases)
        log.info("%s: started with %d portfolios in %d partitions", worker_id, fleet.n, partitions)
        async with asyncio.TaskGroup() as tg:
            worker.live = await leases.heartbeat(worker.status())
            tasks = [tg.create_task(worker.tick_loop()), tg.create_task(worker.renew_loop()),
                     tg.create_task(worker.balance_loop())]
            stopping = tg.create_task(stop.wait())
            await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
        await worker.stop()
        log.info("%s: stopped (%d ticks, %d intents, %d fills)", worker_id, worker.ticks, worker.intents,
                 worker.fills)
    finally:
        for conn in (tick_nc, nc):
            with contextlib.suppress(Exception):
                await conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    """`keel worker`: run one worker until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="keel worker", description=__doc__.splitlines()[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--id", required=True, help="this worker's unique id")
    parser.add_argument("--portfolios", type=Path, required=True, help="JSON-lines portfolios file")
    parser.add_argument("--ledger-dir", type=Path, required=True)
    parser.add_argument("--partitions", type=int, default=1024)
    parser.add_argument("--lease-secs", type=float, default=10.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(args.nats, args.id, args.portfolios, args.ledger_dir, partitions=args.partitions,
                         lease_secs=args.lease_secs, stop=stop)

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
