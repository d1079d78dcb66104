"""How the execution actor runs an intent's legs: record, send, commit, apply, in that order.

Per phase (the sells, then the buys): the phase's orders are committed as `pending` before any is sent,
then sent concurrently (one after another to a venue that answers at once). The reports that have come
back are committed together in one ledger request, and only once that commit returns are their new
fills reported and applied, in leg order; a slow leg never holds back the reports of the others. When
they end the intent's last legs, the intent's outcome is committed in that same request.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from engine.execution import buy_orders, sell_orders
from engine.types import Fill, Intent, Order, Side
from ops.actor_messages import LegOutcome, LegProgress, intent_outcome, leg_outcome
from ops.actor_orders import OrderDesk
from ops.ledger import DuplicateOrder, LedgerError, LedgerInputError
from ops.ledger_ops import PutIntent, PutOrderReport, PutOrders, SetIntentStatus, SetOrderStatus, WriteOp
from ops.venues.base import TERMINAL, OrderReport

log = logging.getLogger(__name__)


class Duplicate(Exception):
    """The intent is already in the ledger: it is not executed twice."""


# from how the legs landing now will end (None: still open), the intent's final status to commit with them
Closing = Callable[[list[LegOutcome | None]], SetIntentStatus | None]


class LegRunner(OrderDesk):
    """Runs one intent: its sells, then its buys sized from the quote in hand, each phase's legs together.

    When the reports of an intent's last legs come back together, the intent's outcome is committed in
    the same request as them; `_concluded` remembers it, so the actor does not write it again.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._concluded: dict[str, str] = {}

    # one intent ------------------------------------------------------------------------------------

    async def _execute(self, intent: Intent, recorded: bool) -> str:
        """Run one intent's sells then buys; returns its outcome: complete | partial | failed | parked."""
        p = intent.portfolio
        log.info("intent %s for %s started (%s, drift %.4f, %d legs)", intent.id, p, intent.reason.value,
                 intent.drift, len(intent.legs))
        head: list[WriteOp] = [SetIntentStatus(intent.id, "executing") if recorded else PutIntent(intent, "executing")]
        results: list[LegOutcome] = []
        parked = False
        sides = [side for side in (Side.SELL, Side.BUY) if any(leg.side is side for leg in intent.legs)]
        for side in sides:
            if self._parking():
                parked = True
                break
            if side is Side.SELL:
                orders = sell_orders(intent, self._holdings_of(p))
            else:
                orders = buy_orders(intent, self._holdings_of(p), self._quote_of(p), self._fee_rate_of(p),
                                    self._rules_of(p))
            results += await self._run_phase(intent, orders, head, results if side is sides[-1] else None)
            head = []
            self._raise_if_fatal()
        if head:
            await self._run_phase(intent, [], head, None)
        return "failed" if self.halted else intent_outcome(len(intent.legs), results, parked)

    async def _run_phase(self, intent: Intent, orders: list[Order], head: list[WriteOp],
                         earlier: list[LegOutcome] | None) -> list[LegOutcome]:
        """Commit the phase's orders as pending (with the intent's own first write, if any), then run its legs;
        `earlier` (the outcomes of the intent's earlier legs) is given for its last phase."""
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
                raise Duplicate
            return await self._run_legs(intent, orders, recorded, earlier) if orders else []
        finally:
            self._live.difference_update(cids)

    async def _run_legs(self, intent: Intent, orders: list[Order], recorded: bool,
                        earlier: list[LegOutcome] | None) -> list[LegOutcome]:
        """Send the orders (concurrently, unless the venue answers at once); commit each round of reports that
        came back in one request, then apply their fills; poll the orders still open."""
        p, ts_ns = intent.portfolio, intent.ts_ns
        results: list[LegOutcome] = [LegOutcome.UNKNOWN] * len(orders)
        if len(orders) == 1 or getattr(self._venue, "answers_at_once", False):  # nothing to wait for alongside
            sent = {k: await self._place(p, ts_ns, order, recorded) for k, order in enumerate(orders)}
            still_open = await self._land_round(intent, orders, sent, results, earlier)
            for k, (report, state) in still_open.items():
                results[k] = await self._poll_leg(p, ts_ns, orders[k], report, state)
            return results
        running: dict[asyncio.Task[OrderReport | LegOutcome], int] = {}
        try:
            for k, order in enumerate(orders):
                running[asyncio.create_task(self._place(p, ts_ns, order, recorded))] = k
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                sent = {running.pop(task): task.result() for task in done}
                still_open = await self._land_round(intent, orders, sent, results, None if running else earlier)
                for k, (report, state) in still_open.items():
                    running[asyncio.create_task(self._poll_leg(p, ts_ns, orders[k], report, state))] = k
        finally:  # only when cancelled (every leg ends by itself otherwise): take the legs down too
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running)
        return results

    async def _land_round(self, intent: Intent, orders: list[Order], sent: dict[int, OrderReport | LegOutcome],
                          results: list[LegOutcome],
                          earlier: list[LegOutcome] | None) -> dict[int, tuple[OrderReport, LegProgress]]:
        """Record the outcomes of legs that ended and land the reports that came back (in leg order);
        returns the legs whose orders are still open. `earlier` is given when no other leg of the intent
        is still running: if this round ends them all, the intent's outcome is committed with the reports."""
        batch: list[tuple[Order, OrderReport, LegProgress]] = []
        keys: list[int] = []
        for k in sorted(sent):
            value = sent[k]
            if isinstance(value, LegOutcome):
                results[k] = value
            else:
                order = orders[k]
                batch.append((order, value, LegProgress(order.client_order_id, order.side.value)))
                keys.append(k)
        still_open: dict[int, tuple[OrderReport, LegProgress]] = {}
        if batch:
            closing = None if earlier is None else self._closing(intent, earlier, results, keys)
            landed = await self._land(intent.portfolio, intent.ts_ns, batch, closing)
            for k, (_, report, state), outcome in zip(keys, batch, landed, strict=True):
                if outcome is None:
                    still_open[k] = (report, state)
                else:
                    results[k] = outcome
        return still_open

    def _closing(self, intent: Intent, earlier: list[LegOutcome], results: list[LegOutcome],
                 keys: list[int]) -> Closing:
        """The intent's final status as a write, given how the legs landing now end (None while one is open)."""
        def closing(landing: list[LegOutcome | None]) -> SetIntentStatus | None:
            phase = list(results)
            for k, outcome in zip(keys, landing, strict=True):
                if outcome is None:
                    return None
                phase[k] = outcome
            if self.halted:
                return None
            return SetIntentStatus(intent.id, intent_outcome(len(intent.legs), earlier + phase, False))
        return closing

    # one leg -------------------------------------------------------------------------------------

    async def _place(self, p: str, ts_ns: int, order: Order, recorded: bool) -> OrderReport | LegOutcome:
        """Record the order if the phase could not, send it: its first report, or how the leg ended."""
        cid = order.client_order_id
        try:
            if not recorded:
                try:
                    await self._write(p, [PutOrders((order,))])
                except DuplicateOrder:
                    log.warning("order %s is already in the ledger: looking it up, never sending it twice", cid)
                    found = await self._lookup(p, cid, order.symbol, patient=True)  # Unreachable: unknown
                    if found is None:
                        return LegOutcome.UNKNOWN
                    return await self._settle(p, ts_ns, order, found, LegProgress(cid, order.side.value))
            return await self._send(p, order)
        except Exception as exc:  # the leg's boundary: the order stays recorded and Reconcile settles it
            return self._leg_failed(p, cid, exc)

    async def _poll_leg(self, p: str, ts_ns: int, order: Order, report: OrderReport, state: LegProgress) -> LegOutcome:
        try:
            return await self._poll(p, ts_ns, order, report, state)
        except Exception as exc:  # the leg's boundary, as in `_place`
            return self._leg_failed(p, order.client_order_id, exc)

    async def _land(self, p: str, ts_ns: int, batch: list[tuple[Order, OrderReport, LegProgress]],
                    closing: Closing | None = None) -> list[LegOutcome | None]:
        """Commit the legs' reports in one request, then apply their new fills in leg order.

        Returns each leg's outcome, or None for a leg whose order is still open (poll it). A report the
        ledger refuses fails only its own leg: the others are then committed one by one. `closing` gives
        the intent's final status from the outcomes foreseen, to commit in the same request.
        """
        outcomes: list[LegOutcome | None] = [None] * len(batch)
        ops: list[WriteOp] = []
        kept: list[int] = []
        for k, (order, report, state) in enumerate(batch):
            try:
                self._check_report(p, report, state)
                ops.append(PutOrderReport(report))
            except Exception as exc:  # the leg's boundary, as in `_place`
                if isinstance(exc, LedgerInputError):
                    exc = await self._refuse_report(p, order.client_order_id, exc)
                outcomes[k] = self._leg_failed(p, order.client_order_id, exc)
                continue
            kept.append(k)
        if not ops:
            return outcomes
        foreseen = list(outcomes)
        for k in kept:
            report = batch[k][1]
            foreseen[k] = leg_outcome(report) if report.status in TERMINAL else None
        final = closing(foreseen) if closing is not None else None
        try:
            written = await self._write(p, ops if final is None else [*ops, final])
        except LedgerInputError:  # one of them does not fit its order: each on its own, to find which
            for k in kept:
                order, report, state = batch[k]
                try:
                    await self._commit_report(p, ts_ns, report, state)
                except Exception as exc:  # the leg's boundary, as in `_place`
                    outcomes[k] = self._leg_failed(p, order.client_order_id, exc)
                else:
                    outcomes[k] = leg_outcome(report) if report.status in TERMINAL else None
            return outcomes
        except LedgerError:
            return [LegOutcome.FAILED if k in kept else outcome for k, outcome in enumerate(outcomes)]
        for k, new in zip(kept, written[:len(kept)], strict=True):
            order, report, state = batch[k]
            try:
                self._progress(p, ts_ns, report, state, cast("list[Fill]", new))
            except Exception as exc:  # the leg's boundary, as in `_place`
                outcomes[k] = self._leg_failed(p, order.client_order_id, exc)
            else:
                outcomes[k] = leg_outcome(report) if report.status in TERMINAL else None
        if final is not None and outcomes == foreseen:
            self._concluded[final.intent_id] = final.status
        return outcomes
