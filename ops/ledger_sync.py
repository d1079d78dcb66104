"""`LedgerSync`: the stdlib-sqlite3 ledger writer of `keel backtest`, buffering rows and writing them in bulk.

The rows are the same as the live ledger's, validated the same way (ops.ledger_ops), but there is one caller and
no outbox: rows go in with executemany, one transaction per batch of rows.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.types import Fill, Intent, Order, Transfer
from ops.ledger_ops import (
    INSERT_FILL,
    PutOrders,
    PutPortfolio,
    PutTransfer,
    WriteContext,
    WriteOp,
    fill_texts,
    side_text,
)
from ops.ledger_read import DuplicateOrder, LedgerInputError, UnknownOrder, connect_writer, money, to_json

_INSERT_INTENT = ("INSERT INTO intents(id, portfolio, seq, ts_ns, reason, drift, observe, status, body, updated_ns)"
                  " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING")
_INSERT_ORDER = ("INSERT INTO orders(client_order_id, intent_id, portfolio, leg, attempt, symbol, side, quantity,"
                 " quote_quantity, status, venue_order_id, filled, created_ns, updated_ns, error)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class LedgerSync:
    """The stdlib-sqlite3 ledger writer of `keel backtest`, a `FillSink`.

    Rows are validated as they come (an unknown order's fill raises at once and is not kept) and
    written with executemany, one transaction per `batch_rows` rows and at `commit()` / `close()`.
    No outbox events: a backtest publishes nothing.
    """

    def __init__(self, path: str | Path, *, batch_rows: int = 20000, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.path = Path(path)
        self._conn = connect_writer(path)
        self._clock_ns = clock_ns
        self._batch_rows = batch_rows
        self._quotes: dict[str, str] = dict(self._conn.execute("SELECT name, quote FROM portfolios").fetchall())
        self._seq: dict[str, int] = dict(self._conn.execute(
            "SELECT portfolio, MAX(seq) FROM intents GROUP BY portfolio").fetchall())
        self._had_orders = self._conn.execute("SELECT 1 FROM orders LIMIT 1").fetchone() is not None
        self._intents: dict[str, str] = {}
        self._orders: dict[str, tuple[str, str, str]] = {}
        self._filled: dict[str, Decimal] = {}
        self._trades: set[tuple[str, str]] = set()
        self._intent_rows: list[tuple[Any, ...]] = []
        self._order_rows: dict[str, list[Any]] = {}
        self._fill_rows: list[tuple[Any, ...]] = []
        self._filled_updates: dict[str, str] = {}

    def record_portfolio(self, name: str, quote: str, config: Mapping[str, Any] | str = "{}",
                         created_ns: int | None = None) -> bool:
        """Record a portfolio; True when it is new."""
        text = config if isinstance(config, str) else to_json(dict(config)).decode()
        new = bool(self._run(PutPortfolio(name, quote, text, created_ns)))
        self._quotes[name] = quote
        return new

    def record_transfer(self, transfer: Transfer, kind: str = "capital") -> bool:
        """Record a transfer; True when it is new."""
        return bool(self._run(PutTransfer(transfer, kind)))

    def on_intent(self, intent: Intent) -> None:
        """Record an intent (a backtest executes it at once: complete, or observed)."""
        p = intent.portfolio
        if p not in self._quotes:
            raise LedgerInputError(f"portfolio {p!r} is not in the ledger (record_portfolio first)")
        if not math.isfinite(intent.drift):
            raise LedgerInputError(f"intent {intent.id} has a drift of {intent.drift}")
        if intent.id in self._intents:
            return
        seq = self._seq[p] = self._seq.get(p, 0) + 1
        self._intents[intent.id] = p
        self._intent_rows.append((intent.id, p, seq, intent.ts_ns, intent.reason.value, intent.drift, int(intent.observe),
                                  "observed" if intent.observe else "complete", to_json(intent).decode(), self._clock_ns()))
        self._maybe_flush()

    def on_order(self, order: Order, status: str) -> None:
        """Record an order with its final status (DuplicateOrder when its id is already recorded)."""
        cid = order.client_order_id
        owner = self._intents.get(order.intent_id) or self._lookup("SELECT portfolio FROM intents WHERE id = ?",
                                                                    order.intent_id)
        if owner is None:
            raise LedgerInputError(f"order {cid}: intent {order.intent_id} is not in the ledger")
        if owner != order.portfolio:
            raise LedgerInputError(f"order {cid} is for {order.portfolio}, its intent for {owner}")
        if cid in self._orders or (self._had_orders and self._lookup(
                "SELECT 1 FROM orders WHERE client_order_id = ?", cid) is not None):
            raise DuplicateOrder(f"order {cid} is already in the ledger; it is never sent twice")
        [row] = PutOrders((order,), status).rows
        now = self._clock_ns()
        self._order_rows[cid] = [*row, None, "0", now, now, None]
        self._orders[cid] = (order.portfolio, order.symbol, side_text(order.side))
        self._maybe_flush()

    def on_fill(self, portfolio: str, fill: Fill) -> None:
        """Record a fill of a recorded order (UnknownOrder otherwise, nothing kept); a repeated trade id is ignored."""
        cid = fill.client_order_id
        known = self._orders.get(cid)
        if known is None:
            row = self._conn.execute("SELECT portfolio, symbol, side FROM orders WHERE client_order_id = ?",
                                     (cid,)).fetchone()
            if row is None:
                raise UnknownOrder(f"client order id {cid!r} is not in the ledger; its fills are refused")
            known = self._orders[cid] = row
        if (portfolio, fill.symbol, side_text(fill.side)) != known:
            raise LedgerInputError(f"fill {fill.trade_id} ({portfolio} {fill.side.value} {fill.symbol}) does not "
                                   f"match order {cid} ({' '.join(known)})")
        [(quantity, price, fee)] = fill_texts((fill,))
        key = (fill.symbol, str(fill.trade_id))
        if key in self._trades:
            return
        self._trades.add(key)
        self._fill_rows.append((str(fill.trade_id), cid, portfolio, fill.symbol, known[2], quantity, price, fee,
                                fill.fee_asset, fill.ts_ns, fill.order_id))
        filled = self._filled[cid] = self._filled.get(cid, Decimal(0)) + fill.quantity
        if cid in self._order_rows:
            self._order_rows[cid][11] = money(filled)
        else:
            self._filled_updates[cid] = money(filled)
        self._maybe_flush()

    def commit(self) -> None:
        """Write and commit everything buffered."""
        if not (self._intent_rows or self._order_rows or self._fill_rows or self._filled_updates):
            return
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.executemany(_INSERT_INTENT, self._intent_rows)
            cur.executemany(_INSERT_ORDER, list(self._order_rows.values()))
            cur.executemany(INSERT_FILL, self._fill_rows)
            cur.executemany("UPDATE orders SET filled = ? WHERE client_order_id = ?",
                            [(f, c) for c, f in self._filled_updates.items()])
            cur.execute("COMMIT")
        except BaseException:
            self._conn.rollback()
            raise
        self._intent_rows.clear()
        self._order_rows.clear()
        self._fill_rows.clear()
        self._filled_updates.clear()

    def close(self) -> None:
        """Commit and close."""
        try:
            self.commit()
        finally:
            self._conn.close()

    def _maybe_flush(self) -> None:
        if len(self._intent_rows) + len(self._order_rows) + len(self._fill_rows) >= self._batch_rows:
            self.commit()

    def _lookup(self, sql: str, key: str) -> Any:
        row = self._conn.execute(sql, (key,)).fetchone()
        return None if row is None else row[0]

    def _run(self, op: WriteOp) -> Any:
        self.commit()
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            result = op.apply(cur, WriteContext(now_ns=self._clock_ns(), outbox=False))
            cur.execute("COMMIT")
        except BaseException:
            self._conn.rollback()
            raise
        return result
