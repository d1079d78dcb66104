"""Outbox pruning on a real SQLite file: published events older than the retention go, in bounded batches;
unpublished and recent ones stay, in seq order; the MQTT bridge prunes on its own, with the broker up or down."""
from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from engine.sensor import Sensor
from ops.config_schema import MqttConfig
from ops.ledger import Ledger, LedgerInputError
from ops.ledger_ops import PruneOutbox
from ops.mqtt import Backoff, MqttBridge
from tests.integration.mqtt_kit import T0, Clock, NoCommands
from tests.integration.services import HOST, free_port, mosquitto

pytestmark = pytest.mark.timeout(60)

HOUR_NS = 3_600_000_000_000
WAIT_SECS = 10.0


class CommitRows(Sensor):
    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: list[int] = []

    def on_ledger_commit(self, rows: int, seconds: float) -> None:
        self.rows.append(rows)


@pytest.fixture
def ledger(clocked_outbox: Ledger) -> Ledger:
    """The outbox on the clock the test moves."""
    return clocked_outbox


def outbox_rows(path: Path) -> list[tuple[int, bytes, int | None]]:
    """(seq, payload, published_ns) of every row, in storage (rowid) order, read from the file itself."""
    conn = sqlite3.connect(path)
    try:
        return [(r[0], bytes(r[1]), r[2]) for r in conn.execute("SELECT seq, payload, published_ns FROM outbox")]
    finally:
        conn.close()


async def enqueue(ledger: Ledger, n: int, tag: str) -> list[int]:
    return [await ledger.enqueue_outbox("core/fill", f"{tag}-{i}".encode()) for i in range(n)]


@pytest.mark.asyncio
async def test_only_events_published_before_the_retention_are_deleted(ledger: Ledger, clock: Clock) -> None:
    old = await enqueue(ledger, 10, "old")  # created at T0
    await ledger.mark_published([s for s in old if s not in (old[4], old[8], old[9])])  # published at T0
    clock.now_ns = T0 + HOUR_NS
    recent = await enqueue(ledger, 3, "recent")
    await ledger.mark_published(recent[:2])  # published an hour later
    before = {seq: (payload, published) for seq, payload, published in outbox_rows(ledger.path)}

    assert await ledger.prune_outbox(HOUR_NS) == 0  # published exactly one retention ago: kept
    assert await ledger.prune_outbox(HOUR_NS - 1) == 7

    left = outbox_rows(ledger.path)
    assert [seq for seq, _, _ in left] == [old[4], old[8], old[9], *recent]  # still in seq order
    assert all(before[seq] == (payload, published) for seq, payload, published in left)  # untouched
    assert [e.seq for e in await ledger.outbox_pending(100)] == [old[4], old[8], old[9], recent[2]]

    # Even unpublished events from long ago stay: only the bridge's acknowledgement makes a row deletable.
    clock.now_ns = T0 + 1000 * HOUR_NS
    assert await ledger.prune_outbox(0) == 2
    assert [seq for seq, _, _ in outbox_rows(ledger.path)] == [old[4], old[8], old[9], recent[2]]
    await ledger.mark_published([old[4], old[8], old[9], recent[2]])
    clock.now_ns += 1
    assert await ledger.prune_outbox(0) == 4 and outbox_rows(ledger.path) == []
    # A seq is never handed out twice, even once every row before it is gone.
    assert await ledger.enqueue_outbox("core/fill", b"next") == recent[2] + 1

    for retention_ns, batch_rows in ((-1, 10), (0, 0)):
        with pytest.raises(LedgerInputError):
            PruneOutbox(retention_ns, batch_rows)


@pytest.mark.asyncio
async def test_pruning_goes_in_bounded_batches_and_lets_other_writes_through(tmp_path: Path, clock: Clock) -> None:
    sensor = CommitRows()
    ledger = await Ledger.open(tmp_path / "keel.sqlite", clock_ns=clock, sensor=sensor)
    try:
        seqs = sorted(await asyncio.gather(*(ledger.enqueue_outbox("core/fill", b"x" * 200) for _ in range(2500))))
        await ledger.mark_published(seqs[:2200])
        await ledger.enqueue_outbox("core/alert", b"pending")  # seq after the published ones
        clock.now_ns += 1
        sensor.rows.clear()

        prune = asyncio.create_task(ledger.prune_outbox(0, batch_rows=500))
        other = asyncio.create_task(ledger.enqueue_outbox("core/alert", b"during"))
        done, _ = await asyncio.wait({prune, other}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {other}  # the write queued behind the first batch did not wait for the whole pass
        assert await prune == 2200

        assert max(sensor.rows) <= 500 + 1  # one batch, plus the other write when they shared a commit
        assert sum(sensor.rows) == 2200 + 1 and len(sensor.rows) >= 2200 // 500 + 1
        left = outbox_rows(ledger.path)
        assert [seq for seq, _, _ in left] == [*seqs[2200:], seqs[-1] + 1, seqs[-1] + 2]
        assert all(published is None for _, _, published in left)
    finally:
        await ledger.close()


def bridge_for(port: int, ledger: Ledger, retention_secs: float) -> MqttBridge:
    config = MqttConfig(enabled=True, host=HOST, port=port, client_id="keel-prune",
                        outbox_retention_secs=retention_secs)
    return MqttBridge(config, username=None, password=None, portfolios=["core"], snapshots=list, outbox=ledger,
                      commands=NoCommands(), backoff=Backoff(initial_secs=0.05, cap_secs=0.2), keepalive_secs=5,
                      timeout_secs=3.0, prune_interval_secs=0.02)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.services
@pytest.mark.asyncio
async def test_the_bridge_deletes_what_it_published_once_the_retention_has_passed(ledger: Ledger,
                                                                                   clock: Clock) -> None:
    seqs = await enqueue(ledger, 5, "event")
    with mosquitto() as broker:
        bridge = bridge_for(broker.port, ledger, retention_secs=3600.0)
        task = asyncio.create_task(bridge.run())
        try:
            await bridge.wait_until(lambda: bridge.counters.events_published == 5, WAIT_SECS)
            assert [seq for seq, _, _ in outbox_rows(ledger.path)] == seqs  # published just now: kept
            clock.now_ns = T0 + HOUR_NS + 1
            await bridge.wait_until(lambda: bridge.counters.events_pruned == 5, WAIT_SECS)
            assert outbox_rows(ledger.path) == []
        finally:
            await stop(task)


@pytest.mark.asyncio
async def test_with_the_broker_down_the_bridge_still_prunes_and_never_drops_what_is_waiting(
        ledger: Ledger, clock: Clock) -> None:
    seqs = await enqueue(ledger, 6, "event")
    await ledger.mark_published(seqs[:4])
    bridge = bridge_for(free_port(), ledger, retention_secs=60.0)  # nothing listens there
    task = asyncio.create_task(bridge.run())
    try:
        await bridge.wait_until(lambda: bridge.counters.connect_failures >= 1, WAIT_SECS)
        clock.now_ns = T0 + 61 * 1_000_000_000
        await bridge.wait_until(lambda: bridge.counters.events_pruned == 4, WAIT_SECS)
        assert [seq for seq, _, _ in outbox_rows(ledger.path)] == seqs[4:]
        assert not bridge.connected and bridge.counters.events_published == 0
    finally:
        await stop(task)


@pytest.mark.asyncio
async def test_a_retention_of_zero_keeps_published_events_forever(ledger: Ledger, clock: Clock) -> None:
    seqs = await enqueue(ledger, 3, "event")
    await ledger.mark_published(seqs)
    clock.now_ns = T0 + 10_000 * HOUR_NS
    bridge = bridge_for(free_port(), ledger, retention_secs=0.0)
    task = asyncio.create_task(bridge.run())
    try:
        await bridge.wait_until(lambda: bridge.counters.connect_failures >= 3, WAIT_SECS)
        assert [seq for seq, _, _ in outbox_rows(ledger.path)] == seqs and bridge.counters.events_pruned == 0
    finally:
        await stop(task)
