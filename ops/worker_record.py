"""The durable record of a partition: intents and fills in JetStream, mirrored into a local SQLite ledger.

Why JetStream and not per-partition SQLite files on a shared disk: workers on separate machines
share no disk, and a file lock over NFS is no fence. A JetStream stream is reachable from every
machine, stores a message before it acknowledges it (file storage; replicas in a cluster), and its
`Nats-Msg-Id` de-duplication refuses a retried intent or fill. A worker that takes over a partition
reads the partition's subjects from the start: its portfolios' holdings are their starting holdings
plus every fill (each trade id counted once, even past the de-duplication window); the intent count
comes from the intents, and the start of the last post-rebalance window from the later of the last
intent and the last check that found nothing to trade (recorded as a `check` marker); an intent without its `done` marker is finished
by re-running its deterministic execution, and only the fills not yet recorded are published.

The SQLite file per partition under `ledger_dir` is a local mirror (unique trade ids, insert-or-ignore)
for reports and inspection; nothing is read back from it.
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import nats.js.errors
import orjson
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, StorageType, StreamConfig

from engine.types import Fill, Intent
from ops.worker_wire import (
    FILL_STREAM,
    FILLS,
    INTENT_STREAM,
    INTENTS,
    LAST_TICK_STREAM,
    MSG_ID,
    TICKS,
    check_body,
    done_body,
    fill_body,
    intent_body,
    parse_fill,
    parse_intent,
)

log = logging.getLogger(__name__)
READ_TIMEOUT_SECS = 10.0


@dataclass(slots=True)
class PartitionHistory:
    """What the record says about one partition, in stream order."""

    intents: list[Intent] = field(default_factory=list)
    fills: list[tuple[str, str, Fill]] = field(default_factory=list)  # (portfolio, intent id, fill)
    done: set[str] = field(default_factory=set)
    checks: dict[str, int] = field(default_factory=dict)  # portfolio -> time of its last quiet check

    def pending(self) -> list[Intent]:
        """Intents that were published but never marked done (their execution was cut short)."""
        return [i for i in self.intents if i.id not in self.done]

    def window_from(self) -> dict[str, int]:
        """Per portfolio, the start of its last window: its last intent or its last quiet check."""
        out = dict(self.checks)
        for i in self.intents:
            out[i.portfolio] = max(out.get(i.portfolio, -1), i.ts_ns)
        return out


async def ensure_streams(js: JetStreamContext) -> None:
    """Create the streams (idempotent; every worker calls it at start)."""
    for config in (
        StreamConfig(name=INTENT_STREAM, subjects=[f"{INTENTS}.*"], storage=StorageType.FILE),
        StreamConfig(name=FILL_STREAM, subjects=[f"{FILLS}.*"], storage=StorageType.FILE),
        StreamConfig(name=LAST_TICK_STREAM, subjects=[f"{TICKS}.*"], storage=StorageType.MEMORY,
                     max_msgs_per_subject=1),
    ):
        await js.add_stream(config)


async def read_subject(js: JetStreamContext, stream: str, subject: str) -> list[bytes]:
    """Every message body stored on `subject`, oldest first (an ordered consumer up to the last sequence)."""
    try:
        last = await js.get_last_msg(stream, subject)
    except nats.js.errors.NotFoundError:
        return []
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    out = []
    try:
        while True:
            msg = await sub.next_msg(timeout=READ_TIMEOUT_SECS)
            out.append(msg.data)
            if msg.metadata.sequence.stream >= last.seq:
                return out
    finally:
        await sub.unsubscribe()


class PartitionRecord:
    """Reads and appends the JetStream record of partitions; mirrors fills into SQLite."""

    def __init__(self, js: JetStreamContext, ledger_dir: Path) -> None:
        self.js = js
        self.ledger_dir = ledger_dir
        ledger_dir.mkdir(parents=True, exist_ok=True)

    async def read(self, partition: int) -> PartitionHistory:
        """The partition's intents, fills (each trade id once) and done markers."""
        history = PartitionHistory()
        seen_intents: set[str] = set()
        for data in await read_subject(self.js, INTENT_STREAM, f"{INTENTS}.{partition}"):
            intent = parse_intent(data)
            if intent.id not in seen_intents:
                seen_intents.add(intent.id)
                history.intents.append(intent)
        seen_trades: set[str] = set()
        for data in await read_subject(self.js, FILL_STREAM, f"{FILLS}.{partition}"):
            d = orjson.loads(data)
            if d["kind"] == "done":
                history.done.add(d["intent"])
                continue
            if d["kind"] == "check":
                history.checks[d["portfolio"]] = max(history.checks.get(d["portfolio"], -1), d["ts_ns"])
                continue
            fill = parse_fill(d["fill"])
            if fill.trade_id not in seen_trades:
                seen_trades.add(fill.trade_id)
                history.fills.append((d["portfolio"], d["intent"], fill))
        return history

    async def add_intent(self, partition: int, intent: Intent) -> None:
        """Record an intent (before any of its orders)."""
        await self.js.publish(f"{INTENTS}.{partition}", intent_body(intent), headers={MSG_ID: intent.id})

    async def add_fill(self, partition: int, portfolio: str, intent_id: str, fill: Fill) -> None:
        """Record a fill (before it is applied to holdings)."""
        await self.js.publish(f"{FILLS}.{partition}", fill_body(portfolio, intent_id, fill),
                              headers={MSG_ID: fill.trade_id})

    async def add_done(self, partition: int, portfolio: str, intent_id: str) -> None:
        """Record that an intent finished executing."""
        await self.js.publish(f"{FILLS}.{partition}", done_body(portfolio, intent_id),
                              headers={MSG_ID: f"done-{intent_id}"})

    async def add_check(self, partition: int, portfolio: str, ts_ns: int) -> None:
        """Record a check that found nothing to trade (it starts a window a takeover must resume)."""
        await self.js.publish(f"{FILLS}.{partition}", check_body(portfolio, ts_ns),
                              headers={MSG_ID: f"check-{portfolio}-{ts_ns}"})

    def mirror(self, partition: int, rows: list[tuple[str, str, Fill]]) -> None:
        """Insert fills into the partition's local SQLite ledger (a trade id is stored once)."""
        if not rows:
            return
        with closing(sqlite3.connect(self.ledger_dir / f"partition-{partition:05d}.sqlite")) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS fills (trade_id TEXT PRIMARY KEY, portfolio TEXT, intent TEXT,"
                       " symbol TEXT, side TEXT, quantity TEXT, price TEXT, fee TEXT, ts_ns INTEGER)")
            db.executemany("INSERT INTO fills VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", list(_rows(rows)))


def _rows(rows: list[tuple[str, str, Fill]]) -> Iterator[tuple[object, ...]]:
    for portfolio, intent_id, f in rows:
        yield (f.trade_id, portfolio, intent_id, f.symbol, f.side.value, str(f.quantity), str(f.price), str(f.fee),
               f.ts_ns)
