"""The async paper venue: backtest-identical fills, duplicate ids refused, balances, and a journal that survives a restart."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from engine.paper import paper_fill
from engine.types import Order, Side, SymbolRules
from ops.venues.base import InsufficientFunds, OrderRejected, OrderStatus
from ops.venues.paper import PaperVenue

RULES = {"BTC-USDT": SymbolRules(Decimal("0.00001"), Decimal("5")), "ETH-USDT": SymbolRules(Decimal("0.0001"), Decimal("10"))}
PRICES = {"BTC-USDT": (49990.0, 50010.0), "ETH-USDT": (2999.5, 3000.5)}


def make_venue(**kw: object) -> PaperVenue:
    options: dict[str, object] = {"fee_rate": Decimal("0.001"), "rules": RULES} | kw
    return PaperVenue(PRICES.__getitem__, **options)  # type: ignore[arg-type]


def order(cid: str, side: Side, quantity: str, symbol: str = "BTC-USDT", quote: str | None = None) -> Order:
    return Order(cid, "0" * 16, "main", 0, symbol, side, Decimal(quantity),
                 quote_quantity=None if quote is None else Decimal(quote))


@pytest.mark.asyncio
async def test_fills_match_the_backtest_rules_exactly() -> None:
    venue = make_venue(slippage_bps=Decimal("2"))
    buy = order("k00000000000000010000", Side.BUY, "0.0599", quote="3000")
    report = await venue.place_order(buy)
    expected = paper_fill(buy, *PRICES["BTC-USDT"], quote="USDT", fee_rate=Decimal("0.001"),
                          slippage_bps=Decimal("2"), rules=RULES["BTC-USDT"], trade_id=f"{buy.client_order_id}-1",
                          ts_ns=report.fills[0].ts_ns)
    assert expected is not None and report.fills == (expected,)
    assert (report.status, report.filled_quantity, report.order_id) == (OrderStatus.FILLED, expected.quantity,
                                                                        expected.order_id)
    [fill] = report.fills
    assert fill.price == Decimal("50010") * (1 + Decimal("0.0002")) and fill.quantity * fill.price <= Decimal(3000)
    sell = await venue.place_order(order("k00000000000000010100", Side.SELL, "1.23456", symbol="ETH-USDT"))
    assert (sell.fills[0].quantity, sell.fills[0].price) == (Decimal("1.2345"), Decimal("2999.5") * (1 - Decimal("0.0002")))
    assert sell.fills[0].trade_id == "k00000000000000010100-1" and sell.fills[0].fee_asset == "USDT"
    assert await venue.fetch_order("k00000000000000010100", "ETH-USDT") == sell
    assert await venue.fetch_order("k00000000000000010100", "BTC-USDT") is None
    assert await venue.cancel_order("k00000000000000010100", "ETH-USDT") == sell
    assert await venue.fetch_order("k99999999999999990000", "ETH-USDT") is None
    await venue.close()


@pytest.mark.asyncio
async def test_refusals_duplicate_id_unknown_symbol_min_notional_and_funds() -> None:
    venue = make_venue(balances={"USDT": Decimal("100"), "ETH": Decimal("0.5")})
    await venue.place_order(order("k00000000000000020000", Side.SELL, "0.1", symbol="ETH-USDT"))
    with pytest.raises(OrderRejected, match="duplicate client order id"):
        await venue.place_order(order("k00000000000000020000", Side.SELL, "0.1", symbol="ETH-USDT"))
    with pytest.raises(OrderRejected, match="does not list SOL-USDT"):
        await venue.place_order(order("k00000000000000020100", Side.BUY, "1", symbol="SOL-USDT"))
    with pytest.raises(ValueError, match="SOL-USDT"):
        await venue.load_rules(["SOL-USDT"])
    with pytest.raises(OrderRejected, match="minimum notional"):
        await venue.place_order(order("k00000000000000020200", Side.BUY, "0", quote="4"))
    with pytest.raises(InsufficientFunds, match="USDT"):
        await venue.place_order(order("k00000000000000020300", Side.BUY, "0", quote="1000"))
    with pytest.raises(InsufficientFunds, match="ETH"):
        await venue.place_order(order("k00000000000000020400", Side.SELL, "0.5", symbol="ETH-USDT"))
    # a refused order is not remembered: the same id may be sent again once it can fill
    assert await venue.fetch_order("k00000000000000020300", "BTC-USDT") is None
    proceeds = Decimal("0.1") * Decimal("2999.5")
    assert await venue.balances() == {"USDT": Decimal(100) + proceeds - proceeds * Decimal("0.001"), "ETH": Decimal("0.4")}
    await venue.close()


@pytest.mark.asyncio
async def test_journal_keeps_orders_and_balances_across_a_restart(tmp_path: Path) -> None:
    journal = tmp_path / "paper.sqlite"
    first = make_venue(journal=journal, balances={"USDT": Decimal("5000")})
    report = await first.place_order(order("k00000000000000030000", Side.BUY, "0", quote="1000"))
    balances = await first.balances()
    # no close(): a killed process leaves the journal as it was after the last commit
    second = make_venue(journal=journal, balances={"USDT": Decimal("1")})
    try:
        assert await second.fetch_order("k00000000000000030000", "BTC-USDT") == report
        assert await second.balances() == balances
        with pytest.raises(OrderRejected, match="duplicate"):
            await second.place_order(order("k00000000000000030000", Side.BUY, "0", quote="1000"))
    finally:
        await second.close()
        await first.close()


@pytest.mark.asyncio
async def test_only_a_venue_without_latency_or_journal_answers_at_once(tmp_path: Path) -> None:
    assert make_venue().answers_at_once
    assert not make_venue(latency_ms=5).answers_at_once
    journaled = make_venue(journal=tmp_path / "paper.sqlite")
    assert not journaled.answers_at_once
    await journaled.close()


@pytest.mark.asyncio
async def test_memory_keeps_only_recent_orders_and_the_journal_answers_for_the_rest(tmp_path: Path) -> None:
    journal = tmp_path / "paper.sqlite"
    venue = make_venue(journal=journal, balances={"USDT": Decimal("50000")}, memory_orders=3)
    reports = [await venue.place_order(order(f"k{k:020d}", Side.BUY, "0", quote="100")) for k in range(6)]
    assert repr(venue).endswith("orders=3)")  # memory is bounded
    for r in reports:  # the oldest three come back from the journal, the same reports
        assert await venue.fetch_order(r.client_order_id, "BTC-USDT") == r
    assert await venue.fetch_order(reports[0].client_order_id, "ETH-USDT") is None
    assert await venue.fetch_order("k-never-placed", "BTC-USDT") is None
    balances = await venue.balances()
    with pytest.raises(OrderRejected, match="duplicate"):  # an id older than memory is still refused, at no cost
        await venue.place_order(order(reports[0].client_order_id, Side.BUY, "0", quote="100"))
    assert await venue.balances() == balances and repr(venue).endswith("orders=3)")
    restarted = make_venue(journal=journal, memory_orders=2)
    try:
        assert repr(restarted).endswith("orders=2)")  # a restart loads only the most recent reports
        assert await restarted.fetch_order(reports[0].client_order_id, "BTC-USDT") == reports[0]
        assert await restarted.balances() == balances
    finally:
        await restarted.close()
        await venue.close()


@pytest.mark.asyncio
async def test_without_a_journal_memory_is_bounded_too() -> None:
    venue = make_venue(memory_orders=2)
    placed = [await venue.place_order(order(f"k{k:020d}", Side.SELL, "0.001")) for k in range(4)]
    assert repr(venue).endswith("orders=2)")
    assert await venue.fetch_order(placed[-1].client_order_id, "BTC-USDT") == placed[-1]
    assert await venue.fetch_order(placed[0].client_order_id, "BTC-USDT") is None  # forgotten: no durable record
    await venue.close()
