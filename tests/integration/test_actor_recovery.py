"""The execution actor recovering after a crash and reconciling: pending orders settled from the venue,
lost orders never resent, nothing guessed while the venue is down."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from engine.execution import client_order_id
from engine.types import Order, Side
from ops.actor_messages import ExecuteIntent, Reconcile
from ops.ledger_ops import PutIntent, PutOrderReport, PutOrders
from ops.venues.base import OrderReport, VenueUnavailable
from tests.integration.actor_kit import (
    START,
    Book,
    FakeTime,
    P,
    RecordingVenue,
    WatchedLedger,
    assert_consistent,
    buy,
    make_actor,
    make_intent,
    running,
    sell,
    status,
)


@pytest.mark.asyncio
async def test_recover_records_fills_of_a_pending_order_once_and_marks_unknown_ones_not_placed(
        tmp_path: Path, ledger: WatchedLedger) -> None:
    journal = tmp_path / "paper.sqlite"
    intent = make_intent(1, sell("ETH-USDT", "0.5"), buy("BTC-USDT", "50"))
    sent = Order(client_order_id(intent.id, 0), intent.id, P, 0, "ETH-USDT", Side.SELL, Decimal("0.5"))
    never = Order(client_order_id(intent.id, 1), intent.id, P, 1, "BTC-USDT", Side.BUY, Decimal("0.001"),
                  quote_quantity=Decimal(50))
    await ledger.submit([PutIntent(intent, "executing"), PutOrders((sent, never))])
    crashed = RecordingVenue(journal=journal, balances=START)
    await crashed.place_order(sent)  # the process died after sending, before recording the report
    venue = RecordingVenue(journal=journal, balances={})  # restarted: the journal knows what happened
    book = Book(await ledger.holdings(P))
    actor = make_actor(venue, ledger, book, FakeTime())
    summary = await actor.recover()
    assert (summary.orders_checked, summary.fills_recorded, summary.not_placed, summary.settled,
            summary.intents_interrupted) == (2, 1, 1, 1, 1)
    again = await actor.recover()
    assert (again.orders_checked, again.fills_recorded, again.intents_interrupted) == (0, 0, 0)
    assert [f.client_order_id for f in book.fills] == [sent.client_order_id]
    assert [(o.status, o.filled) for o in await ledger.orders_of_intent(intent.id)] == [
        ("filled", Decimal("0.5")), ("not_placed", Decimal(0))]
    assert await status(ledger, intent) == "interrupted"
    assert_consistent(book, await ledger.holdings(P), await venue.balances())
    await venue.close()
    await crashed.close()


@pytest.mark.asyncio
async def test_an_order_lost_in_flight_is_never_resent_and_reconcile_settles_it(ledger: WatchedLedger) -> None:
    venue, book, clock = RecordingVenue(balances=START, lose_next=1), Book(START), FakeTime()
    actor = make_actor(venue, ledger, book, clock, max_retry_secs=5.0)
    intent = make_intent(1, sell("ETH-USDT", "1"))
    [order] = (Order(client_order_id(intent.id, 0), intent.id, P, 0, "ETH-USDT", Side.SELL, Decimal(1)),)
    async with running(actor):
        actor.tell(ExecuteIntent(intent))
        assert await book.outcome(intent) == "partial"
        record = await ledger.order(order.client_order_id)
        assert record is not None and record.status == "unknown" and "lost on the way" in (record.error or "")
        assert len(venue.placed) == 1 and 4.0 < clock.now <= 5.0  # looked up with backoff, never sent again
        await RecordingVenue.place_order(venue, order)  # the lost request reaches the exchange after all
        actor.tell(Reconcile())
        await ledger.until(lambda: any(isinstance(op, PutOrderReport) for op in ledger.ops))
    record = await ledger.order(order.client_order_id)
    assert record is not None and record.status == "filled"
    assert [f.client_order_id for f in book.fills] == [order.client_order_id]
    assert_consistent(book, await ledger.holdings(P), await venue.balances())


class DownVenue(RecordingVenue):
    """A venue that cannot be reached for lookups while `down`."""

    down = True

    async def fetch_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        if self.down:
            raise VenueUnavailable("paper: connection refused")
        return await super().fetch_order(client_order_id, symbol)


@pytest.mark.asyncio
async def test_recovery_while_the_venue_is_down_leaves_orders_open_instead_of_guessing(ledger: WatchedLedger) -> None:
    intent = make_intent(1, sell("ETH-USDT", "0.5"))
    sent = Order(client_order_id(intent.id, 0), intent.id, P, 0, "ETH-USDT", Side.SELL, Decimal("0.5"))
    await ledger.submit([PutIntent(intent, "executing"), PutOrders((sent,))])
    venue, book, clock = DownVenue(balances=START), Book(START), FakeTime()
    await RecordingVenue.place_order(venue, sent)
    actor = make_actor(venue, ledger, book, clock, max_retry_secs=3.0)
    summary = await actor.recover()
    assert (summary.orders_checked, summary.not_placed, summary.still_open, summary.fills_recorded) == (1, 0, 1, 0)
    record = await ledger.order(sent.client_order_id)
    assert record is not None and record.status == "pending" and clock.now > 2.0
    venue.down = False
    summary = await actor.reconcile()
    assert (summary.settled, summary.fills_recorded, summary.not_placed) == (1, 1, 0)
    assert_consistent(book, await ledger.holdings(P), await venue.balances())
