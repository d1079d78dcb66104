"""The ledger's synchronous core: schema, exact codecs, write operations, and `LedgerSync` for backtests.

Money and quantities are stored as exact decimal TEXT, never as floats. Every write goes through a
`WriteOp`; `run_batch` runs many requests in one transaction, each inside its own savepoint, so a
refused request changes nothing and fails only itself.
"""
from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from engine.types import Fill, Intent, Order, Side, Transfer, split_symbol
from ops.ledger_read import (
    INTENT_STATUSES,
    ORDER_STATUSES,
    TRANSFER_KINDS,
    VENUE_TERMINAL,
    DuplicateOrder,
    LedgerInputError,
    UnknownOrder,
    attempt_of,
    connect_writer,
    fill_event,
    is_storage_error,
    money,
    to_json,
)
from ops.venues.base import OrderReport

log = logging.getLogger(__name__)

# write operations -----------------------------------------------------------------------------------


@dataclass(slots=True)
class WriteContext:
    """What operations of one writer share: the batch time, whether to emit outbox events, known names."""

    now_ns: int = 0
    outbox: bool = True
    portfolios: dict[str, str] = field(default_factory=dict)

    def quote_of(self, cur: sqlite3.Cursor, portfolio: str) -> str:
        """The portfolio's quote currency; refuses a portfolio that was never recorded."""
        quote = self.portfolios.get(portfolio)
        if quote is None:
            row = cur.execute("SELECT quote FROM portfolios WHERE name = ?", (portfolio,)).fetchone()
            if row is None:
                raise LedgerInputError(f"portfolio {portfolio!r} is not in the ledger (record_portfolio first)")
            quote = self.portfolios[portfolio] = row[0]
        return quote

    def emit(self, cur: sqlite3.Cursor, topic: str, payload: bytes) -> None:
        """Queue an outbox event in the current transaction (when this writer emits events)."""
        if self.outbox:
            cur.execute("INSERT INTO outbox(topic, payload, created_ns) VALUES (?, ?, ?)", (topic, payload, self.now_ns))


class WriteOp(Protocol):
    """One write; `apply` runs inside the writer's transaction and returns the op's result."""

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> Any:
        """Do the write (raise LedgerInputError to refuse the whole request)."""
        ...


@dataclass(frozen=True, slots=True)
class PutPortfolio:
    """Record a portfolio (or update its config); its quote can never change. Result: True when new."""

    name: str
    quote: str
    config: str = "{}"
    created_ns: int | None = None

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> bool:
        row = cur.execute("SELECT quote FROM portfolios WHERE name = ?", (self.name,)).fetchone()
        if row is None:
            cur.execute("INSERT INTO portfolios(name, quote, created_ns, config) VALUES (?, ?, ?, ?)",
                        (self.name, self.quote, self.created_ns or ctx.now_ns, self.config))
            ctx.portfolios[self.name] = self.quote
            return True
        if row[0] != self.quote:
            raise LedgerInputError(f"portfolio {self.name!r} is in {row[0]} in the ledger, not {self.quote}")
        cur.execute("UPDATE portfolios SET config = ? WHERE name = ?", (self.config, self.name))
        return False


@dataclass(frozen=True, slots=True)
class PutTransfer:
    """Record a capital, adopt, deposit or withdraw transfer (idempotent by id). Result: True when new."""

    transfer: Transfer
    kind: str

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> bool:
        t = self.transfer
        if self.kind not in TRANSFER_KINDS:
            raise LedgerInputError(f"transfer kind {self.kind!r} is not one of {', '.join(TRANSFER_KINDS)}")
        ctx.quote_of(cur, t.portfolio)
        cur.execute(
            "INSERT INTO transfers(id, portfolio, asset, amount, ts_ns, kind) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO NOTHING",
            (t.id, t.portfolio, t.asset, money(t.amount), t.ts_ns, self.kind))
        return cur.rowcount == 1


@dataclass(frozen=True, slots=True)
class PutIntent:
    """Record an intent with a status (idempotent by id); seq defaults to the portfolio's next. Result: new?"""

    intent: Intent
    status: str = "new"
    seq: int | None = None

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> bool:
        i = self.intent
        if self.status not in INTENT_STATUSES:
            raise LedgerInputError(f"intent status {self.status!r} is not one of {', '.join(INTENT_STATUSES)}")
        if not math.isfinite(i.drift):
            raise LedgerInputError(f"intent {i.id} has a drift of {i.drift}")
        ctx.quote_of(cur, i.portfolio)
        body = to_json(i)
        seq_sql = "?" if self.seq is not None else "COALESCE((SELECT MAX(seq) FROM intents WHERE portfolio = ?), 0) + 1"
        cur.execute(
            "INSERT INTO intents(id, portfolio, seq, ts_ns, reason, drift, observe, status, body, updated_ns)"
            f" VALUES (?, ?, {seq_sql}, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
            (i.id, i.portfolio, self.seq if self.seq is not None else i.portfolio, i.ts_ns, i.reason.value,
             i.drift, int(i.observe), self.status, body.decode(), ctx.now_ns))
        if cur.rowcount != 1:
            return False
        ctx.emit(cur, f"{i.portfolio}/intent",
                 b'{"event":"intent","status":"' + self.status.encode() + b'","intent":' + body + b"}")
        return True


@dataclass(frozen=True, slots=True)
class SetIntentStatus:
    """Move a recorded intent to a status (emits an outbox event)."""

    intent_id: str
    status: str

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> None:
        if self.status not in INTENT_STATUSES:
            raise LedgerInputError(f"intent status {self.status!r} is not one of {', '.join(INTENT_STATUSES)}")
        row = cur.execute("UPDATE intents SET status = ?, updated_ns = ? WHERE id = ? RETURNING portfolio",
                          (self.status, ctx.now_ns, self.intent_id)).fetchone()
        if row is None:
            raise LedgerInputError(f"intent {self.intent_id} is not in the ledger")
        ctx.emit(cur, f"{row[0]}/intent", to_json({"event": "intent_status", "portfolio": row[0],
                                                   "intent_id": self.intent_id, "status": self.status,
                                                   "updated_ns": ctx.now_ns}))


@dataclass(frozen=True, slots=True)
class PutOrders:
    """Record orders of recorded intents (default status `pending`: before they are sent)."""

    orders: tuple[Order, ...]
    status: str = "pending"

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> None:
        if self.status not in ORDER_STATUSES:
            raise LedgerInputError(f"order status {self.status!r} is not one of {', '.join(ORDER_STATUSES)}")
        owners: dict[str, str] = {}
        for o in self.orders:
            owner = owners.get(o.intent_id)
            if owner is None:
                row = cur.execute("SELECT portfolio FROM intents WHERE id = ?", (o.intent_id,)).fetchone()
                if row is None:
                    raise LedgerInputError(f"order {o.client_order_id}: intent {o.intent_id} is not in the ledger")
                owner = owners[o.intent_id] = row[0]
            if owner != o.portfolio:
                raise LedgerInputError(f"order {o.client_order_id} is for {o.portfolio}, its intent for {owner}")
            split_symbol(o.symbol)
            quote_qty = None if o.quote_quantity is None else money(o.quote_quantity)
            try:
                cur.execute(
                    "INSERT INTO orders(client_order_id, intent_id, portfolio, leg, attempt, symbol, side, quantity,"
                    " quote_quantity, status, venue_order_id, filled, created_ns, updated_ns, error)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, '0', ?, ?, NULL)",
                    (o.client_order_id, o.intent_id, o.portfolio, o.leg, attempt_of(o.client_order_id), o.symbol,
                     Side(o.side).value, money(o.quantity), quote_qty, self.status, ctx.now_ns, ctx.now_ns))
            except sqlite3.IntegrityError:
                raise DuplicateOrder(f"order {o.client_order_id} is already in the ledger; it is never sent twice") from None


def _order_row(cur: sqlite3.Cursor, client_order_id: str) -> tuple[str, str, str, str]:
    row = cur.execute("SELECT portfolio, symbol, side, status FROM orders WHERE client_order_id = ?",
                      (client_order_id,)).fetchone()
    if row is None:
        raise UnknownOrder(f"client order id {client_order_id!r} is not in the ledger; its fills are refused")
    return row  # type: ignore[no-any-return]


def _insert_fills(cur: sqlite3.Cursor, ctx: WriteContext, fills: Iterable[Fill],
                  known: dict[str, tuple[str, str, str, str]]) -> list[Fill]:
    """Insert fills of known orders (ON CONFLICT DO NOTHING); returns the new ones, in order."""
    new = []
    for f in fills:
        row = known.get(f.client_order_id)
        if row is None:
            row = known[f.client_order_id] = _order_row(cur, f.client_order_id)
        portfolio, symbol, side, _ = row
        if f.symbol != symbol or Side(f.side).value != side:
            raise LedgerInputError(f"fill {f.trade_id} is {f.side.value} {f.symbol}; order {f.client_order_id} is {side} {symbol}")
        quantity, price, fee = money(f.quantity), money(f.price), money(f.fee)
        if not f.quantity > 0 or not f.price > 0 or f.fee < 0:
            raise LedgerInputError(f"fill {f.trade_id}: quantity {quantity}, price {price}, fee {fee}")
        cur.execute(
            "INSERT INTO fills(trade_id, client_order_id, portfolio, symbol, side, quantity, price, fee, fee_asset,"
            " ts_ns, venue_order_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(symbol, trade_id) DO NOTHING",
            (str(f.trade_id), f.client_order_id, portfolio, f.symbol, side, quantity, price, fee, f.fee_asset,
             f.ts_ns, f.order_id))
        if cur.rowcount == 1:
            new.append(f)
            ctx.emit(cur, f"{portfolio}/fill", fill_event(portfolio, f, quantity, price, fee))
            continue
        seen = cur.execute("SELECT client_order_id, quantity, price FROM fills WHERE symbol = ? AND trade_id = ?",
                           (f.symbol, str(f.trade_id))).fetchone()
        if seen[0] != f.client_order_id or Decimal(seen[1]) != f.quantity or Decimal(seen[2]) != f.price:
            log.error("fill %s %s seen again with other content (%s, not %s); the first record stands",
                      f.symbol, f.trade_id, seen, (f.client_order_id, f.quantity, f.price))
    return new


@dataclass(frozen=True, slots=True)
class PutFills:
    """Record fills of recorded orders; result: the fills that were new (apply only those)."""

    fills: tuple[Fill, ...]

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> list[Fill]:
        return _insert_fills(cur, ctx, self.fills, {})


@dataclass(frozen=True, slots=True)
class PutOrderReport:
    """Record what the venue said about an order: status, venue id, filled, and its fills. Result: new fills."""

    report: OrderReport

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> list[Fill]:
        r = self.report
        row = _order_row(cur, r.client_order_id)
        if r.symbol != row[1]:
            raise LedgerInputError(f"report for order {r.client_order_id} is about {r.symbol}, not {row[1]}")
        for f in r.fills:
            if f.client_order_id != r.client_order_id:
                raise LedgerInputError(f"report for order {r.client_order_id} carries fill {f.trade_id} of {f.client_order_id}")
        status = r.status.value
        if row[3] in VENUE_TERMINAL and status not in VENUE_TERMINAL:
            log.warning("order %s: venue now says %s after %s; keeping %s", r.client_order_id, status, row[3], row[3])
            status = row[3]
        cur.execute("UPDATE orders SET status = ?, venue_order_id = ?, filled = ?, updated_ns = ?"
                    " WHERE client_order_id = ?",
                    (status, r.order_id or None, money(r.filled_quantity), ctx.now_ns, r.client_order_id))
        return _insert_fills(cur, ctx, r.fills, {r.client_order_id: row})


@dataclass(frozen=True, slots=True)
class SetOrderStatus:
    """Move a recorded order to a status, with an optional error text."""

    client_order_id: str
    status: str
    error: str | None = None

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> None:
        if self.status not in ORDER_STATUSES:
            raise LedgerInputError(f"order status {self.status!r} is not one of {', '.join(ORDER_STATUSES)}")
        cur.execute("UPDATE orders SET status = ?, error = COALESCE(?, error), updated_ns = ? WHERE client_order_id = ?",
                    (self.status, None if self.error is None else self.error[:1000], ctx.now_ns, self.client_order_id))
        if cur.rowcount != 1:
            raise UnknownOrder(f"client order id {self.client_order_id!r} is not in the ledger")


@dataclass(frozen=True, slots=True)
class PutSnapshot:
    """Record a portfolio's holdings at a time (for charts; holdings are always rebuilt from fills)."""

    portfolio: str
    ts_ns: int
    holdings: Mapping[str, Decimal]

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> None:
        cur.execute("INSERT OR REPLACE INTO snapshots(portfolio, ts_ns, holdings) VALUES (?, ?, ?)",
                    (self.portfolio, self.ts_ns, to_json(dict(self.holdings)).decode()))


@dataclass(frozen=True, slots=True)
class PutOutbox:
    """Queue an event for MQTT; result: its seq."""

    topic: str
    payload: bytes

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> int:
        cur.execute("INSERT INTO outbox(topic, payload, created_ns) VALUES (?, ?, ?)", (self.topic, self.payload, ctx.now_ns))
        return int(cur.lastrowid or 0)


@dataclass(frozen=True, slots=True)
class MarkPublished:
    """Mark outbox events as published; result: how many were still unpublished."""

    seqs: tuple[int, ...]

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> int:
        before = cur.connection.total_changes
        cur.executemany("UPDATE outbox SET published_ns = ? WHERE seq = ? AND published_ns IS NULL",
                        [(ctx.now_ns, s) for s in self.seqs])
        return cur.connection.total_changes - before


# connection and batches -----------------------------------------------------------------------------


def run_batch(conn: sqlite3.Connection, ctx: WriteContext,
              requests: Sequence[Sequence[WriteOp]]) -> list[list[Any] | Exception]:
    """Run requests in one transaction, each in a savepoint; a refused request yields its exception.

    Storage errors are raised (after a rollback): the whole batch failed.
    """
    cur = conn.cursor()
    outcomes: list[list[Any] | Exception] = []
    cur.execute("BEGIN IMMEDIATE")
    try:
        for ops in requests:
            cur.execute("SAVEPOINT request")
            try:
                outcomes.append([op.apply(cur, ctx) for op in ops])
            except Exception as exc:  # the request's own failure; storage failures abort the batch
                if is_storage_error(exc):
                    raise
                cur.execute("ROLLBACK TO request")
                outcomes.append(exc)
            cur.execute("RELEASE request")
        cur.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.rollback()
            except sqlite3.Error:
                log.exception("ledger rollback failed")
        raise
    return outcomes


class LedgerSync:
    """The stdlib-sqlite3 ledger writer of `keel backtest`: a `FillSink` that commits every `batch_rows` rows."""

    def __init__(self, path: str | Path, *, batch_rows: int = 5000, outbox: bool = False,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.path = Path(path)
        self._conn = connect_writer(path)
        self._cur = self._conn.cursor()
        self._ctx = WriteContext(outbox=outbox)
        self._clock_ns = clock_ns
        self._batch_rows = batch_rows
        self._known: dict[str, tuple[str, str, str, str]] = {}
        self._open = False
        self._changes_at_begin = self._conn.total_changes

    def _apply(self, op: WriteOp) -> Any:
        if not self._open:
            self._cur.execute("BEGIN IMMEDIATE")
            self._open = True
        self._ctx.now_ns = self._clock_ns()
        self._cur.execute("SAVEPOINT call")
        try:
            result = op.apply(self._cur, self._ctx)
        except BaseException:
            self._cur.execute("ROLLBACK TO call")
            self._cur.execute("RELEASE call")
            raise
        self._cur.execute("RELEASE call")
        if self._conn.total_changes - self._changes_at_begin >= self._batch_rows:
            self.commit()
        return result

    def record_portfolio(self, name: str, quote: str, config: Mapping[str, Any] | str = "{}",
                         created_ns: int | None = None) -> bool:
        """Record a portfolio; True when it is new."""
        text = config if isinstance(config, str) else to_json(dict(config)).decode()
        return bool(self._apply(PutPortfolio(name, quote, text, created_ns)))

    def record_transfer(self, transfer: Transfer, kind: str = "capital") -> bool:
        """Record a transfer; True when it is new."""
        return bool(self._apply(PutTransfer(transfer, kind)))

    def on_intent(self, intent: Intent) -> None:
        """Record an intent (a backtest executes it at once: complete, or observed)."""
        self._apply(PutIntent(intent, "observed" if intent.observe else "complete"))

    def on_order(self, order: Order, status: str) -> None:
        """Record an order with its final status."""
        self._apply(PutOrders((order,), status))
        self._known[order.client_order_id] = (order.portfolio, order.symbol, Side(order.side).value, status)

    def on_fill(self, portfolio: str, fill: Fill) -> None:
        """Record a fill of a recorded order (UnknownOrder otherwise); a duplicate trade id is ignored."""
        row = self._known.get(fill.client_order_id)
        if row is not None and row[0] != portfolio:
            raise LedgerInputError(f"fill {fill.trade_id} is for {portfolio}; its order is of {row[0]}")
        self._apply(_KnownFills((fill,), self._known))

    def commit(self) -> None:
        """Commit what was written since the last commit."""
        if self._open:
            self._cur.execute("COMMIT")
            self._open = False
        self._changes_at_begin = self._conn.total_changes

    def close(self) -> None:
        """Commit and close."""
        try:
            self.commit()
        finally:
            self._conn.close()


@dataclass(frozen=True, slots=True)
class _KnownFills:
    fills: tuple[Fill, ...]
    known: dict[str, tuple[str, str, str, str]]

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> list[Fill]:
        return _insert_fills(cur, ctx, self.fills, self.known)
