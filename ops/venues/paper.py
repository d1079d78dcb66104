"""The paper venue: fills at the live book like the backtest (sells at the bid, buys at the ask, fee in the quote).

With a `journal` it keeps its own durable record (a separate SQLite file, committed before it answers)
of orders, fills and balances, so after the service is killed and restarted `fetch_order` still knows
what this "exchange" did. Memory holds only the most recent `memory_orders` reports (a paper portfolio
runs for months); with a journal, older ones are read back from it and its primary key refuses a
reused client order id however old.
"""
from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import orjson

from engine.paper import paper_fill
from engine.types import Fill, Order, Side, SymbolRules, split_symbol
from ops.venues.base import (
    InsufficientFunds,
    OrderRejected,
    OrderReport,
    OrderStatus,
    VenueUnavailable,
)

log = logging.getLogger(__name__)
MEMORY_ORDERS = 1_000  # order reports kept in memory, far more than are ever in flight (the journal keeps every one)

_JOURNAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders(client_order_id TEXT PRIMARY KEY, report TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS balances(asset TEXT PRIMARY KEY, amount TEXT NOT NULL) STRICT;
"""


def _report_json(report: OrderReport) -> str:
    return orjson.dumps({
        "client_order_id": report.client_order_id, "order_id": report.order_id, "symbol": report.symbol,
        "status": report.status.value, "filled": format(report.filled_quantity, "f"),
        "fills": [{"trade_id": f.trade_id, "side": f.side.value, "quantity": format(f.quantity, "f"),
                   "price": format(f.price, "f"), "fee": format(f.fee, "f"), "fee_asset": f.fee_asset,
                   "ts_ns": f.ts_ns, "order_id": f.order_id} for f in report.fills],
    }).decode()


def _report_from_json(text: str) -> OrderReport:
    d = orjson.loads(text)
    fills = tuple(Fill(f["trade_id"], d["client_order_id"], d["symbol"], Side(f["side"]), Decimal(f["quantity"]),
                       Decimal(f["price"]), Decimal(f["fee"]), f["fee_asset"], f["ts_ns"], f["order_id"])
                  for f in d["fills"])
    return OrderReport(d["client_order_id"], d["order_id"], d["symbol"], OrderStatus(d["status"]),
                       Decimal(d["filled"]), fills)


class PaperVenue:
    """A simulated venue behind keel's `Venue` interface; fills completely with `engine.paper.paper_fill`."""

    name = "paper"

    def __init__(
        self,
        price_of: Callable[[str], tuple[float, float]],
        *,
        fee_rate: Decimal,
        slippage_bps: Decimal = Decimal(0),
        rules: Mapping[str, SymbolRules],
        latency_ms: float = 0,
        journal: Path | None = None,
        balances: Mapping[str, Decimal] | None = None,
        default_rules: SymbolRules | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        memory_orders: int = MEMORY_ORDERS,
    ) -> None:
        if not Decimal(0) <= fee_rate < 1 or slippage_bps < 0 or not latency_ms >= 0:
            raise ValueError(f"paper venue: fee_rate {fee_rate}, slippage_bps {slippage_bps}, latency_ms {latency_ms}")
        self._price_of = price_of
        self._fee_rate = Decimal(fee_rate)
        self._slippage_bps = Decimal(slippage_bps)
        self._rules = dict(rules)
        self._default_rules = default_rules
        self._latency_secs = latency_ms / 1000
        self._clock_ns = clock_ns
        self._quotes: dict[str, str] = {}
        self._orders: dict[str, OrderReport] = {}  # the most recent reports, oldest first
        self._memory_orders = max(1, memory_orders)
        self._balances: dict[str, Decimal] | None = None if balances is None else dict(balances)
        self._journal: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        if journal is not None:
            self._open_journal(Path(journal))

    @property
    def answers_at_once(self) -> bool:
        """True without latency or journal: `place_order` never waits, so orders need not be sent concurrently."""
        return not self._latency_secs and self._journal is None

    def __repr__(self) -> str:
        return f"PaperVenue(fee_rate={self._fee_rate}, orders={len(self._orders)})"

    def _open_journal(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(_JOURNAL_SCHEMA)
        rows = conn.execute("SELECT report FROM orders ORDER BY rowid DESC LIMIT ?", (self._memory_orders,))
        for (text,) in reversed(rows.fetchall()):
            report = _report_from_json(text)
            self._orders[report.client_order_id] = report
        saved = {asset: Decimal(amount) for asset, amount in conn.execute("SELECT asset, amount FROM balances")}
        if saved:
            self._balances = saved
        elif self._balances is not None:
            with conn:
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO balances(asset, amount) VALUES (?, ?)",
                                 [(a, format(v, "f")) for a, v in self._balances.items()])
        self._journal = conn
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keel-paper-journal")
        known = conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
        log.info("paper venue journal %s: %d orders known (%d in memory)", path, known, len(self._orders))

    async def load_rules(self, symbols: list[str]) -> dict[str, SymbolRules]:
        """Step size and minimum notional per symbol; ValueError for a symbol this venue does not list."""
        return {s: self._rules_of(s, ValueError) for s in symbols}

    async def balances(self) -> dict[str, Decimal]:
        """Free balance per asset (empty when balances are not tracked)."""
        return {a: v for a, v in (self._balances or {}).items() if v > 0}

    async def place_order(self, order: Order) -> OrderReport:
        """Fill the order at once at the touch (plus slippage); refuses a duplicate client order id."""
        if self._latency_secs:
            await asyncio.sleep(self._latency_secs)
        cid, symbol = order.client_order_id, order.symbol
        if cid in self._orders:
            raise OrderRejected(f"paper: duplicate client order id {cid}")
        rules = self._rules_of(symbol, OrderRejected)
        bid, ask = self._touch(symbol)
        quote = self._quotes.get(symbol) or self._quotes.setdefault(symbol, split_symbol(symbol)[1])
        fill = paper_fill(order, bid, ask, quote=quote, fee_rate=self._fee_rate, slippage_bps=self._slippage_bps,
                          rules=rules, trade_id=f"{cid}-1", ts_ns=self._clock_ns())
        if fill is None:
            raise OrderRejected(f"paper: order {cid} is below one step ({rules.step_size}) or the minimum notional "
                                f"({rules.min_notional} {quote})")
        deltas = self._take_funds(fill, quote)
        report = OrderReport(cid, fill.order_id, symbol, OrderStatus.FILLED, fill.quantity, (fill,))
        self._orders[cid] = report
        if self._journal is not None:
            balances = None if self._balances is None else [(a, format(v, "f")) for a, v in self._balances.items()]
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, _write_journal, self._journal, report, balances)
            except sqlite3.IntegrityError as exc:  # an old order (no longer in memory) had this id
                del self._orders[cid]
                self._give_back(deltas)
                raise OrderRejected(f"paper: duplicate client order id {cid}") from exc
            except sqlite3.Error as exc:
                del self._orders[cid]
                self._give_back(deltas)
                raise VenueUnavailable(f"paper: journal write failed, order {cid} not placed: {exc}") from exc
        if len(self._orders) > self._memory_orders:
            del self._orders[next(iter(self._orders))]
        if log.isEnabledFor(logging.DEBUG):
            log.debug("paper order %s %s %s %s at %s", cid, order.side.value, fill.quantity, symbol, fill.price)
        return report

    async def fetch_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """The order's report; None when this venue never accepted it (in that symbol)."""
        report = self._orders.get(client_order_id)
        if report is None and self._journal is not None:
            report = await asyncio.get_running_loop().run_in_executor(
                self._executor, _read_journal, self._journal, client_order_id)
        return report if report is not None and report.symbol == symbol else None

    async def cancel_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """Paper orders fill at once, so a cancel only reports the order; None when unknown."""
        return await self.fetch_order(client_order_id, symbol)

    async def close(self) -> None:
        """Close the journal."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _rules_of(self, symbol: str, error: type[Exception]) -> SymbolRules:
        rules = self._rules.get(symbol, self._default_rules)
        if rules is None:
            raise error(f"paper venue does not list {symbol}")
        return rules

    def _touch(self, symbol: str) -> tuple[float, float]:
        try:
            bid, ask = self._price_of(symbol)
        except (LookupError, ValueError) as exc:
            raise OrderRejected(f"paper: no price for {symbol} ({exc})") from exc
        if not (math.isfinite(bid) and math.isfinite(ask) and 0 < bid <= ask):
            raise OrderRejected(f"paper: no usable price for {symbol} (bid {bid}, ask {ask})")
        return bid, ask

    def _take_funds(self, fill: Fill, quote: str) -> dict[str, Decimal]:
        if self._balances is None:
            return {}
        base, _ = split_symbol(fill.symbol)
        notional = fill.quantity * fill.price
        if fill.side is Side.BUY:
            deltas = {base: fill.quantity, quote: -notional - fill.fee}
        else:
            deltas = {base: -fill.quantity, quote: notional - fill.fee}
        for asset, delta in deltas.items():
            if delta < 0 and self._balances.get(asset, Decimal(0)) + delta < 0:
                raise InsufficientFunds(f"paper: {fill.client_order_id} needs {-delta} {asset}, "
                                        f"{self._balances.get(asset, Decimal(0))} free")
        for asset, delta in deltas.items():
            self._balances[asset] = self._balances.get(asset, Decimal(0)) + delta
        return deltas

    def _give_back(self, deltas: Mapping[str, Decimal]) -> None:
        if self._balances is not None:
            for asset, delta in deltas.items():
                self._balances[asset] -= delta


def _read_journal(conn: sqlite3.Connection, client_order_id: str) -> OrderReport | None:
    """An order's report from the journal, or None."""
    row = conn.execute("SELECT report FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
    return None if row is None else _report_from_json(row[0])


def _write_journal(conn: sqlite3.Connection, report: OrderReport, balances: list[tuple[str, str]] | None) -> None:
    """Commit one accepted order (and the balances after it) to the journal."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("INSERT INTO orders(client_order_id, report) VALUES (?, ?)",
                     (report.client_order_id, _report_json(report)))
        if balances is not None:
            conn.executemany("INSERT OR REPLACE INTO balances(asset, amount) VALUES (?, ?)", balances)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
