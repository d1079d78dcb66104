"""The execution actor with the ccxt venue against the fake Binance: every fault leaves the ledger equal to
the exchange, and recovery settles what the exchange filled."""
from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import pytest_asyncio

from engine.execution import client_order_id
from engine.types import Order, Side
from ops.actor_messages import ExecuteIntent
from ops.ledger_ops import PutIntent, PutOrders
from ops.venues.binance_fake import ORDER, BinanceFake, Fault
from ops.venues.ccxt_venue import CcxtVenue
from tests.integration.actor_kit import (
    FEE,
    START,
    Book,
    FakeTime,
    P,
    RecordingSensor,
    WatchedLedger,
    assert_consistent,
    buy,
    make_actor,
    make_intent,
    running,
    sell,
)
from tests.integration.binance_kit import quoting, spot_specs

# ccxt venue against the fake Binance ----------------------------------------------------------------

KEY = "keel-actor-key-7XpQ2"
SECRET = "keel-actor-secret-9WmZ4"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[BinanceFake]:
    """The fake Binance holding the actor's START balances, quoting both symbols."""
    async with quoting(BinanceFake(KEY, SECRET, dict(START), spot_specs("10"), fee_rate=FEE)) as server:
        yield server


@pytest_asyncio.fixture
async def ccxt_venue(fake: BinanceFake) -> AsyncIterator[CcxtVenue]:
    venue = CcxtVenue("binance", api_key=KEY, api_secret=SECRET, base_url=fake.base_url, timeout_secs=0.5,
                      enable_rate_limit=False)
    yield venue
    await venue.close()


REBALANCE = (sell("ETH-USDT", "1"), buy("BTC-USDT", "2900"))
SELL_CID = client_order_id(make_intent(1).id, 0)


@pytest.mark.asyncio
@pytest.mark.parametrize(("fault", "outcome", "sell_status", "posts"), [
    (None, "complete", "filled", 1),
    (Fault.rate_limited(retry_after_secs=2), "complete", "filled", 2),
    (Fault.insufficient_balance(), "partial", "rejected", 1),
    (Fault.min_notional(), "partial", "rejected", 1),
    (Fault.hang(hang_secs=10, processed=True), "complete", "filled", 1),
    (Fault.partial_fill(Decimal("0.5")), "partial", "expired", 1),
    (Fault.worse_price(Decimal("100")), "complete", "filled", 1),
    (Fault.broken_json(), "complete", "filled", 1),
], ids=["clean", "429", "insufficient", "min_notional", "timeout", "partial_fill", "worse_price", "broken_json"])
async def test_ccxt_faults_keep_the_ledger_equal_to_the_exchange(
        fake: BinanceFake, ccxt_venue: CcxtVenue, ledger: WatchedLedger, fault: Fault | None, outcome: str,
        sell_status: str, posts: int) -> None:
    clock, book, sensor = FakeTime(), Book(START), RecordingSensor()
    actor = make_actor(ccxt_venue, ledger, book, clock, sensor=sensor)
    intent = make_intent(1, *REBALANCE)
    if fault is not None:
        fake.inject(fault)
    async with running(actor):
        actor.tell(ExecuteIntent(intent))
        assert await book.outcome(intent) == outcome
    sell_order, buy_order = await ledger.orders_of_intent(intent.id)
    assert sell_order.order.client_order_id == SELL_CID and sell_order.status == sell_status
    assert fake.orders_by_client_id[SELL_CID] == posts
    assert len(fake.orders_for(SELL_CID)) == (0 if sell_status == "rejected" else 1)
    ledger_fills = await ledger.fills(P)
    assert sorted(r.fill.trade_id for r in ledger_fills) == sorted(str(t.trade_id) for t in fake.trades)
    assert {(r.fill.trade_id, r.fill.price) for r in ledger_fills} == {(str(t.trade_id), t.price) for t in fake.trades}
    assert buy_order.status == "filled" and book.lowest_quote >= 0
    assert_consistent(book, await ledger.holdings(P), fake.balances)
    assert sensor.of("done") == [(intent.id, outcome)]
    assert [f[0] for f in sensor.of("fill")] == [r.fill.trade_id for r in ledger_fills]
    assert all(fee > 0 and latency > 0 for _, fee, latency in sensor.of("fill"))
    assert ("ETH-USDT", "sell", "sent") in sensor.of("order") and ("BTC-USDT", "buy", "filled") in sensor.of("order")
    expected_errors = {None: [], "rate_limited": ["rate_limited"], "insufficient_balance": ["insufficient_funds"],
                       "min_notional": ["rejected"], "hang": ["unknown_state"], "broken_json": ["bad_answer"]}
    if fault is None or fault.kind in expected_errors:
        assert [e[0] for e in sensor.of("error")] == expected_errors[fault.kind if fault else None]
    if fault is not None and fault.kind == "rate_limited":
        assert any(2.0 <= s <= 2.2 for s in clock.sleeps), clock.sleeps
    if sell_status == "rejected":
        expected = "insufficient" if fault is not None and fault.kind == "insufficient_balance" else "NOTIONAL"
        assert expected.lower() in (sell_order.error or "").lower()
        assert buy_order.order.quote_quantity is not None and buy_order.order.quote_quantity < Decimal(100)
    if sell_status == "expired":
        assert buy_order.order.quote_quantity is not None and buy_order.order.quote_quantity < Decimal(2900)


@pytest.mark.asyncio
async def test_ccxt_unlisted_symbol_is_rejected_and_nothing_else_changes(
        fake: BinanceFake, ccxt_venue: CcxtVenue, ledger: WatchedLedger) -> None:
    book = Book(START)
    actor = make_actor(ccxt_venue, ledger, book, FakeTime())
    intent = make_intent(1, buy("SOL-USDT", "50"))
    async with running(actor):
        actor.tell(ExecuteIntent(intent))
        assert await book.outcome(intent) == "failed"
    [order] = await ledger.orders_of_intent(intent.id)
    assert order.status == "rejected" and "does not list SOL-USDT" in (order.error or "")
    assert fake.requests[ORDER] == 0 and await ledger.fills() == []
    assert await ledger.holdings(P) == START == fake.balances


@pytest.mark.asyncio
async def test_ccxt_recover_settles_a_pending_order_the_exchange_filled(
        fake: BinanceFake, ccxt_venue: CcxtVenue, ledger: WatchedLedger) -> None:
    intent = make_intent(1, *REBALANCE)
    sent = Order(SELL_CID, intent.id, P, 0, "ETH-USDT", Side.SELL, Decimal("1"))
    await ledger.submit([PutIntent(intent, "executing"), PutOrders((sent,))])
    fake.inject(Fault.split_fills(3))
    await ccxt_venue.place_order(sent)  # sent, then the process died
    book = Book(await ledger.holdings(P))
    summary = await make_actor(ccxt_venue, ledger, book, FakeTime()).recover()
    assert (summary.fills_recorded, summary.settled, summary.intents_interrupted) == (3, 1, 1)
    assert (await make_actor(ccxt_venue, ledger, book, FakeTime()).recover()).fills_recorded == 0
    assert len(book.fills) == 3
    assert_consistent(book, await ledger.holdings(P), fake.balances)
