"""One order's life at the venue, for the execution actor: send, look up, poll; commit reports, apply fills.

`OrderDesk` holds the actor's venue session and its ledger writes for orders and fills. A venue
error that may hide a placed order is answered by looking the order up by client order id, never by
sending it again; a report is committed before its new fills are reported and applied, and a failed
ledger write halts trading.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import cast

from engine.sensor import Sensor
from engine.types import Fill, Order, SymbolRules
from ops.actor_messages import (
    ActorCallbackFailed,
    Backoff,
    LegOutcome,
    LegProgress,
    fee_in_quote,
    leg_outcome,
    refused,
)
from ops.ledger import Ledger, LedgerError, LedgerInputError
from ops.ledger_ops import PutOrderReport, SetOrderStatus, WriteOp
from ops.venues.base import (
    TERMINAL,
    OrderReport,
    OrderStatus,
    RateLimited,
    Venue,
    VenueError,
    VenueUnavailable,
)

log = logging.getLogger(__name__)


class BadReport(Exception):
    """The venue's report does not fit the recorded order."""


class Unreachable(Exception):
    """The venue could not be asked about an order (which is NOT the same as the venue not knowing it)."""


class OrderDesk:
    """Sends, looks up and settles single orders, and commits their reports before applying their fills.

    `ops.actor_legs.LegRunner` runs an intent's legs on top of it, `ops.actor.ExecutionActor` adds the
    mailbox and the intents' lifecycle.
    """

    def __init__(
        self,
        venue: Venue,
        ledger: Ledger,
        *,
        holdings_of: Callable[[str], Mapping[str, Decimal]],
        on_fill: Callable[[str, Fill], None],
        quote_of: Callable[[str], str],
        fee_rate_of: Callable[[str], Decimal],
        rules_of: Callable[[str], Mapping[str, SymbolRules]],
        sensor: Sensor,
        fill_timeout_secs: float,
        max_retry_secs: float,
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]],
        monotonic: Callable[[], float],
        clock_ns: Callable[[], int],
        rng: random.Random,
    ) -> None:
        if not fill_timeout_secs > 0 or not max_retry_secs >= 0:
            raise ValueError(f"fill_timeout_secs must be > 0 and max_retry_secs >= 0 ({fill_timeout_secs}, {max_retry_secs})")
        self._venue = venue
        self._ledger = ledger
        self._holdings_of = holdings_of
        self._on_fill = on_fill
        self._quote_of = quote_of
        self._fee_rate_of = fee_rate_of
        self._rules_of = rules_of
        self._sensor = sensor
        self._fill_timeout_secs = fill_timeout_secs
        self._max_retry_secs = max_retry_secs
        self._backoff = backoff
        self._sleep = sleep
        self._monotonic = monotonic
        self._clock_ns = clock_ns
        self._rng = rng
        self._live: set[str] = set()
        self._stop_event = asyncio.Event()  # set by a parking Stop and by a halt
        self._fatal: BaseException | None = None
        self.halted = False

    def _parking(self) -> bool:
        """A parking Stop or a halt: start no new step."""
        return self._stop_event.is_set()

    # one order --------------------------------------------------------------------------------------

    def _leg_failed(self, p: str, cid: str, exc: Exception) -> LegOutcome:
        """How a leg ends on an exception at its boundary (the order stays recorded for Reconcile)."""
        if isinstance(exc, LedgerInputError):
            log.error("order %s refused by the ledger: %s", cid, exc)
            return LegOutcome.FAILED
        if isinstance(exc, LedgerError):
            return LegOutcome.FAILED
        if isinstance(exc, BadReport | Unreachable):
            return LegOutcome.UNKNOWN
        log.error("order %s failed unexpectedly; left to Reconcile", cid, exc_info=exc)
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
            if log.isEnabledFor(logging.INFO):
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
                except Unreachable:
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
        return self._backoff.delay_secs(attempt, self._rng)

    async def _not_placed(self, p: str, order: Order, reason: str) -> None:
        await self._write(p, [SetOrderStatus(order.client_order_id, "not_placed", reason)])
        self._sensor.on_order(p, order.symbol, order.side.value, "rejected")
        log.warning("order %s not placed: %s", order.client_order_id, reason)

    # reports and fills ------------------------------------------------------------------------------

    async def _settle(self, p: str, ts_ns: int, order: Order, report: OrderReport, state: LegProgress) -> LegOutcome:
        """Commit the report, then poll the order until it ends; the leg's outcome."""
        await self._commit_report(p, ts_ns, report, state)
        return await self._poll(p, ts_ns, order, report, state)

    async def _poll(self, p: str, ts_ns: int, order: Order, report: OrderReport, state: LegProgress) -> LegOutcome:
        """Poll a committed report until terminal (then cancel and look up once more); the leg's outcome."""
        cid, symbol = order.client_order_id, order.symbol
        deadline = self._monotonic() + self._fill_timeout_secs
        attempt = 0
        while report.status not in TERMINAL and self._monotonic() < deadline:
            await self._sleep(self._backoff.delay_secs(attempt, self._rng))
            attempt += 1
            try:
                fetched = await self._venue.fetch_order(cid, symbol)
            except VenueError as exc:
                self._sensor.on_execution_error(p, exc.kind)
                log.warning("order %s: status poll failed (%s): %s", cid, exc.kind, exc)
                continue
            if fetched is not None:
                report = fetched
                await self._commit_report(p, ts_ns, report, state)
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
                    await self._commit_report(p, ts_ns, report, state)
            try:
                final = await self._lookup(p, cid, symbol, patient=False)
            except Unreachable:
                final = None
            if final is not None:
                report = final
                await self._commit_report(p, ts_ns, report, state)
        return leg_outcome(report)

    async def _commit_report(self, p: str, ts_ns: int, report: OrderReport, state: LegProgress) -> None:
        """Commit one report; then (only then) report and apply its NEW fills."""
        self._check_report(p, report, state)
        try:
            [new] = await self._write(p, [PutOrderReport(report)])
        except LedgerInputError as exc:
            raise await self._refuse_report(p, report.client_order_id, exc) from exc
        self._progress(p, ts_ns, report, state, cast("list[Fill]", new))

    def _check_report(self, p: str, report: OrderReport, state: LegProgress) -> None:
        if report.client_order_id != state.client_order_id:
            self._sensor.on_execution_error(p, "bad_answer")
            log.error("asked %s about order %s, it answered about %s: ignored; the order is left to Reconcile",
                      self._venue.name, state.client_order_id, report.client_order_id)
            raise BadReport

    async def _refuse_report(self, p: str, cid: str, exc: LedgerInputError) -> Exception:
        """The ledger refused a report (it does not fit the order): mark the order unknown.

        Returns the error that ends the leg: BadReport, or the LedgerError when even that write failed.
        """
        self._sensor.on_execution_error(p, "bad_answer")
        log.error("order %s: the venue's report does not fit the order (%s); marked unknown", cid, exc)
        try:
            await self._write(p, [SetOrderStatus(cid, "unknown", f"bad report: {exc}")])
        except LedgerError as failed:
            return failed
        return BadReport(str(exc))

    def _progress(self, p: str, ts_ns: int, report: OrderReport, state: LegProgress, new: Sequence[Fill]) -> None:
        """A committed report: its status to the sensor (once each), its new fills to the sensor and `on_fill`."""
        status = report.status
        if status is not OrderStatus.NEW and status not in state.seen:
            state.seen.add(status)
            self._sensor.on_order(p, report.symbol, state.side, status.value)
        if not new:
            return
        state.new_fills += len(new)
        latency_ns = self._clock_ns() - ts_ns
        logged = log.isEnabledFor(logging.INFO)
        for fill in new:
            self._sensor.on_fill(p, fill, fee_in_quote(fill), latency_ns)
            if logged:
                log.info("fill %s of %s: %s %s %s at %s, fee %s %s", fill.trade_id, fill.client_order_id,
                         fill.side.value, fill.quantity, fill.symbol, fill.price, fill.fee, fill.fee_asset)
            if self._fatal is None:
                self._callback(self._on_fill, p, fill)

    async def _lookup(self, p: str, cid: str, symbol: str, *, patient: bool) -> OrderReport | None:
        """Find an order by client order id: its report, or None when the venue says it does not know it.

        Errors are retried with backoff up to max_retry_secs (and, when patient, so is not-found);
        raises Unreachable when the venue never answered.
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
            delay = self._backoff.delay_secs(attempt, self._rng)
            if self._monotonic() + delay > deadline:
                if not answered:
                    raise Unreachable(f"{self._venue.name} did not answer about order {cid}")
                return None
            await self._sleep(delay)
            attempt += 1

    # ledger, waits, callbacks ---------------------------------------------------------------------

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

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise ActorCallbackFailed(f"a callback failed: {self._fatal!r}") from self._fatal


