"""The execution actor: the async shell over the synchronous execution core (`engine.execution`).

It alone owns the venue session, the in-flight intents and the ledger writes for orders and fills.
Per intent: its sells go out concurrently, then its buys, sized from the quote actually in hand.
Every order is committed as `pending` before it is sent, every fill is committed before `on_fill`,
and an order whose fate is unknown is looked up by client order id, never sent again.
This file holds the mailbox and the intents' lifecycle; `ops.actor_legs` runs the legs.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from decimal import Decimal

from engine.sensor import NULL_SENSOR, Sensor
from engine.types import Fill, Intent, SymbolRules
from ops.actor_legs import Duplicate, LegRunner
from ops.actor_messages import (
    ORDER_BACKOFF,
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
    intent_problem,
)
from ops.actor_orders import BadReport, Unreachable
from ops.ledger import Ledger, LedgerError, LedgerInputError
from ops.ledger_ops import PutIntent, SetIntentStatus, WriteOp
from ops.venues.base import Venue

__all__ = ["ActorCallbackFailed", "ExecuteIntent", "ExecutionActor", "Reconcile", "RecoverySummary", "Stop"]

log = logging.getLogger(__name__)


class ExecutionActor(LegRunner):
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
        super().__init__(venue, ledger, holdings_of=holdings_of, on_fill=on_fill, quote_of=quote_of,
                         fee_rate_of=fee_rate_of, rules_of=rules_of, sensor=sensor,
                         fill_timeout_secs=fill_timeout_secs, max_retry_secs=max_retry_secs,
                         backoff=backoff or ORDER_BACKOFF, sleep=sleep, monotonic=monotonic, clock_ns=clock_ns,
                         rng=rng or random.Random())
        self._on_done = on_done
        self._mailbox = Mailbox(mailbox_size)
        self._active: dict[str, Intent] = {}
        self._pending: dict[str, Intent] = {}
        self._stop: Stop | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._reconciling = False

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

    async def _intent_task(self, intent: Intent, recorded: bool) -> None:
        p = intent.portfolio
        try:
            try:
                outcome: str | None = await self._execute(intent, recorded)
            except Duplicate:
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
            self._concluded.pop(intent.id, None)
        nxt = None if self._parking() else self._pending.pop(p, None)
        if nxt is not None:
            self._start(nxt, recorded=True)

    async def _conclude(self, intent: Intent, outcome: str) -> None:
        p = intent.portfolio
        if not self.halted and self._concluded.pop(intent.id, None) != outcome:  # else committed with its last fills
            try:
                await self._write(p, [SetIntentStatus(intent.id, outcome)])
            except (LedgerError, LedgerInputError) as exc:
                log.error("intent %s: outcome %s not recorded: %s", intent.id, outcome, exc)
        self._sensor.on_rebalance_done(p, intent.id, outcome)
        log.info("intent %s for %s finished: %s", intent.id, p, outcome)
        self._done(intent, outcome)

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
            except Unreachable as exc:
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
            except BadReport:
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

    def _done(self, intent: Intent, outcome: str) -> None:
        self._callback(self._on_done, intent, outcome)
        self._raise_if_fatal()
