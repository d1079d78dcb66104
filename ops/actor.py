"""The execution actor: the async shell over the synchronous execution core (`engine.execution`).

It alone owns the venue session, the in-flight intents and the ledger writes for orders and fills.
Per intent: its sells go out concurrently, then its buys, sized from the quote actually in hand.
Every order is committed as `pending` before it is sent, every fill is committed before `on_fill`,
and an order whose fate is unknown is looked up by client order id, never sent again.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from decimal import Decimal

from engine.execution import buy_orders, sell_orders
from engine.sensor import NULL_SENSOR, Sensor
from engine.types import Fill, Intent, Order, Side, SymbolRules, split_symbol
from ops.actor_messages import (
    ActorCallbackFailed,
    ActorMessage,
    Backoff,
    ExecuteIntent,
    LegOutcome,
    LegProgress,
    Mailbox,
    Reconcile,
    RecoverySummary,
    Stop,
    intent_outcome,
    intent_problem,
    leg_outcome,
    refused,
)
from ops.ledger import DuplicateOrder, Ledger, LedgerError, LedgerInputError
from ops.ledger_sync import PutIntent, PutOrderReport, PutOrders, SetIntentStatus, SetOrderStatus, WriteOp
from ops.venues.base import TERMINAL, OrderReport, RateLimited, Venue, VenueError, VenueUnavailable

__all__ = ["ActorCallbackFailed", "ExecuteIntent", "ExecutionActor", "Reconcile", "RecoverySummary", "Stop"]

log = logging.getLogger(__name__)


class _Duplicate(Exception):
    """The intent is already in the ledger: it is not executed twice."""


class _BadReport(Exception):
    """The venue's report does not fit the recorded order."""


class _Unreachable(Exception):
    """The venue could not be asked about an order (which is NOT the same as the venue not knowing it)."""


class ExecutionActor:
    """Executes intents against a venue, recording every order and fill in the ledger first.

    API: `tell(msg)` (from the event loop's thread) and `await run()` (returns after `Stop`); call
    `await recover()` once at start, before `run()` and before the trigger may fire.
    """

    def __init__(
        self,
        venue: Venue,
        ledger: Ledger,
        *,
        holdings_of: Callable[[str], Mapping[str, Decimal]],
        on_fill: Callable[[str, Fill], None],
        on_done: Callable[[Intent, str], None],
        quote_of: Callable[[str], str],
        fee_rate_of: Callable[[str], Decimal],
        rules_of: Callable[[str], Mapping[str, SymbolRules]],
        sensor: Sensor = NULL_SENSOR,
        fill_timeout_secs: float = 10.0,
        max_retry_secs: float = 30.0,
        mailbox_size: int = 1024,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        clock_ns: Callable[[], int] = time.time_ns,
        rng: random.Random | None = None,
    ) -> None:
        if not fill_timeout_secs > 0 or not max_retry_secs >= 0:
            raise ValueError(f"fill_timeout_secs must be > 0 and max_retry_secs >= 0 ({fill_timeout_secs}, {max_retry_secs})")
        self._venue = venue
        self._ledger = ledger
        self._holdings_of = holdings_of
        self._on_fill = on_fill
        self._on_done = on_done
        self._quote_of = quote_of
        self._fee_rate_of = fee_rate_of
        self._rules_of = rules_of
        self._sensor = sensor
        self._fill_timeout_secs = fill_timeout_secs
        self._max_retry_secs = max_retry_secs
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._monotonic = monotonic
        self._clock_ns = clock_ns
        self._rng = rng or random.Random()
        self._mailbox = Mailbox(mailbox_size)
        self._active: dict[str, Intent] = {}
        self._pending: dict[str, Intent] = {}
        self._live: set[str] = set()
        self._stop: Stop | None = None
        self._stop_event = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._reconciling = False
        self._fatal: BaseException | None = None
        self.halted = False

    @property
    def mailbox_depth(self) -> int:
        """Messages waiting in the mailbox."""
        return len(self._mailbox)

    @property
    def in_flight(self) -> dict[str, str]:
        """Portfolio -> id of the intent executing now."""
        return {p: i.id for p, i in self._active.items()}

    def tell(self, msg: ActorMessage) -> None:
        """Queue a message without waiting; MailboxFull only for a droppable one (Reconcile)."""
        self._mailbox.put(msg)

    async def run(self) -> None:
        """Process messages until `Stop`, then wait for the intents in flight; raises when a callback failed."""
        log.info("execution actor running on %s", self._venue.name)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                while self._stop is None:
                    msg = await self._mailbox.get()
                    if isinstance(msg, ExecuteIntent):
                        await self._accept(msg.intent)
                    elif isinstance(msg, Reconcile):
                        if not self._reconciling:
                            self._reconciling = True
                            tg.create_task(self._reconcile_task(), name="reconcile")
                    else:
                        await self._begin_stop(msg)
        finally:
            self._tg = None
        await self._park_leftovers()
        log.info("execution actor stopped")

    # intents --------------------------------------------------------------------------------------

    async def _accept(self, intent: Intent) -> None:
        p = intent.portfolio
        try:
            quote: str | None = self._quote_of(p)
        except KeyError:
            quote = None
        problem = intent_problem(intent, quote)
        try:
            if problem is not None:
                log.error("intent %s for %s refused: %s", intent.id, p, problem)
                self._sensor.on_execution_error(p, "bad_intent")
                try:
                    await self._write(p, [PutIntent(intent, "failed")])
                except LedgerInputError:
                    pass
                self._done(intent, "failed")
            elif intent.observe:
                await self._write(p, [PutIntent(intent, "observed")])
                log.info("intent %s for %s observed (observe mode: nothing sent)", intent.id, p)
            elif self.halted:
                log.error("intent %s for %s refused: trading is halted", intent.id, p)
                self._done(intent, "failed")
            elif p in self._active:
                await self._queue_behind(intent)
            else:
                self._start(intent, recorded=False)
        except (LedgerError, LedgerInputError) as exc:
            log.error("intent %s for %s not accepted: %s", intent.id, p, exc)
            if not intent.observe:
                self._done(intent, "failed")

    async def _queue_behind(self, intent: Intent) -> None:
        """The portfolio is busy: this intent waits, replacing (superseding) one that waited already."""
        p = intent.portfolio
        old = self._pending.get(p)
        self._pending[p] = intent
        ops: list[WriteOp] = [PutIntent(intent, "new")]
        if old is not None:
            ops.append(SetIntentStatus(old.id, "superseded"))
        try:
            await self._write(p, ops)
        except (LedgerError, LedgerInputError):
            if self._pending.get(p) is intent:
                del self._pending[p]
                if old is not None:
                    self._pending[p] = old
            raise
        if old is not None:
            log.info("intent %s for %s superseded by %s before it started", old.id, p, intent.id)

    def _start(self, intent: Intent, *, recorded: bool) -> None:
        if self._tg is None:
            raise RuntimeError("the execution actor is not running")
        self._active[intent.portfolio] = intent
        self._tg.create_task(self._intent_task(intent, recorded), name=f"intent-{intent.id}")

    def _parking(self) -> bool:
        return self.halted or (self._stop is not None and self._stop.park)

    async def _intent_task(self, intent: Intent, recorded: bool) -> None:
        p = intent.portfolio
        try:
            try:
                outcome: str | None = await self._execute(intent, recorded)
            except _Duplicate:
                log.warning("intent %s for %s is already in the ledger: not executed again", intent.id, p)
                outcome = None
            except (LedgerError, ActorCallbackFailed):
                if self._fatal is not None:
                    raise
                outcome = "failed"
            except Exception:  # the intent's boundary: its orders stay recorded and Reconcile settles them
                log.exception("intent %s for %s failed unexpectedly", intent.id, p)
                self._sensor.on_execution_error(p, "internal")
                outcome = "failed"
            if outcome is None:
                self._done(intent, "failed")
            else:
                await self._conclude(intent, outcome)
        finally:
            self._active.pop(p, None)
        nxt = None if self._parking() else self._pending.pop(p, None)
        if nxt is not None:
            self._start(nxt, recorded=True)

    async def _conclude(self, intent: Intent, outcome: str) -> None:
        p = intent.portfolio
        if not self.halted:
            try:
                await self._write(p, [SetIntentStatus(intent.id, outcome)])
            except (LedgerError, LedgerInputError) as exc:
                log.error("intent %s: outcome %s not recorded: %s", intent.id, outcome, exc)
        self._sensor.on_rebalance_done(p, intent.id, outcome)
        log.info("intent %s for %s finished: %s", intent.id, p, outcome)
        self._done(intent, outcome)

    async def _execute(self, intent: Intent, recorded: bool) -> str:
        """Run one intent's sells then buys; returns its outcome: complete | partial | failed | parked."""
        p = intent.portfolio
        log.info("intent %s for %s started (%s, drift %.4f, %d legs)", intent.id, p, intent.reason.value,
                 intent.drift, len(intent.legs))
        head: list[WriteOp] = [SetIntentStatus(intent.id, "executing") if recorded else PutIntent(intent, "executing")]
        results: list[LegOutcome] = []
        parked = False
        for side in (Side.SELL, Side.BUY):
            if not any(leg.side is side for leg in intent.legs):
                continue
            if self._parking():
                parked = True
                break
            if side is Side.SELL:
                orders = sell_orders(intent, self._holdings_of(p))
            else:
                orders = buy_orders(intent, self._holdings_of(p), self._quote_of(p), self._fee_rate_of(p),
                                    self._rules_of(p))
            results += await self._run_phase(intent, orders, head)
            head = []
            self._raise_if_fatal()
        if head:
            await self._run_phase(intent, [], head)
        return "failed" if self.halted else intent_outcome(len(intent.legs), results, parked)

    async def _run_phase(self, intent: Intent, orders: list[Order], head: list[WriteOp]) -> list[LegOutcome]:
        """Commit the phase's orders as pending (with the intent's own first write, if any), then run its legs."""
        p = intent.portfolio
        cids = [o.client_order_id for o in orders]
        self._live.update(cids)  # from before they are recorded: a concurrent Reconcile must leave them alone
        try:
            recorded, written = False, []
            if orders:
                try:
                    written = await self._write(p, [*head, PutOrders(tuple(orders))])
                    recorded = True
                except LedgerInputError:
                    pass  # one of them is refused (a duplicate?): the head alone, then the orders one by one
            if head and not recorded:
                written = await self._write(p, head)
            if head and isinstance(head[0], PutIntent) and not written[0]:
                if recorded:
                    await self._write(p, [SetOrderStatus(c, "not_placed", "duplicate intent") for c in cids])
                raise _Duplicate
            return list(await asyncio.gather(*(self._leg(intent, o, recorded) for o in orders)))
        finally:
            self._live.difference_update(cids)

    # one leg --------------------------------------------------------------------------------------

    async def _leg(self, intent: Intent, order: Order, recorded: bool) -> LegOutcome:
        p, cid = intent.portfolio, order.client_order_id
        state = LegProgress(order.client_order_id, order.side.value)
        try:
            if not recorded:
                try:
                    await self._write(p, [PutOrders((order,))])
                except DuplicateOrder:
                    log.warning("order %s is already in the ledger: looking it up, never sending it twice", cid)
                    found = await self._lookup(p, cid, order.symbol, patient=True)  # _Unreachable: unknown
                    return LegOutcome.UNKNOWN if found is None else await self._settle(p, intent.ts_ns, order, found, state)
            sent = await self._send(p, order)
            if isinstance(sent, LegOutcome):
                return sent
            return await self._settle(p, intent.ts_ns, order, sent, state)
        except LedgerInputError as exc:
            log.error("order %s refused by the ledger: %s", cid, exc)
            return LegOutcome.FAILED
        except LedgerError:
            return LegOutcome.FAILED
        except (_BadReport, _Unreachable):
            return LegOutcome.UNKNOWN
        except Exception:  # the leg's boundary: the order stays recorded and Reconcile settles it
            log.exception("order %s failed unexpectedly; left to Reconcile", cid)
            self._sensor.on_execution_error(p, "internal")
            return LegOutcome.UNKNOWN

    async def _send(self, p: str, order: Order) -> OrderReport | LegOutcome:
        """Place the order; resend the SAME client order id only after the venue refused it for now."""
        cid, side = order.client_order_id, order.side.value
        deadline = self._monotonic() + self._max_retry_secs
        attempt = 0
        while True:
            if self.halted:  # recorded before the halt, never sent after it (restart settles it as not placed)
                log.warning("order %s not sent: execution halted", cid)
                return LegOutcome.PARKED
            self._sensor.on_order(p, order.symbol, side, "sent")
            if order.quote_quantity is not None:
                log.info("order %s sent: %s %s (quote) worth of %s", cid, side, order.quote_quantity, order.symbol)
            else:
                log.info("order %s sent: %s %s %s", cid, side, order.quantity, order.symbol)
            try:
                return await self._venue.place_order(order)
            except (RateLimited, VenueUnavailable) as exc:
                self._sensor.on_execution_error(p, exc.kind)
                delay = self._retry_delay(exc, attempt)
                if self._monotonic() + delay > deadline:
                    await self._not_placed(p, order, f"{exc.kind}, gave up after {self._max_retry_secs}s: {exc}")
                    return LegOutcome.FAILED
                log.warning("order %s: %s (%s); resending the same client order id in %.2fs", cid, exc.kind, exc, delay)
                if not await self._pause(delay):
                    await self._not_placed(p, order, f"{exc.kind}, stopped before resending")
                    return LegOutcome.PARKED
                attempt += 1
            except VenueError as exc:
                self._sensor.on_execution_error(p, exc.kind)
                if refused(exc):
                    await self._write(p, [SetOrderStatus(cid, "rejected", f"{exc.kind}: {exc}")])
                    self._sensor.on_order(p, order.symbol, side, "rejected")
                    log.warning("order %s rejected (%s): %s", cid, exc.kind, exc)
                    return LegOutcome.FAILED
                log.warning("order %s: %s after sending (%s); looking it up by client order id", cid, exc.kind, exc)
                try:
                    found = await self._lookup(p, cid, order.symbol, patient=True)
                except _Unreachable:
                    found = None
                if found is None:
                    await self._write(p, [SetOrderStatus(cid, "unknown", f"{exc.kind}: {exc}; not found by client id")])
                    self._sensor.on_order(p, order.symbol, side, "unknown")
                    log.error("order %s: state unknown; Reconcile will settle it", cid)
                    return LegOutcome.UNKNOWN
                return found

    def _retry_delay(self, exc: VenueError, attempt: int) -> float:
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return min(exc.retry_after, self._max_retry_secs) * self._rng.uniform(1.0, 1.1)
        return self._backoff.delay(attempt, self._rng)

    async def _not_placed(self, p: str, order: Order, reason: str) -> None:
        await self._write(p, [SetOrderStatus(order.client_order_id, "not_placed", reason)])
        self._sensor.on_order(p, order.symbol, order.side.value, "rejected")
        log.warning("order %s not placed: %s", order.client_order_id, reason)

    async def _settle(self, p: str, intent_ts_ns: int, order: Order, report: OrderReport,
                      state: LegProgress) -> LegOutcome:
        """Commit the report, poll until terminal (then cancel and look up once more); the leg's outcome."""
        cid, symbol = order.client_order_id, order.symbol
        await self._commit_report(p, intent_ts_ns, report, state)
        deadline = self._monotonic() + self._fill_timeout_secs
        attempt = 0
        while report.status not in TERMINAL and self._monotonic() < deadline:
            await self._sleep(self._backoff.delay(attempt, self._rng))
            attempt += 1
            try:
                fetched = await self._venue.fetch_order(cid, symbol)
            except VenueError as exc:
                self._sensor.on_execution_error(p, exc.kind)
                log.warning("order %s: status poll failed (%s): %s", cid, exc.kind, exc)
                continue
            if fetched is not None:
                report = fetched
                await self._commit_report(p, intent_ts_ns, report, state)
        if report.status not in TERMINAL:
            log.warning("order %s still %s after %.1fs: canceling", cid, report.status.value, self._fill_timeout_secs)
            try:
                canceled = await self._venue.cancel_order(cid, symbol)
            except VenueError as exc:
                self._sensor.on_execution_error(p, exc.kind)
                log.warning("order %s: cancel failed (%s): %s", cid, exc.kind, exc)
            else:
                if canceled is not None:
                    report = canceled
                    await self._commit_report(p, intent_ts_ns, report, state)
            try:
                final = await self._lookup(p, cid, symbol, patient=False)
            except _Unreachable:
                final = None
            if final is not None:
                report = final
                await self._commit_report(p, intent_ts_ns, report, state)
        return leg_outcome(report)

    async def _commit_report(self, p: str, intent_ts_ns: int, report: OrderReport, state: LegProgress) -> None:
        """Commit a report; then (only then) report and apply its NEW fills."""
        if report.client_order_id != state.client_order_id:
            self._sensor.on_execution_error(p, "bad_answer")
            log.error("asked %s about order %s, it answered about %s: ignored; the order is left to Reconcile",
                      self._venue.name, state.client_order_id, report.client_order_id)
            raise _BadReport
        try:
            [new] = await self._write(p, [PutOrderReport(report)])
        except LedgerInputError as exc:
            self._sensor.on_execution_error(p, "bad_answer")
            log.error("order %s: the venue's report does not fit the order (%s); marked unknown", report.client_order_id, exc)
            await self._write(p, [SetOrderStatus(report.client_order_id, "unknown", f"bad report: {exc}")])
            raise _BadReport from exc
        status = report.status.value
        if status != "new" and status not in state.seen:
            state.seen.add(status)
            self._sensor.on_order(p, report.symbol, state.side, status)
        state.new_fills += len(new)
        now = self._clock_ns()
        for fill in new:
            base, quote = split_symbol(fill.symbol)
            fee_quote = fill.fee if fill.fee_asset == quote else fill.fee * fill.price if fill.fee_asset == base else 0
            self._sensor.on_fill(p, fill, float(fee_quote), now - intent_ts_ns)
            log.info("fill %s of %s: %s %s %s at %s, fee %s %s", fill.trade_id, fill.client_order_id, fill.side.value,
                     fill.quantity, fill.symbol, fill.price, fill.fee, fill.fee_asset)
            if self._fatal is None:
                self._callback(self._on_fill, p, fill)

    async def _lookup(self, p: str, cid: str, symbol: str, *, patient: bool) -> OrderReport | None:
        """Find an order by client order id: its report, or None when the venue says it does not know it.

        Errors are retried with backoff up to max_retry_secs (and, when patient, so is not-found);
        raises _Unreachable when the venue never answered.
        """
        deadline = self._monotonic() + self._max_retry_secs
        attempt = 0
        while True:
            try:
                report = await self._venue.fetch_order(cid, symbol)
                if report is not None or not patient:
                    return report
                answered = True
                log.info("order %s is not (yet) known to %s", cid, self._venue.name)
            except VenueError as exc:
                answered = False
                self._sensor.on_execution_error(p, exc.kind)
                log.warning("order %s: lookup failed (%s): %s", cid, exc.kind, exc)
            delay = self._backoff.delay(attempt, self._rng)
            if self._monotonic() + delay > deadline:
                if not answered:
                    raise _Unreachable(f"{self._venue.name} did not answer about order {cid}")
                return None
            await self._sleep(delay)
            attempt += 1

    # recovery -------------------------------------------------------------------------------------

    async def reconcile(self) -> RecoverySummary:
        """Settle every open order not in flight: look it up, commit and apply its new fills, cancel what is open."""
        checked = fills = not_placed = settled = still_open = 0
        for record in await self._ledger.open_orders():
            order = record.order
            cid, p = order.client_order_id, order.portfolio
            if cid in self._live:
                continue
            checked += 1
            try:
                report = await self._lookup(p, cid, order.symbol, patient=False)
            except _Unreachable as exc:
                log.error("order %s stays %s: %s", cid, record.status, exc)
                still_open += 1
                continue
            if report is None:
                if record.status in ("pending", "unknown"):
                    await self._not_placed(p, order, f"unknown to {self._venue.name} after a {record.status} record")
                    not_placed += 1
                else:
                    log.error("order %s was %s but %s no longer knows it", cid, record.status, self._venue.name)
                    still_open += 1
                continue
            intent = await self._ledger.intent(order.intent_id)
            ts_ns = intent.intent.ts_ns if intent is not None else self._clock_ns()
            state = LegProgress(order.client_order_id, order.side.value)
            try:
                outcome = await self._settle(p, ts_ns, order, report, state)
            except _BadReport:
                outcome = LegOutcome.UNKNOWN
            fills += state.new_fills
            if outcome is LegOutcome.UNKNOWN:
                still_open += 1
            else:
                settled += 1
            self._raise_if_fatal()
        summary = RecoverySummary(checked, fills, not_placed, settled, still_open)
        log.info("reconciled %d open orders: %d new fills, %d not placed, %d settled, %d still open",
                 checked, fills, not_placed, settled, still_open)
        return summary

    async def recover(self) -> RecoverySummary:
        """At start: settle open orders (fills recorded once and applied), mark unfinished intents interrupted."""
        summary = await self.reconcile()
        interrupted = 0
        for record in await self._ledger.intents_with_status("executing", "new"):
            await self._write(record.intent.portfolio, [SetIntentStatus(record.intent.id, "interrupted")])
            log.warning("intent %s for %s was %s when keel stopped: interrupted", record.intent.id,
                        record.intent.portfolio, record.status)
            interrupted += 1
        return replace(summary, intents_interrupted=interrupted)

    async def _reconcile_task(self) -> None:
        try:
            await self.reconcile()
        except ActorCallbackFailed:
            raise
        except Exception:  # a failed reconcile is retried by the next Reconcile
            log.exception("reconcile failed")
        finally:
            self._reconciling = False

    # stop, halt, callbacks ------------------------------------------------------------------------

    async def _begin_stop(self, msg: Stop) -> None:
        self._stop = msg
        log.info("execution actor stopping (%s), %d intents in flight", "park" if msg.park else "drain",
                 len(self._active))
        if msg.park:
            self._stop_event.set()
            for p, intent in list(self._pending.items()):
                del self._pending[p]
                await self._finish_unstarted(intent, "parked")

    async def _park_leftovers(self) -> None:
        for intent in list(self._pending.values()):
            await self._finish_unstarted(intent, "parked")
        self._pending.clear()
        while (msg := self._mailbox.get_nowait()) is not None:
            if isinstance(msg, ExecuteIntent):
                intent = msg.intent
                status = "observed" if intent.observe else "parked"
                if not self.halted:
                    try:
                        await self._write(intent.portfolio, [PutIntent(intent, status)])
                    except (LedgerError, LedgerInputError) as exc:
                        log.error("intent %s not recorded at stop: %s", intent.id, exc)
                if not intent.observe:
                    self._done(intent, status)

    async def _finish_unstarted(self, intent: Intent, outcome: str) -> None:
        if not self.halted:
            try:
                await self._write(intent.portfolio, [SetIntentStatus(intent.id, outcome)])
            except (LedgerError, LedgerInputError) as exc:
                log.error("intent %s: %s not recorded: %s", intent.id, outcome, exc)
        self._sensor.on_rebalance_done(intent.portfolio, intent.id, outcome)
        log.info("intent %s for %s %s before it started", intent.id, intent.portfolio, outcome)
        self._done(intent, outcome)

    async def _write(self, p: str, ops: list[WriteOp]) -> list[object]:
        try:
            return await self._ledger.submit(ops)
        except LedgerError as exc:
            self._sensor.on_execution_error(p, "ledger")
            if not self.halted:
                self.halted = True
                self._stop_event.set()
                log.critical("ledger write failed, trading halted: %s", exc)
            raise

    async def _pause(self, secs: float) -> bool:
        """Wait `secs`; False when a parking Stop or a halt cut the wait short."""
        if self._stop_event.is_set():
            return False
        sleeper = asyncio.ensure_future(self._sleep(secs))
        stopper = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait((sleeper, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)
        return not self._stop_event.is_set()

    def _callback(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception as exc:  # the engine broke: stop trading, then fail the actor
            log.critical("%s raised; halting: %s", getattr(fn, "__name__", "callback"), exc, exc_info=True)
            if self._fatal is None:
                self._fatal = exc
            self.halted = True
            self._stop_event.set()

    def _done(self, intent: Intent, outcome: str) -> None:
        self._callback(self._on_done, intent, outcome)
        self._raise_if_fatal()

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise ActorCallbackFailed(f"a callback failed: {self._fatal!r}") from self._fatal
