"""The MQTT bridge's side of the durable outbox: what it reads and marks, and its upkeep.

The upkeep runs beside the broker session, connected or not: events published longer ago than the retention are
deleted, and the backlog (events not yet published, and the oldest one's time) is measured for the metrics.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ops.ledger_read import OutboxBacklog

log = logging.getLogger(__name__)

OUTBOX_PRUNE_INTERVAL_SECS = 600.0
OUTBOX_BACKLOG_INTERVAL_SECS = 15.0


class OutboxRow(Protocol):
    """An outbox row as an object (ops.ledger's OutboxEvent); a plain (seq, topic, payload) tuple also works."""

    @property
    def seq(self) -> int: ...

    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


class Outbox(Protocol):
    """The durable outbox (implemented by ops.ledger.Ledger): rows of seq, topic suffix (`core/fill`), payload."""

    outbox_event: asyncio.Event

    async def outbox_pending(self, limit: int) -> Sequence[tuple[int, str, bytes] | OutboxRow]:
        """The oldest unpublished rows, in seq order."""
        ...

    async def mark_published(self, seqs: Sequence[int]) -> object:
        """Record that these rows reached the broker."""
        ...


@runtime_checkable
class PrunableOutbox(Outbox, Protocol):
    """An outbox that can delete what was published long ago (ops.ledger.Ledger; a test's fake may not)."""

    async def prune_outbox(self, retention_ns: int) -> int:
        """Delete rows published more than `retention_ns` ago; how many."""
        ...


@runtime_checkable
class MeasurableOutbox(Outbox, Protocol):
    """An outbox that can say how many events wait and since when (ops.ledger.Ledger; a test's fake may not)."""

    async def outbox_backlog(self) -> OutboxBacklog:
        """Events not yet published and the oldest one's time."""
        ...


def unpack_row(row: tuple[int, str, bytes] | OutboxRow) -> tuple[int, str, bytes]:
    """(seq, topic suffix, payload) of a row."""
    if isinstance(row, tuple):
        return row[0], row[1], row[2]
    return row.seq, row.topic, row.payload


async def prune_published(outbox: PrunableOutbox, retention_secs: float, interval_secs: float,
                          on_pruned: Callable[[int], None]) -> None:
    """Every interval (first at start), delete the events published longer ago than the retention."""
    while True:
        try:
            pruned = await outbox.prune_outbox(round(retention_secs * 1e9))
        except Exception as exc:  # loop boundary: a ledger that cannot write halts trading, not the bridge
            log.warning("outbox: deleting events published over %.0fs ago failed: %s", retention_secs, exc)
        else:
            if pruned:
                on_pruned(pruned)
                log.info("outbox: %d events published over %.0fs ago deleted", pruned, retention_secs)
        await asyncio.sleep(interval_secs)


async def watch_backlog(outbox: MeasurableOutbox, interval_secs: float,
                        on_backlog: Callable[[OutboxBacklog], None]) -> None:
    """Every interval (first at start), measure the events still waiting to be published."""
    while True:
        try:
            backlog = await outbox.outbox_backlog()
        except Exception as exc:  # loop boundary: the metric goes stale, publishing goes on
            log.warning("outbox: measuring the unpublished events failed: %s", exc)
        else:
            on_backlog(backlog)
        await asyncio.sleep(interval_secs)
