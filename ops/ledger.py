"""The live ledger: one SQLite file (WAL, synchronous=FULL), one writer with group commit, async reads.

Writers call `await ledger.submit(ops)` (or a typed helper). One writer thread takes every request
that queued while the previous transaction was being fsynced, runs them all in ONE transaction
(each request in its own savepoint, so a refused request fails only itself), commits, then resolves
every caller's future. A caller's write is durable when its await returns. The writer is a thread
rather than aiosqlite calls because aiosqlite costs one thread hop per statement; reads go through
aiosqlite on a separate read-only connection (WAL readers never block the writer).
"""
from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from engine.sensor import NULL_SENSOR, Sensor
from engine.types import Fill, Intent, Order, Reason, Transfer
from ops.ledger_ops import (
    MarkPublished,
    PruneOutbox,
    PutFills,
    PutIntent,
    PutOrderReport,
    PutOrders,
    PutOutbox,
    PutPortfolio,
    PutQuietCheck,
    PutSnapshot,
    PutTransfer,
    SetIntentStatus,
    SetOrderStatus,
    WriteContext,
    WriteOp,
)
from ops.ledger_read import (
    OPEN_ORDER_STATUSES,
    DuplicateOrder,
    FillRecord,
    IntentRecord,
    LedgerError,
    LedgerInputError,
    OrderRecord,
    OutboxBacklog,
    OutboxEvent,
    Query,
    UnknownOrder,
    connect_writer,
    holdings_from,
    is_storage_error,
    q_fills,
    q_integrity_check,
    q_intent,
    q_intent_count,
    q_intents_with_status,
    q_last_intent,
    q_last_quiet_check,
    q_open_orders,
    q_order,
    q_orders_of_intent,
    q_outbox_backlog,
    q_outbox_pending,
    q_portfolio_quote,
    q_transfers,
    to_json,
)
from ops.venues.base import OrderReport

__all__ = [
    "OPEN_ORDER_STATUSES", "DuplicateOrder", "FillRecord", "IntentRecord", "Ledger", "LedgerError",
    "LedgerInputError", "OrderRecord", "OutboxBacklog", "OutboxEvent", "UnknownOrder", "WriteOp",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
_STOP = object()


@dataclass(slots=True)
class _Request:
    ops: tuple[WriteOp, ...]
    future: asyncio.Future[list[Any]]


def run_batch(conn: sqlite3.Connection, ctx: WriteContext,
              requests: Sequence[Sequence[WriteOp]]) -> list[list[Any] | Exception]:
    """Run requests in ONE transaction; a refused request yields its exception and changes nothing.

    Fast path: every request straight through. If one is refused, the transaction is rolled back and
    the batch re-run with a savepoint per request. Storage errors are raised (after a rollback).
    """
    cur = conn.cursor()
    try:
        cur.execute("BEGIN IMMEDIATE")
        try:
            outcomes: list[list[Any] | Exception] = [[op.apply(cur, ctx) for op in ops] for ops in requests]
        except Exception as exc:  # a refused request: redo the batch request by request
            if is_storage_error(exc):
                raise
            _rollback(conn, ctx)
            if len(requests) == 1:
                return [exc]
            cur.execute("BEGIN IMMEDIATE")
            outcomes = [_in_savepoint(cur, ctx, ops) for ops in requests]
        cur.execute("COMMIT")
    except BaseException:
        _rollback(conn, ctx)
        raise
    return outcomes


def _in_savepoint(cur: sqlite3.Cursor, ctx: WriteContext, ops: Sequence[WriteOp]) -> list[Any] | Exception:
    cur.execute("SAVEPOINT request")
    try:
        result: list[Any] | Exception = [op.apply(cur, ctx) for op in ops]
    except Exception as exc:  # the request's own failure; storage failures abort the batch
        if is_storage_error(exc):
            raise
        cur.execute("ROLLBACK TO request")
        ctx.portfolios.clear()
        result = exc
    cur.execute("RELEASE request")
    return result


def _rollback(conn: sqlite3.Connection, ctx: WriteContext) -> None:
    ctx.portfolios.clear()
    if conn.in_transaction:
        try:
            conn.rollback()
        except sqlite3.Error:
            log.exception("ledger rollback failed")


class Ledger:
    """The service's ledger. Open with `await Ledger.open(path)`; close with `await ledger.close()`."""

    def __init__(self, path: Path, writer: sqlite3.Connection, reader: aiosqlite.Connection, loop: asyncio.AbstractEventLoop,
                 sensor: Sensor, clock_ns: Callable[[], int], outbox: bool = True) -> None:
        self.path = path
        self.commits = 0
        self.requests = 0
        self._conn = writer
        self._reader = reader
        self._loop = loop
        self._sensor = sensor
        self._clock_ns = clock_ns
        self._ctx = WriteContext(outbox=outbox)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._healthy = True
        self._closed = False
        self._snapshot_lock = asyncio.Lock()
        self.outbox_event = asyncio.Event()
        self.outbox_event.set()  # a publisher starting up looks for rows left unpublished
        self._thread = threading.Thread(target=self._writer_loop, name="keel-ledger-writer", daemon=True)
        self._thread.start()

    @classmethod
    async def open(cls, path: str | Path, *, sensor: Sensor = NULL_SENSOR, read_only: bool = False,
                   clock_ns: Callable[[], int] = time.time_ns, outbox: bool = True) -> Ledger:
        """Open (creating if needed) the ledger at `path`; `read_only` opens it so that every write fails;
        `outbox=False` writes no event rows for a publisher (MQTT off)."""
        path = Path(path)
        writer = await asyncio.to_thread(connect_writer, path, read_only=read_only)
        try:
            reader = await aiosqlite.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        except Exception as exc:
            writer.close()
            raise LedgerError(f"ledger {path} cannot be opened for reading: {exc}") from exc
        log.info("ledger %s open%s", path, " (read-only)" if read_only else "")
        return cls(path, writer, reader, asyncio.get_running_loop(), sensor, clock_ns, outbox)

    @property
    def healthy(self) -> bool:
        """False once a write failed for a storage reason (disk full, read-only, I/O): trading must halt."""
        return self._healthy

    async def close(self) -> None:
        """Let queued writes finish, stop the writer, close both connections."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        await self._reader.close()
        log.info("ledger %s closed after %d commits", self.path, self.commits)

    # writes -----------------------------------------------------------------------------------------

    async def submit(self, ops: Iterable[WriteOp]) -> list[Any]:
        """Run the ops in one request (all or nothing) and return their results once committed.

        Raises LedgerInputError (and subclasses) when the request is refused, LedgerError when the
        ledger cannot write.
        """
        if self._closed:
            raise LedgerError(f"ledger {self.path} is closed")
        future: asyncio.Future[list[Any]] = self._loop.create_future()
        self._queue.put(_Request(tuple(ops), future))
        self.requests += 1
        return await future

    async def record_portfolio(self, name: str, quote: str, config: Mapping[str, Any] | str = "{}",
                               created_ns: int | None = None) -> bool:
        """Record a portfolio (its quote can never change); True when new."""
        text = config if isinstance(config, str) else to_json(dict(config)).decode()
        return bool((await self.submit([PutPortfolio(name, quote, text, created_ns)]))[0])

    async def record_transfer(self, transfer: Transfer, kind: str = "deposit") -> bool:
        """Record a capital | adopt | deposit | withdraw transfer (idempotent by id); True when new."""
        return bool((await self.submit([PutTransfer(transfer, kind)]))[0])

    async def record_intent(self, intent: Intent, status: str = "new") -> bool:
        """Record an intent with the portfolio's next seq (idempotent by id); True when new."""
        return bool((await self.submit([PutIntent(intent, status)]))[0])

    async def update_intent_status(self, intent_id: str, status: str) -> None:
        """Move an intent to a status."""
        await self.submit([SetIntentStatus(intent_id, status)])

    async def record_order_pending(self, order: Order) -> None:
        """Record an order as `pending` BEFORE it is sent; DuplicateOrder when its id is already recorded."""
        await self.submit([PutOrders((order,))])

    async def record_orders_pending(self, orders: Sequence[Order]) -> None:
        """Record several orders as `pending` in one request (all or none)."""
        await self.submit([PutOrders(tuple(orders))])

    async def record_order_report(self, report: OrderReport) -> list[Fill]:
        """Record a venue report (status, fills); returns the fills that were NEW (apply only those)."""
        return list((await self.submit([PutOrderReport(report)]))[0])

    async def record_order_status(self, client_order_id: str, status: str, error: str | None = None) -> None:
        """Move an order to a status (rejected, not_placed, unknown...), with the reason."""
        await self.submit([SetOrderStatus(client_order_id, status, error)])

    async def record_fills(self, fills: Sequence[Fill]) -> list[Fill]:
        """Record fills of recorded orders; returns the NEW ones (UnknownOrder for an unknown order)."""
        return list((await self.submit([PutFills(tuple(fills))]))[0])

    async def record_snapshot(self, portfolio: str, ts_ns: int, holdings: Mapping[str, Decimal]) -> None:
        """Record a holdings snapshot (charts only: holdings are always rebuilt from fills)."""
        await self.submit([PutSnapshot(portfolio, ts_ns, dict(holdings))])

    async def record_quiet_checks(self, checks: Iterable[tuple[str, Reason, int]]) -> None:
        """Record (portfolio, reason, ts_ns) of checks that found nothing to trade, in one request; per portfolio
        the latest is kept (a restart resumes the window it started)."""
        await self.submit([PutQuietCheck(name, ts_ns, reason) for name, reason, ts_ns in checks])

    async def enqueue_outbox(self, topic: str, payload: bytes) -> int:
        """Queue an event for MQTT; returns its seq."""
        return int((await self.submit([PutOutbox(topic, payload)]))[0])

    async def mark_published(self, seqs: Iterable[int]) -> int:
        """Mark outbox events as published; returns how many changed."""
        return int((await self.submit([MarkPublished(tuple(seqs))]))[0])

    async def prune_outbox(self, retention_ns: int, batch_rows: int = 1000) -> int:
        """Delete events published more than `retention_ns` ago, never unpublished ones, `batch_rows` per write
        request (other writes go between batches); returns how many."""
        pruned = 0
        while deleted := int((await self.submit([PruneOutbox(retention_ns, batch_rows)]))[0]):
            pruned += deleted
        return pruned

    # reads ------------------------------------------------------------------------------------------

    async def _read(self, query: Query[T]) -> T:
        try:
            rows = await self._reader.execute_fetchall(query.sql, query.params)
        except Exception as exc:
            raise LedgerError(f"ledger {self.path} read failed: {exc}") from exc
        return query.decode([tuple(r) for r in rows])

    async def rebuild_holdings(self, portfolio: str) -> dict[str, Decimal]:
        """Holdings from the ledger alone: transfers plus every fill's exact deltas (fees included), one snapshot."""
        async with self._snapshot_lock:
            await self._reader.execute("BEGIN")
            try:
                quote = await self._read(q_portfolio_quote(portfolio))
                transfers = await self._read(q_transfers(portfolio))
                fills = await self._read(q_fills(portfolio))
            finally:
                await self._reader.execute("COMMIT")
        return holdings_from(portfolio, quote, transfers, fills)

    async def holdings(self, portfolio: str) -> dict[str, Decimal]:
        """The portfolio's holdings as the ledger has them (same as `rebuild_holdings`)."""
        return await self.rebuild_holdings(portfolio)

    async def transfers(self, portfolio: str) -> list[tuple[str, Decimal]]:
        """(asset, amount) of every transfer of a portfolio, in the order recorded."""
        return [(asset, Decimal(amount)) for asset, amount in await self._read(q_transfers(portfolio))]

    async def open_orders(self) -> list[OrderRecord]:
        """Orders in a non-terminal status (pending, new, partially_filled, unknown)."""
        return await self._read(q_open_orders())

    async def order(self, client_order_id: str) -> OrderRecord | None:
        """One order by client order id."""
        return await self._read(q_order(client_order_id))

    async def orders_of_intent(self, intent_id: str) -> list[OrderRecord]:
        """The orders of one intent."""
        return await self._read(q_orders_of_intent(intent_id))

    async def intent(self, intent_id: str) -> IntentRecord | None:
        """One intent by id."""
        return await self._read(q_intent(intent_id))

    async def intents_with_status(self, *statuses: str, portfolio: str | None = None) -> list[IntentRecord]:
        """Intents in any of the statuses (all when none given), oldest first."""
        return await self._read(q_intents_with_status(statuses, portfolio))

    async def last_intent(self, portfolio: str) -> IntentRecord | None:
        """The latest intent of a portfolio."""
        return await self._read(q_last_intent(portfolio))

    async def last_quiet_check(self, portfolio: str) -> int | None:
        """The time of the portfolio's last check that found nothing to trade (None if never)."""
        return await self._read(q_last_quiet_check(portfolio))

    async def intent_count(self, portfolio: str) -> int:
        """How many intents a portfolio has."""
        return await self._read(q_intent_count(portfolio))

    async def fills(self, portfolio: str | None = None) -> list[FillRecord]:
        """Committed fills in commit order."""
        return await self._read(q_fills(portfolio))

    async def outbox_pending(self, limit: int = 100) -> list[OutboxEvent]:
        """Unpublished events, oldest first."""
        return await self._read(q_outbox_pending(limit))

    async def outbox_backlog(self) -> OutboxBacklog:
        """How many events wait to be published, and the oldest one's time."""
        return await self._read(q_outbox_backlog())

    async def integrity_check(self) -> list[str]:
        """`PRAGMA integrity_check`: `['ok']` when the file is sound."""
        return await self._read(q_integrity_check())

    # the writer thread ------------------------------------------------------------------------------

    def _writer_loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch: list[_Request] = [item]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)
        self._conn.close()

    def _commit(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        changes = self._conn.total_changes
        self._ctx.now_ns = self._clock_ns()
        self._ctx.events = 0
        try:
            outcomes: list[Any] = run_batch(self._conn, self._ctx, [r.ops for r in batch])
            ok = True
        except Exception as exc:  # the writer thread's loop boundary: a storage failure fails the whole batch
            ok = False
            log.error("ledger %s write failed, %d requests refused: %s", self.path, len(batch), exc)
            outcomes = [LedgerError(f"ledger {self.path} cannot write: {exc}") for _ in batch]
        rows = self._conn.total_changes - changes if ok else 0
        events = self._ctx.events if ok else 0
        try:
            self._loop.call_soon_threadsafe(self._settle, batch, outcomes, ok, rows, events,
                                            time.perf_counter() - started)
        except RuntimeError:  # the event loop is gone: nobody is waiting any more
            log.warning("ledger %s: %d requests committed=%s after their event loop closed", self.path, len(batch), ok)

    def _settle(self, batch: list[_Request], outcomes: list[Any], ok: bool, rows: int, events: int,
                seconds: float) -> None:
        if ok:
            self.commits += 1
            self._sensor.on_ledger_commit(rows, seconds)
            if events:
                self.outbox_event.set()
        elif self._healthy:
            self._healthy = False
            log.critical("ledger %s is unhealthy: trading must halt", self.path)
        for request, outcome in zip(batch, outcomes, strict=True):
            if request.future.done():
                continue
            if isinstance(outcome, Exception):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)
