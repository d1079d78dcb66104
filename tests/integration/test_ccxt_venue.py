"""CcxtVenue (real ccxt 4.5) against the fake Binance spot server on 127.0.0.1, fault by fault."""
from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio

from engine.types import Order, Side, SymbolRules
from ops.venues.base import (
    BadVenueAnswer,
    InsufficientFunds,
    OrderRejected,
    OrderStatus,
    OrderUnknownState,
    RateLimited,
    VenueError,
    VenueUnavailable,
)
from ops.venues.binance_fake import QUERY_ORDER, BinanceFake, Fault
from ops.venues.binance_fake.faults import FillTweaks
from ops.venues.ccxt_venue import (
    CcxtVenue,
    UnparsedOrderAnswer,
    VenueAuthFailed,
    from_ccxt_symbol,
    to_ccxt_symbol,
)
from tests.integration.binance_kit import quoting, spot_specs

KEY = "keel-test-key-Q7vX2mNpL4"
SECRET = "keel-test-secret-Zr8TbW3yK1"


def make_venue(fake: BinanceFake, **overrides: Any) -> CcxtVenue:
    options: dict[str, Any] = {"api_key": KEY, "api_secret": SECRET, "timeout_secs": 2.0} | overrides
    return CcxtVenue("binance", base_url=fake.base_url, enable_rate_limit=False, **options)


def make_order(cid: str, side: Side, quantity: str, symbol: str = "BTC-USDT", **extra: Any) -> Order:
    return Order(cid, "00000000000000aa", "main", 0, symbol, side, Decimal(quantity), **extra)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[BinanceFake]:
    balances = {"USDT": Decimal("10000"), "BTC": Decimal("1")}
    async with quoting(BinanceFake(KEY, SECRET, balances, spot_specs("10"))) as server:
        yield server


@pytest_asyncio.fixture
async def venue(fake: BinanceFake) -> AsyncIterator[CcxtVenue]:
    session = make_venue(fake)
    yield session
    await session.close()


def test_symbols_convert_both_ways() -> None:
    assert to_ccxt_symbol("BTC-USDT") == "BTC/USDT"
    assert from_ccxt_symbol("BTC/USDT") == "BTC-USDT"
    assert from_ccxt_symbol("ETH/USDT:USDT") == "ETH-USDT"


@pytest.mark.asyncio
async def test_load_rules_reads_exact_step_sizes_and_min_notional(venue: CcxtVenue) -> None:
    rules = await venue.load_rules(["BTC-USDT", "ETH-USDT"])
    assert rules == {
        "BTC-USDT": SymbolRules(Decimal("0.00001"), Decimal("5")),
        "ETH-USDT": SymbolRules(Decimal("0.0001"), Decimal("10")),
    }
    assert str(rules["BTC-USDT"].step_size) == "0.00001"
    with pytest.raises(ValueError, match="SOL-USDT"):
        await venue.load_rules(["SOL-USDT"])


@pytest.mark.asyncio
async def test_market_buy_then_sell_fills_and_balances(fake: BinanceFake, venue: CcxtVenue) -> None:
    buy = await venue.place_order(make_order("k0000000000000aa0000", Side.BUY, "0.01"))
    assert (buy.status, buy.filled_quantity, buy.symbol) == (OrderStatus.FILLED, Decimal("0.01"), "BTC-USDT")
    [fill] = buy.fills
    assert (fill.quantity, fill.price, fill.fee, fill.fee_asset) == (
        Decimal("0.01"), Decimal("50010"), Decimal("0.5001"), "USDT")
    assert fill.trade_id == str(fake.trades[0].trade_id)
    assert fill.order_id == buy.order_id and fill.client_order_id == "k0000000000000aa0000"
    assert fill.side is Side.BUY and fill.ts_ns > 0

    sell = await venue.place_order(make_order("k0000000000000aa0100", Side.SELL, "0.02"))
    assert sell.status is OrderStatus.FILLED
    assert [(f.quantity, f.price, f.fee) for f in sell.fills] == [(Decimal("0.02"), Decimal("50000"), Decimal("1"))]
    expected = {"USDT": Decimal("10000") - Decimal("500.1") - Decimal("0.5001") + Decimal("1000") - Decimal("1"),
                "BTC": Decimal("0.99")}
    assert await venue.balances() == expected
    assert fake.balances == expected


@pytest.mark.asyncio
async def test_market_buy_by_quote_quantity_sends_quote_order_qty(fake: BinanceFake, venue: CcxtVenue) -> None:
    order = make_order("k0000000000000ab0000", Side.BUY, "0", quote_quantity=Decimal("100"))
    report = await venue.place_order(order)
    [placed] = fake.orders_for("k0000000000000ab0000")
    assert placed.orig_quote_qty == Decimal("100")
    assert report.filled_quantity == Decimal("0.00199")  # floor(100 / 50010) to the 0.00001 step


@pytest.mark.asyncio
async def test_limit_ioc_goes_through_the_book_by_the_spread(fake: BinanceFake) -> None:
    venue = make_venue(fake, order_type="limit_ioc", ioc_spread_bps=10.0, price_of=lambda s: (50000.0, 50010.0))
    try:
        buy = await venue.place_order(make_order("k0000000000000ac0000", Side.BUY, "0.01"))
        sell = await venue.place_order(make_order("k0000000000000ac0100", Side.SELL, "0.01"))
    finally:
        await venue.close()
    [placed_buy] = fake.orders_for("k0000000000000ac0000")
    [placed_sell] = fake.orders_for("k0000000000000ac0100")
    assert (placed_buy.type, placed_buy.time_in_force, placed_buy.price) == ("LIMIT", "IOC", Decimal("50060.01"))
    assert placed_sell.price == Decimal("49950")
    assert buy.fills[0].price == Decimal("50010") and sell.fills[0].price == Decimal("50000")


@pytest.mark.asyncio
async def test_partial_fills_report_their_filled_quantity(fake: BinanceFake, venue: CcxtVenue) -> None:
    ioc_venue = make_venue(fake, order_type="limit_ioc", price_of=lambda s: (50000.0, 50010.0))
    try:
        fake.inject(Fault.partial_fill(Decimal("0.5")))
        ioc = await ioc_venue.place_order(make_order("k0000000000000ad0000", Side.BUY, "0.01"))
    finally:
        await ioc_venue.close()
    fake.inject(Fault.partial_fill(Decimal("0.3")))
    market = await venue.place_order(make_order("k0000000000000ad0100", Side.SELL, "0.01"))
    assert (ioc.status, ioc.filled_quantity, sum(f.quantity for f in ioc.fills)) == (
        OrderStatus.EXPIRED, Decimal("0.005"), Decimal("0.005"))
    assert (market.status, market.filled_quantity) == (OrderStatus.EXPIRED, Decimal("0.003"))


@pytest.mark.asyncio
async def test_worse_price_and_split_fills_are_reported_exactly(fake: BinanceFake, venue: CcxtVenue) -> None:
    fake.inject(Fault.worse_price(Decimal("20")))
    worse = await venue.place_order(make_order("k0000000000000ae0000", Side.BUY, "0.01"))
    assert worse.fills[0].price == Decimal("50110.02")  # 50010 * 1.002 rounded up to the tick
    fake.inject(Fault.split_fills(3))
    split = await venue.place_order(make_order("k0000000000000ae0100", Side.BUY, "0.01"))
    assert [f.quantity for f in split.fills] == [Decimal("0.00333"), Decimal("0.00333"), Decimal("0.00334")]
    assert len({f.trade_id for f in split.fills}) == 3


@pytest.mark.parametrize(
    ("fault", "error", "retry_after"),
    [
        (Fault.rate_limited(retry_after_secs=7), RateLimited, 7.0),
        (Fault.rate_limited(retry_after_secs=None), RateLimited, None),
        (Fault.banned(retry_after_secs=120), RateLimited, 120.0),
        (Fault.server_error(503), VenueUnavailable, None),
        (Fault.insufficient_balance(), InsufficientFunds, None),
        (Fault.min_notional(), OrderRejected, None),
    ],
    ids=["429", "429-no-header", "418", "503-not-placed", "insufficient", "min-notional"],
)
@pytest.mark.asyncio
async def test_refusals_map_to_venue_errors_and_place_nothing(
    fake: BinanceFake, venue: CcxtVenue, fault: Fault, error: type[VenueError], retry_after: float | None
) -> None:
    await venue.load_rules(["BTC-USDT"])
    fake.inject(fault)
    with pytest.raises(error) as caught:
        await venue.place_order(make_order("k0000000000000af0000", Side.BUY, "0.01"))
    assert not isinstance(caught.value, OrderUnknownState)
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after == retry_after
    assert fake.orders_by_client_id["k0000000000000af0000"] == 1
    assert fake.orders_for("k0000000000000af0000") == []


@pytest.mark.asyncio
async def test_ban_without_header_takes_retry_after_from_the_message(fake: BinanceFake, venue: CcxtVenue) -> None:
    fake.inject(Fault.banned(retry_after_secs=None))
    with pytest.raises(RateLimited) as caught:
        await venue.place_order(make_order("k0000000000000b00000", Side.BUY, "0.01"))
    assert caught.value.retry_after is not None and 100 < caught.value.retry_after <= 120


@pytest.mark.parametrize(
    ("quantity", "error"),
    [("1", InsufficientFunds), ("0.00001", OrderRejected), ("0.000015", OrderRejected)],
    ids=["balance", "notional", "lot-size"],
)
@pytest.mark.asyncio
async def test_real_balance_and_filter_checks_map(
    fake: BinanceFake, venue: CcxtVenue, quantity: str, error: type[VenueError]
) -> None:
    with pytest.raises(error):
        await venue.place_order(make_order("k0000000000000b10000", Side.BUY, quantity))
    assert fake.orders_for("k0000000000000b10000") == []


@pytest.mark.asyncio
async def test_timeout_after_placing_is_unknown_state_then_found_by_client_id(fake: BinanceFake) -> None:
    venue = make_venue(fake, timeout_secs=0.5)
    try:
        await venue.load_rules(["BTC-USDT"])
        fake.inject(Fault.hang(30, processed=True))
        with pytest.raises(OrderUnknownState):
            await venue.place_order(make_order("k0000000000000b20000", Side.BUY, "0.01"))
        found = await venue.fetch_order("k0000000000000b20000", "BTC-USDT")
    finally:
        await venue.close()
    assert found is not None
    assert (found.status, found.filled_quantity) == (OrderStatus.FILLED, Decimal("0.01"))
    assert [(f.quantity, f.price) for f in found.fills] == [(Decimal("0.01"), Decimal("50010"))]
    assert fake.orders_by_client_id["k0000000000000b20000"] == 1
    assert len(fake.orders_for("k0000000000000b20000")) == 1


@pytest.mark.asyncio
async def test_server_error_after_placing_is_unknown_state(fake: BinanceFake, venue: CcxtVenue) -> None:
    await venue.load_rules(["BTC-USDT"])
    fake.inject(Fault.server_error(500, processed=True))
    with pytest.raises(OrderUnknownState):
        await venue.place_order(make_order("k0000000000000b30000", Side.BUY, "0.01"))
    found = await venue.fetch_order("k0000000000000b30000", "BTC-USDT")
    assert found is not None and found.status is OrderStatus.FILLED
    assert fake.orders_by_client_id["k0000000000000b30000"] == 1


@pytest.mark.asyncio
async def test_broken_json_is_a_bad_answer_that_demands_a_lookup(fake: BinanceFake, venue: CcxtVenue) -> None:
    await venue.load_rules(["BTC-USDT"])
    fake.inject(Fault.broken_json())
    with pytest.raises(BadVenueAnswer) as caught:
        await venue.place_order(make_order("k0000000000000b40000", Side.BUY, "0.01"))
    assert isinstance(caught.value, OrderUnknownState) and isinstance(caught.value, UnparsedOrderAnswer)
    found = await venue.fetch_order("k0000000000000b40000", "BTC-USDT")
    assert found is not None and found.filled_quantity == Decimal("0.01")
    fake.inject(Fault.broken_json(endpoint=QUERY_ORDER))
    with pytest.raises(BadVenueAnswer) as caught:
        await venue.fetch_order("k0000000000000b40000", "BTC-USDT")
    assert not isinstance(caught.value, OrderUnknownState)


@pytest.mark.asyncio
async def test_lookup_that_hangs_is_unavailable(fake: BinanceFake) -> None:
    venue = make_venue(fake, timeout_secs=0.5)
    try:
        await venue.load_rules(["BTC-USDT"])
        fake.inject(Fault.hang(30, processed=False, endpoint=QUERY_ORDER))
        with pytest.raises(VenueUnavailable):
            await venue.fetch_order("k0000000000000b50000", "BTC-USDT")
    finally:
        await venue.close()


@pytest.mark.asyncio
async def test_duplicate_client_order_id_is_refused(fake: BinanceFake, venue: CcxtVenue) -> None:
    await venue.place_order(make_order("k0000000000000b60000", Side.BUY, "0.01"))
    with pytest.raises(OrderRejected, match="Duplicate order sent"):
        await venue.place_order(make_order("k0000000000000b60000", Side.BUY, "0.01"))
    assert fake.orders_by_client_id["k0000000000000b60000"] == 2
    assert len(fake.orders_for("k0000000000000b60000")) == 1


@pytest.mark.asyncio
async def test_bad_secret_and_bad_key_are_refused(fake: BinanceFake) -> None:
    wrong_secret = make_venue(fake, api_secret="not-the-secret")
    wrong_key = make_venue(fake, api_key="not-the-key")
    try:
        with pytest.raises(VenueAuthFailed, match="-1022"):
            await wrong_secret.place_order(make_order("k0000000000000b70000", Side.BUY, "0.01"))
        with pytest.raises(VenueAuthFailed, match="-2015"):
            await wrong_key.balances()
    finally:
        await wrong_secret.close()
        await wrong_key.close()
    assert fake.orders_by_client_id["k0000000000000b70000"] == 1
    assert fake.orders_for("k0000000000000b70000") == []


@pytest.mark.asyncio
async def test_unknown_orders_are_none(venue: CcxtVenue) -> None:
    assert await venue.fetch_order("k00000000000000c0000", "BTC-USDT") is None
    assert await venue.cancel_order("k00000000000000c0000", "BTC-USDT") is None


def rest_order(fake: BinanceFake, cid: str, quantity: str = "0.01", price: str = "40000") -> None:
    """An open GTC buy left by an earlier run (placed straight into the fake's book)."""
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
              "quantity": quantity, "price": price}
    fake.spot.place(params, cid, 1, FillTweaks())


@pytest.mark.asyncio
async def test_cancel_open_order_and_fills_that_race_the_cancel(fake: BinanceFake, venue: CcxtVenue) -> None:
    rest_order(fake, "k0000000000000c10000")
    canceled = await venue.cancel_order("k0000000000000c10000", "BTC-USDT")
    assert canceled is not None and (canceled.status, canceled.filled_quantity) == (OrderStatus.CANCELED, 0)

    rest_order(fake, "k0000000000000c20000")
    fake.inject(Fault.fill_on_cancel(Decimal("0.5")))
    half = await venue.cancel_order("k0000000000000c20000", "BTC-USDT")
    assert half is not None and (half.status, half.filled_quantity) == (OrderStatus.CANCELED, Decimal("0.005"))
    assert [(f.quantity, f.price) for f in half.fills] == [(Decimal("0.005"), Decimal("40000"))]

    rest_order(fake, "k0000000000000c30000")
    fake.inject(Fault.fill_on_cancel(Decimal(1)))
    filled = await venue.cancel_order("k0000000000000c30000", "BTC-USDT")
    assert filled is not None and (filled.status, filled.filled_quantity) == (OrderStatus.FILLED, Decimal("0.01"))
    assert sum(f.quantity for f in filled.fills) == Decimal("0.01")


@pytest.mark.asyncio
async def test_refused_connection_before_sending_is_unavailable(fake: BinanceFake, venue: CcxtVenue) -> None:
    await venue.load_rules(["BTC-USDT"])
    await fake.stop()
    with pytest.raises(OrderUnknownState):  # the kept-alive connection broke while the order was written
        await venue.place_order(make_order("k0000000000000c40000", Side.BUY, "0.01"))
    with pytest.raises(VenueUnavailable) as caught:  # a new connection is refused: nothing was sent
        await venue.place_order(make_order("k0000000000000c40000", Side.BUY, "0.01"))
    assert not isinstance(caught.value, OrderUnknownState)


@pytest.mark.asyncio
async def test_key_and_secret_never_reach_logs_or_errors(fake: BinanceFake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    venue = make_venue(fake, timeout_secs=0.5)
    wrong_key = make_venue(fake, api_key="not-the-key")
    errors: list[BaseException] = []
    try:
        await venue.place_order(make_order("k0000000000000c50000", Side.BUY, "0.01"))
        for fault in (Fault.rate_limited(), Fault.hang(30), Fault.broken_json(), Fault.server_error(502)):
            fake.inject(fault)
            with pytest.raises(VenueError) as caught:
                await venue.place_order(make_order(f"k0000000000000c6{fault.kind.value[:4]}", Side.BUY, "0.01"))
            errors.append(caught.value)
        with pytest.raises(VenueAuthFailed) as auth:
            await wrong_key.balances()
        errors.append(auth.value)
    finally:
        await venue.close()
        await wrong_key.close()
    http_records = [r for r in caplog.records if r.name == "ops.venues.ccxt_venue.http"]
    assert any("X-MBX-APIKEY" in r.getMessage() and "***" in r.getMessage() for r in http_records)
    texts = [r.getMessage() for r in caplog.records] + [repr(venue), repr(wrong_key)]
    texts += [text for e in errors for text in (str(e), repr(e), "".join(traceback.format_exception(e)))]
    for text in texts:
        assert KEY not in text and SECRET not in text
