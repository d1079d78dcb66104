"""The ledger's write operations: each `WriteOp` checks a request and writes it in the writer's transaction
(money as exact decimal TEXT, never floats; outbox events in the same transaction as the rows they describe)."""
from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from engine.types import Fill, Intent, Order, Reason, Transfer, split_symbol
from ops.ledger_read import (
    INTENT_STATUSES,
    ORDER_STATUSES,
    TRANSFER_KINDS,
    VENUE_TERMINAL,
    DuplicateOrder,
    LedgerInputError,
    UnknownOrder,
    attempt_of,
    fill_event,
    money,
    to_json,
)
from ops.venues.base import OrderReport

log = logging.getLogger(__name__)
_SIDE_TEXT = {"buy": "buy", "sell": "sell"}  # a Side member hashes and compares as its text
_REASONS = frozenset(r.value for r in Reason)  # a Reason member hashes and compares as its text

_INSERT_PENDING_ORDERS = (
    "INSERT INTO orders(client_order_id, intent_id, portfolio, leg, attempt, symbol, side, quantity,"
    " quote_quantity, status, venue_order_id, filled, created_ns, updated_ns, error)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, '0', ?, ?, NULL)")
_SELECT_ORDER = "SELECT portfolio, symbol, side, status FROM orders WHERE client_order_id = ?"
# a plain UPDATE after a SELECT: here about twice as fast as one UPDATE ... RETURNING with the rule in a CASE
_UPDATE_FROM_REPORT = "UPDATE orders SET status = ?, venue_order_id = ?, filled = ?, updated_ns = ? WHERE client_order_id = ?"
INSERT_FILL = (
    "INSERT INTO fills(trade_id, client_order_id, portfolio, symbol, side, quantity, price, fee, fee_asset,"
    " ts_ns, venue_order_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(symbol, trade_id) DO NOTHING")


def side_text(side: object) -> str:
    """`buy` | `sell` for a Side (or its text); ValueError for anything else."""
    try:
        return _SIDE_TEXT[side]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(f"{side!r} is not a valid Side") from None


@dataclass(slots=True)
class WriteContext:
    """What operations of one writer share: the batch time, whether to emit outbox events, known names."""

    now_ns: int = 0
    outbox: bool = True
    portfolios: dict[str, str] = field(default_factory=dict)
    events: int = 0

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
            self.events += 1


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
    rows: tuple[tuple[Any, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.status not in ORDER_STATUSES:
            raise LedgerInputError(f"order status {self.status!r} is not one of {', '.join(ORDER_STATUSES)}")
        status = self.status
        rows = []
        for o in self.orders:
            split_symbol(o.symbol)
            cid, spend = o.client_order_id, o.quote_quantity
            rows.append((cid, o.intent_id, o.portfolio, o.leg, attempt_of(cid), o.symbol, side_text(o.side),
                         money(o.quantity), None if spend is None else money(spend), status))
        object.__setattr__(self, "rows", tuple(rows))

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> None:
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
        now = ctx.now_ns
        try:
            cur.executemany(_INSERT_PENDING_ORDERS, [(*r, now, now) for r in self.rows])
        except sqlite3.IntegrityError:
            cids = [o.client_order_id for o in self.orders]
            known = [r[0] for r in cur.execute(
                f"SELECT client_order_id FROM orders WHERE client_order_id IN ({', '.join('?' for _ in cids)})", cids)]
            raise DuplicateOrder(f"orders {', '.join(known) or cids} are already in the ledger; never sent twice") from None


def _order_row(cur: sqlite3.Cursor, client_order_id: str) -> tuple[str, str, str, str]:
    row = cur.execute(_SELECT_ORDER, (client_order_id,)).fetchone()
    if row is None:
        raise UnknownOrder(f"client order id {client_order_id!r} is not in the ledger; its fills are refused")
    return row  # type: ignore[no-any-return]


def fill_texts(fills: Iterable[Fill]) -> tuple[tuple[str, str, str], ...]:
    """(quantity, price, fee) of each fill as exact text, refusing nonsense."""
    texts = []
    for f in fills:
        quantity, price, fee = money(f.quantity), money(f.price), money(f.fee)
        if not f.quantity > 0 or not f.price > 0 or f.fee < 0:
            raise LedgerInputError(f"fill {f.trade_id}: quantity {quantity}, price {price}, fee {fee}")
        texts.append((quantity, price, fee))
    return tuple(texts)


def _insert_fills(cur: sqlite3.Cursor, ctx: WriteContext, fills: Sequence[Fill], texts: Sequence[tuple[str, str, str]],
                  known: dict[str, tuple[str, str, str, str]]) -> list[Fill]:
    """Insert fills of known orders (ON CONFLICT DO NOTHING); returns the new ones, in order."""
    new = []
    for f, (quantity, price, fee) in zip(fills, texts, strict=True):
        row = known.get(f.client_order_id)
        if row is None:
            row = known[f.client_order_id] = _order_row(cur, f.client_order_id)
        portfolio, symbol, side, _ = row
        if f.symbol != symbol or f.side != side:  # a Side equals its text
            raise LedgerInputError(f"fill {f.trade_id} is {f.side} {f.symbol}; order {f.client_order_id} is {side} {symbol}")
        cur.execute(INSERT_FILL, (str(f.trade_id), f.client_order_id, portfolio, f.symbol, side, quantity, price,
                                   fee, f.fee_asset, f.ts_ns, f.order_id))
        if cur.rowcount == 1:
            new.append(f)
            if ctx.outbox:
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
    texts: tuple[tuple[str, str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", fill_texts(self.fills))

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> list[Fill]:
        return _insert_fills(cur, ctx, self.fills, self.texts, {})


@dataclass(frozen=True, slots=True)
class PutOrderReport:
    """Record what the venue said about an order: status, venue id, filled, and its fills. Result: new fills."""

    report: OrderReport
    texts: tuple[tuple[str, str, str], ...] = field(init=False, repr=False, compare=False)
    filled: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        r = self.report
        cid, fills = r.client_order_id, r.fills
        for f in fills:
            if f.client_order_id != cid:
                raise LedgerInputError(f"report for order {cid} carries fill {f.trade_id} of {f.client_order_id}")
        texts = fill_texts(fills)
        object.__setattr__(self, "texts", texts)
        # the usual report of one fill carries that fill's own quantity: its text is already made
        same = len(fills) == 1 and fills[0].quantity is r.filled_quantity
        object.__setattr__(self, "filled", texts[0][0] if same else money(r.filled_quantity))

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> list[Fill]:
        r = self.report
        cid, status = r.client_order_id, r.status.value
        portfolio, symbol, side, was = _order_row(cur, cid)
        if symbol != r.symbol:
            raise LedgerInputError(f"report for order {cid} is about {r.symbol}, not {symbol}")
        if was in VENUE_TERMINAL and status not in VENUE_TERMINAL:  # never from terminal back to open
            log.warning("order %s: venue now says %s; keeping %s", cid, status, was)
            status = was
        cur.execute(_UPDATE_FROM_REPORT, (status, r.order_id or None, self.filled, ctx.now_ns, cid))
        return _insert_fills(cur, ctx, r.fills, self.texts, {cid: (portfolio, symbol, side, status)})


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
class PutQuietCheck:
    """Record a check that found nothing to trade (it started a window); a portfolio keeps only its latest."""

    portfolio: str
    ts_ns: int
    reason: Reason

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> None:
        ctx.quote_of(cur, self.portfolio)
        if type(self.ts_ns) is not int or self.ts_ns < 0:
            raise LedgerInputError(f"quiet check of {self.portfolio}: time {self.ts_ns!r} is not ns since the epoch")
        if self.reason not in _REASONS:
            raise LedgerInputError(f"quiet check of {self.portfolio}: {self.reason!r} is not a Reason")
        cur.execute("INSERT INTO quiet_checks(portfolio, ts_ns, reason) VALUES (?, ?, ?) ON CONFLICT(portfolio)"
                    " DO UPDATE SET ts_ns = excluded.ts_ns, reason = excluded.reason"
                    " WHERE excluded.ts_ns > quiet_checks.ts_ns", (self.portfolio, self.ts_ns, str(self.reason)))


@dataclass(frozen=True, slots=True)
class PutOutbox:
    """Queue an event for MQTT; result: its seq."""

    topic: str
    payload: bytes

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> int:
        cur.execute("INSERT INTO outbox(topic, payload, created_ns) VALUES (?, ?, ?)", (self.topic, self.payload, ctx.now_ns))
        ctx.events += 1
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


# bounded work: only the oldest `limit` rows are read, where old published rows are (published in seq order)
_PRUNE_OUTBOX = ("DELETE FROM outbox WHERE seq IN (SELECT seq FROM (SELECT seq, published_ns FROM outbox ORDER BY seq"
                 " LIMIT ?) WHERE published_ns IS NOT NULL AND published_ns < ?)")


@dataclass(frozen=True, slots=True)
class PruneOutbox:
    """Delete events published more than `retention_ns` ago among the oldest `limit` rows; result: how many."""

    retention_ns: int
    limit: int = 1000

    def __post_init__(self) -> None:
        if self.retention_ns < 0 or self.limit < 1:
            raise LedgerInputError(f"outbox prune: retention {self.retention_ns} ns, batch {self.limit} rows")

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> int:
        cur.execute(_PRUNE_OUTBOX, (self.limit, ctx.now_ns - self.retention_ns))
        return cur.rowcount
