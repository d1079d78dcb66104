"""The ledger's data model: schema, errors, exact codecs, row records and the read queries.

Reads are plain SQL with a decoder (`Query`), run by the sync backtest writer on sqlite3 and by the
live `Ledger` on aiosqlite. Holdings are always rebuilt from transfers and fills, exactly.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson

from engine.execution import fill_deltas
from engine.types import Fill, Intent, Leg, Order, Reason, Side
from ops.venues.base import TERMINAL

T = TypeVar("T")
Row = tuple[Any, ...]

SCHEMA_VERSION = "1"  # tables added later are created IF NOT EXISTS when a writer opens an older file
INTENT_STATUSES = ("new", "executing", "complete", "partial", "failed", "parked", "superseded", "interrupted",
                   "observed")
ORDER_STATUSES = ("pending", "new", "partially_filled", "filled", "canceled", "expired", "rejected", "unknown",
                  "not_placed")
OPEN_ORDER_STATUSES = ("pending", "new", "partially_filled", "unknown")
TRANSFER_KINDS = ("capital", "adopt", "deposit", "withdraw")
VENUE_TERMINAL = frozenset(s.value for s in TERMINAL)


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS portfolios(
    name TEXT PRIMARY KEY, quote TEXT NOT NULL, created_ns INTEGER NOT NULL, config TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS transfers(
    id TEXT PRIMARY KEY, portfolio TEXT NOT NULL, asset TEXT NOT NULL, amount TEXT NOT NULL,
    ts_ns INTEGER NOT NULL, kind TEXT NOT NULL CHECK (kind IN ({_sql_list(TRANSFER_KINDS)}))) STRICT;
CREATE INDEX IF NOT EXISTS transfers_portfolio ON transfers(portfolio);
CREATE TABLE IF NOT EXISTS intents(
    id TEXT PRIMARY KEY, portfolio TEXT NOT NULL, seq INTEGER NOT NULL, ts_ns INTEGER NOT NULL,
    reason TEXT NOT NULL, drift REAL NOT NULL, observe INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({_sql_list(INTENT_STATUSES)})),
    body TEXT NOT NULL, updated_ns INTEGER NOT NULL) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS intents_portfolio_seq ON intents(portfolio, seq);
CREATE INDEX IF NOT EXISTS intents_status ON intents(status);
CREATE TABLE IF NOT EXISTS orders(
    client_order_id TEXT PRIMARY KEY, intent_id TEXT NOT NULL, portfolio TEXT NOT NULL, leg INTEGER NOT NULL,
    attempt INTEGER NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity TEXT NOT NULL, quote_quantity TEXT,
    status TEXT NOT NULL CHECK (status IN ({_sql_list(ORDER_STATUSES)})),
    venue_order_id TEXT, filled TEXT NOT NULL, created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL,
    error TEXT) STRICT;
CREATE INDEX IF NOT EXISTS orders_intent ON orders(intent_id);
CREATE INDEX IF NOT EXISTS orders_open ON orders(status) WHERE status IN ({_sql_list(OPEN_ORDER_STATUSES)});
CREATE TABLE IF NOT EXISTS fills(
    trade_id TEXT NOT NULL, client_order_id TEXT NOT NULL, portfolio TEXT NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')), quantity TEXT NOT NULL, price TEXT NOT NULL,
    fee TEXT NOT NULL, fee_asset TEXT NOT NULL, ts_ns INTEGER NOT NULL, venue_order_id TEXT NOT NULL,
    PRIMARY KEY (symbol, trade_id)) STRICT;
CREATE INDEX IF NOT EXISTS fills_portfolio ON fills(portfolio);
CREATE TABLE IF NOT EXISTS snapshots(
    portfolio TEXT NOT NULL, ts_ns INTEGER NOT NULL, holdings TEXT NOT NULL, PRIMARY KEY (portfolio, ts_ns)) STRICT;
CREATE TABLE IF NOT EXISTS outbox(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,
    created_ns INTEGER NOT NULL, published_ns INTEGER) STRICT;
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(seq) WHERE published_ns IS NULL;
CREATE TABLE IF NOT EXISTS quiet_checks(portfolio TEXT PRIMARY KEY, ts_ns INTEGER NOT NULL, reason TEXT NOT NULL) STRICT;
"""


class LedgerError(Exception):
    """The ledger could not write (disk full, read-only, I/O error, closed): trading must halt."""


class LedgerInputError(ValueError):
    """A write was refused for its content; nothing of that request was written."""


class UnknownOrder(LedgerInputError):
    """A fill or report names a client order id the ledger has no record of."""


class DuplicateOrder(LedgerInputError):
    """An order with this client order id is already recorded: it must not be sent again."""


# codecs ---------------------------------------------------------------------------------------------


def money(value: Decimal) -> str:
    """An exact, finite Decimal as plain decimal text (never a float)."""
    if not isinstance(value, Decimal):
        raise LedgerInputError(f"money must be an exact Decimal, got {type(value).__name__} {value!r}")
    if not value.is_finite():
        raise LedgerInputError(f"money must be finite, got {value}")
    return format(value, "f")


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return money(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(value: object) -> bytes:
    """orjson with Decimals as exact strings."""
    return orjson.dumps(value, default=_json_default)


def fill_event(portfolio: str, fill: Fill, quantity: str, price: str, fee: str) -> bytes:
    """The outbox payload of a committed fill (money already rendered by `money`)."""
    return orjson.dumps({
        "event": "fill", "portfolio": portfolio, "intent_id": fill.client_order_id[1:17],
        "client_order_id": fill.client_order_id, "trade_id": str(fill.trade_id), "order_id": fill.order_id,
        "symbol": fill.symbol, "side": fill.side.value, "quantity": quantity, "price": price, "fee": fee,
        "fee_asset": fill.fee_asset, "ts_ns": fill.ts_ns,
    })


def attempt_of(client_order_id: str) -> int:
    """The attempt number encoded in `k{intent:16}{leg:02d}{attempt:x}` (0 when it does not parse)."""
    try:
        return int(client_order_id[19:], 16)
    except ValueError:
        return 0


def is_storage_error(exc: BaseException) -> bool:
    """True for failures of the database itself (disk full, read-only, I/O, corruption), not of a request."""
    return isinstance(exc, sqlite3.OperationalError | sqlite3.InternalError) or type(exc) is sqlite3.DatabaseError


def connect_writer(path: str | Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Open the ledger for writing (WAL, synchronous=FULL), creating the schema; LedgerError on failure."""
    try:
        if read_only:
            conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        if not read_only:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise LedgerError(f"ledger {path}: journal mode is {mode}, WAL is required")
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error as exc:
        raise LedgerError(f"ledger {path} cannot be opened for writing: {exc}") from exc
    if row is None or row[0] != SCHEMA_VERSION:
        conn.close()
        raise LedgerError(f"ledger {path} has schema version {row and row[0]}; this keel needs {SCHEMA_VERSION}")
    return conn


def intent_from_json(body: str | bytes) -> Intent:
    """An Intent back from its stored body (exact Decimals)."""
    d = orjson.loads(body)
    legs = tuple(Leg(x["symbol"], Side(x["side"]), Decimal(x["quantity"]), Decimal(x["expected_price"]),
                     Decimal(x["notional"])) for x in d["legs"])
    return Intent(id=d["id"], portfolio=d["portfolio"], ts_ns=d["ts_ns"], reason=Reason(d["reason"]),
                  drift=d["drift"], prices=d["prices"], weights=d["weights"], legs=legs,
                  expected_residual_drift=d["expected_residual_drift"], observe=d["observe"],
                  quote_reserve=Decimal(d["quote_reserve"]))


# records --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntentRecord:
    """An intent as the ledger holds it."""

    intent: Intent
    seq: int
    status: str
    updated_ns: int


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order as the ledger holds it."""

    order: Order
    attempt: int
    status: str
    venue_order_id: str | None
    filled: Decimal
    created_ns: int
    updated_ns: int
    error: str | None


@dataclass(frozen=True, slots=True)
class FillRecord:
    """A committed fill and the portfolio it belongs to."""

    portfolio: str
    fill: Fill


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event waiting to be published."""

    seq: int
    topic: str
    payload: bytes
    created_ns: int


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """Events not yet published: how many, and when the oldest was written (None when there is none)."""

    events: int
    oldest_created_ns: int | None


@dataclass(frozen=True, slots=True)
class Query(Generic[T]):
    """One SELECT and how to turn its rows into a result."""

    sql: str
    params: tuple[Any, ...]
    decode: Callable[[list[Row]], T]


def run_query(conn: sqlite3.Connection, query: Query[T]) -> T:
    """Run a query on a stdlib connection."""
    return query.decode(conn.execute(query.sql, query.params).fetchall())


# decoders -------------------------------------------------------------------------------------------

_INTENT_COLS = "body, seq, status, updated_ns"
_ORDER_COLS = ("client_order_id, intent_id, portfolio, leg, attempt, symbol, side, quantity, quote_quantity, status,"
               " venue_order_id, filled, created_ns, updated_ns, error")
_FILL_COLS = "portfolio, trade_id, client_order_id, symbol, side, quantity, price, fee, fee_asset, ts_ns, venue_order_id"


def _intents(rows: list[Row]) -> list[IntentRecord]:
    return [IntentRecord(intent_from_json(r[0]), r[1], r[2], r[3]) for r in rows]


def _orders(rows: list[Row]) -> list[OrderRecord]:
    return [OrderRecord(
        Order(r[0], r[1], r[2], r[3], r[5], Side(r[6]), Decimal(r[7]),
              quote_quantity=None if r[8] is None else Decimal(r[8])),
        r[4], r[9], r[10], Decimal(r[11]), r[12], r[13], r[14]) for r in rows]


def _fills(rows: list[Row]) -> list[FillRecord]:
    return [FillRecord(r[0], Fill(r[1], r[2], r[3], Side(r[4]), Decimal(r[5]), Decimal(r[6]), Decimal(r[7]), r[8],
                                  r[9], r[10])) for r in rows]


def _first(decode: Callable[[list[Row]], list[T]]) -> Callable[[list[Row]], T | None]:
    def first(rows: list[Row]) -> T | None:
        items = decode(rows[:1])
        return items[0] if items else None
    return first


def _scalar(rows: list[Row]) -> Any:
    return rows[0][0] if rows else None


def _texts(rows: list[Row]) -> list[str]:
    return [str(r[0]) for r in rows]


# queries --------------------------------------------------------------------------------------------


def q_portfolio_quote(portfolio: str) -> Query[str | None]:
    """The quote currency of a portfolio (None when unknown)."""
    return Query("SELECT quote FROM portfolios WHERE name = ?", (portfolio,), _scalar)


def q_transfers(portfolio: str) -> Query[list[Row]]:
    """(asset, amount) of every transfer of a portfolio."""
    return Query("SELECT asset, amount FROM transfers WHERE portfolio = ? ORDER BY rowid", (portfolio,), list)


def q_fills(portfolio: str | None = None) -> Query[list[FillRecord]]:
    """Committed fills in commit order, of one portfolio or all."""
    if portfolio is None:
        return Query(f"SELECT {_FILL_COLS} FROM fills ORDER BY rowid", (), _fills)
    return Query(f"SELECT {_FILL_COLS} FROM fills WHERE portfolio = ? ORDER BY rowid", (portfolio,), _fills)


def q_open_orders() -> Query[list[OrderRecord]]:
    """Orders in a non-terminal status (pending, new, partially_filled, unknown), oldest first."""
    return Query(f"SELECT {_ORDER_COLS} FROM orders WHERE status IN ({_sql_list(OPEN_ORDER_STATUSES)})"
                 " ORDER BY created_ns, rowid", (), _orders)


def q_order(client_order_id: str) -> Query[OrderRecord | None]:
    """One order by client order id."""
    return Query(f"SELECT {_ORDER_COLS} FROM orders WHERE client_order_id = ?", (client_order_id,), _first(_orders))


def q_orders_of_intent(intent_id: str) -> Query[list[OrderRecord]]:
    """The orders of one intent, in the order they were recorded."""
    return Query(f"SELECT {_ORDER_COLS} FROM orders WHERE intent_id = ? ORDER BY rowid", (intent_id,), _orders)


def q_intent(intent_id: str) -> Query[IntentRecord | None]:
    """One intent by id."""
    return Query(f"SELECT {_INTENT_COLS} FROM intents WHERE id = ?", (intent_id,), _first(_intents))


def q_intents_with_status(statuses: Sequence[str], portfolio: str | None = None) -> Query[list[IntentRecord]]:
    """Intents in any of the statuses (all when empty), of one portfolio or all, oldest first."""
    where, params = [], []
    if statuses:
        where.append(f"status IN ({', '.join('?' for _ in statuses)})")
        params.extend(statuses)
    if portfolio is not None:
        where.append("portfolio = ?")
        params.append(portfolio)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return Query(f"SELECT {_INTENT_COLS} FROM intents{clause} ORDER BY portfolio, seq", tuple(params), _intents)


def q_last_intent(portfolio: str) -> Query[IntentRecord | None]:
    """The latest intent of a portfolio."""
    return Query(f"SELECT {_INTENT_COLS} FROM intents WHERE portfolio = ? ORDER BY seq DESC LIMIT 1", (portfolio,),
                 _first(_intents))


def q_intent_count(portfolio: str) -> Query[int]:
    """How many intents a portfolio has (its next seq is this plus one)."""
    return Query("SELECT COUNT(*) FROM intents WHERE portfolio = ?", (portfolio,), lambda rows: int(rows[0][0]))


def q_last_quiet_check(portfolio: str) -> Query[int | None]:
    """The time of a portfolio's last check that found nothing to trade (its window started; None if never)."""
    return Query("SELECT ts_ns FROM quiet_checks WHERE portfolio = ?", (portfolio,), _scalar)


def q_outbox_pending(limit: int) -> Query[list[OutboxEvent]]:
    """Unpublished events, oldest first."""
    return Query("SELECT seq, topic, payload, created_ns FROM outbox WHERE published_ns IS NULL ORDER BY seq LIMIT ?",
                 (limit,), lambda rows: [OutboxEvent(r[0], r[1], bytes(r[2]), r[3]) for r in rows])


def q_outbox_backlog() -> Query[OutboxBacklog]:
    """How many events wait to be published and the oldest one's time (both read through the pending index)."""
    return Query("SELECT COUNT(*), MIN(created_ns) FROM outbox WHERE published_ns IS NULL", (),
                 lambda rows: OutboxBacklog(int(rows[0][0]), rows[0][1]))


def q_integrity_check() -> Query[list[str]]:
    """SQLite's own integrity check: `['ok']` when the file is sound."""
    return Query("PRAGMA integrity_check", (), _texts)


# holdings -------------------------------------------------------------------------------------------


def holdings_from(portfolio: str, quote: str | None, transfers: Iterable[Row], fills: Iterable[FillRecord]
                  ) -> dict[str, Decimal]:
    """Holdings = transfers + every fill's exact deltas (fees included), from ledger rows alone."""
    holdings: dict[str, Decimal] = {}
    for asset, amount in transfers:
        holdings[asset] = holdings.get(asset, Decimal(0)) + Decimal(amount)
    for record in fills:
        if quote is None:
            raise LedgerInputError(f"portfolio {portfolio!r} has fills but is not in the ledger")
        for asset, delta in fill_deltas(record.fill, quote).items():
            holdings[asset] = holdings.get(asset, Decimal(0)) + delta
    return holdings


def rebuild_holdings_sync(conn: sqlite3.Connection, portfolio: str) -> dict[str, Decimal]:
    """Holdings of a portfolio rebuilt from a stdlib connection."""
    return holdings_from(portfolio, run_query(conn, q_portfolio_quote(portfolio)),
                         run_query(conn, q_transfers(portfolio)), run_query(conn, q_fills(portfolio)))


def read_file(path: str | Path, query: Query[T]) -> T:
    """Run one query on a ledger file opened read-only."""
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return run_query(conn, query)
    finally:
        conn.close()


def integrity_check(path: str | Path) -> list[str]:
    """Run `PRAGMA integrity_check` on a ledger file (read-only); `['ok']` when sound."""
    return read_file(path, q_integrity_check())


def ledger_intents(path: str | Path, portfolio: str | None, *, since_ns: int = 0) -> list[Intent]:
    """A portfolio's (None: every portfolio's) intents from `since_ns` on, as the ledger file recorded them, by
    portfolio and oldest first (read-only)."""
    return [r.intent for r in read_file(path, q_intents_with_status((), portfolio)) if r.intent.ts_ns >= since_ns]
