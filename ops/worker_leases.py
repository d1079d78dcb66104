"""Partition leases in a NATS key-value bucket, and the heartbeats that say how many workers are alive.

A lease is the key `pNNNNN` in bucket `keel-leases`, whose TTL is the lease time: `create` takes a free
partition (it fails when the key exists), `update` with the last revision renews it (it fails when the
lease expired and someone else took it), and a dead worker's leases vanish when the TTL passes.
Workers put a heartbeat in `keel-workers` (same TTL); each aims for ceil(partitions / live workers),
releasing its extras when workers join and taking free partitions when one dies. A worker trusts a
lease for at most 3/4 of the lease time after its last successful renewal, so a stalled worker stops
trading a partition before another can own it.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Iterable

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ops.worker_wire import LEASE_BUCKET, WORKER_BUCKET, lease_key

log = logging.getLogger(__name__)
TRUST_FRACTION = 0.75
CONCURRENCY = 64
WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream error codes for an expected-last-sequence mismatch


class Leases:
    """This worker's leases: acquire, renew, release; and the share it should aim for."""

    def __init__(self, js: JetStreamContext, worker_id: str, partitions: int, lease_secs: float) -> None:
        if lease_secs <= 0:
            raise ValueError("lease_secs must be > 0")
        self.js = js
        self.worker_id = worker_id
        self.partitions = partitions
        self.lease_secs = lease_secs
        self.owned: dict[int, int] = {}  # partition -> revision of our lease
        self.renewed_at: dict[int, float] = {}
        self._mutex = asyncio.Lock()  # renewals, releases and acquisitions never interleave
        self._leases: KeyValue | None = None
        self._workers: KeyValue | None = None
        digest = hashlib.blake2b(worker_id.encode(), digest_size=4).digest()
        self._offset = int.from_bytes(digest, "big") % partitions

    async def open(self) -> None:
        """Create or bind the two buckets."""
        self._leases = await self.js.create_key_value(bucket=LEASE_BUCKET, ttl=self.lease_secs, history=1)
        self._workers = await self.js.create_key_value(bucket=WORKER_BUCKET, ttl=self.lease_secs, history=1)

    @property
    def leases(self) -> KeyValue:
        """The lease bucket (after `open`)."""
        if self._leases is None:
            raise RuntimeError("Leases.open() was not awaited")
        return self._leases

    @property
    def workers(self) -> KeyValue:
        """The heartbeat bucket (after `open`)."""
        if self._workers is None:
            raise RuntimeError("Leases.open() was not awaited")
        return self._workers

    def holds(self, partition: int) -> bool:
        """True while our lease on `partition` was renewed recently enough to trade on it."""
        at = self.renewed_at.get(partition)
        return at is not None and time.monotonic() - at < self.lease_secs * TRUST_FRACTION

    async def heartbeat(self, status: bytes) -> int:
        """Publish our heartbeat; returns the number of live workers (ourselves included).

        The count is the bucket stream's message count (one request, where listing keys costs a consumer):
        a worker that left cleanly still counts until its delete marker expires, one lease time later.
        """
        await self.workers.put(f"w.{self.worker_id}", status)
        info = await self.js.stream_info(f"KV_{WORKER_BUCKET}")
        return max(1, int(info.state.messages))

    def target(self, live: int) -> int:
        """Our fair share of partitions."""
        return math.ceil(self.partitions / max(1, live))

    async def renew(self) -> list[int]:
        """Renew every lease; returns the partitions whose lease was lost."""
        lost: list[int] = []

        async def one(part: int, rev: int) -> None:
            started = time.monotonic()
            try:
                new_rev = await self.leases.update(lease_key(part), self.worker_id.encode(), last=rev)
            except nats.js.errors.KeyWrongLastSequenceError:
                lost.append(part)
                return
            except nats.errors.TimeoutError:
                log.warning("%s: renewing partition %d timed out", self.worker_id, part)
                return  # not renewed: `holds` turns false if this goes on
            if part in self.owned:  # not forgotten meanwhile
                self.owned[part] = new_rev
                self.renewed_at[part] = started

        async with self._mutex:
            await _bounded(one(p, r) for p, r in list(self.owned.items()))
        for part in lost:
            log.warning("%s: lease on partition %d lost", self.worker_id, part)
            self.owned.pop(part, None)
            self.renewed_at.pop(part, None)
        return sorted(lost)

    async def acquire(self, count: int) -> list[int]:
        """Try to take up to `count` free partitions; returns those taken."""
        if count <= 0:
            return []
        try:
            held = set(await self.leases.keys())
        except nats.js.errors.NoKeysError:
            held = set()
        order = [(self._offset + k) % self.partitions for k in range(self.partitions)]
        free = [p for p in order if lease_key(p) not in held and p not in self.owned]
        taken: list[int] = []
        for part in free:
            if len(taken) >= count:
                break
            started = time.monotonic()
            async with self._mutex:
                try:
                    self.owned[part] = await self.leases.create(lease_key(part), self.worker_id.encode())
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue  # another worker was quicker
            self.renewed_at[part] = started
            taken.append(part)
        return taken

    async def confirm(self, partition: int) -> bool:
        """Renew one lease now (compare-and-set): True when it is still ours, for another lease time."""
        if self.holds(partition):
            return True
        async with self._mutex:
            rev = self.owned.get(partition)
            if rev is None:
                return False
            started = time.monotonic()
            try:
                self.owned[partition] = await self.leases.update(lease_key(partition), self.worker_id.encode(),
                                                                 last=rev)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.errors.TimeoutError):
                return False
            self.renewed_at[partition] = started
            return True

    def forget(self, partition: int) -> None:
        """Stop renewing a lease without deleting it: it expires, and its next owner rebuilds the partition."""
        self.owned.pop(partition, None)
        self.renewed_at.pop(partition, None)

    def extras(self, target: int) -> list[int]:
        """The partitions beyond our share (the highest-numbered ones)."""
        return sorted(self.owned)[target:]

    async def release(self, parts: Iterable[int]) -> None:
        """Give leases back at once (a clean stop or a rebalance)."""

        async def one(part: int) -> None:
            rev = self.owned.pop(part, None)
            self.renewed_at.pop(part, None)
            if rev is not None:
                try:
                    await self.leases.delete(lease_key(part), last=rev)
                except nats.js.errors.APIError as err:
                    # nats-py's delete does not turn "wrong last sequence" into KeyWrongLastSequenceError
                    # (update does): the lease moved on, another worker holds it or it expired
                    if err.err_code not in WRONG_LAST_SEQUENCE:
                        raise
                    log.warning("%s: lease on partition %d was already lost", self.worker_id, part)
                except nats.errors.TimeoutError:
                    log.warning("%s: releasing partition %d timed out; the lease expires on its own",
                                self.worker_id, part)

        async with self._mutex:
            await _bounded(one(p) for p in list(parts))

    async def leave(self) -> None:
        """Remove our heartbeat (a clean stop)."""
        await self.workers.delete(f"w.{self.worker_id}")


async def _bounded(coros: Iterable[object]) -> None:
    """Await coroutines, at most CONCURRENCY at a time."""
    batch: list[object] = []
    for c in coros:
        batch.append(c)
        if len(batch) >= CONCURRENCY:
            await asyncio.gather(*batch)  # type: ignore[call-overload]
            batch = []
    if batch:
        await asyncio.gather(*batch)  # type: ignore[call-overload]
