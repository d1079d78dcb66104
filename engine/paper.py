"""Paper fills: sells at the bid, buys at the ask of the current book, with fee and slippage."""
from __future__ import annotations

from decimal import Decimal

from engine.planner import dec, floor_step
from engine.types import Fill, Order, Side, SymbolRules

BPS = Decimal(10000)


def paper_fill(
    order: Order,
    bid: float,
    ask: float,
    *,
    quote: str,
    fee_rate: Decimal,
    slippage_bps: Decimal,
    rules: SymbolRules,
    trade_id: str,
    ts_ns: int,
) -> Fill | None:
    """Fill an order completely at the touch (plus slippage); None when it would be empty.

    A buy with `quote_quantity` spends at most that much before the fee; fees are in the quote.
    """
    slip = slippage_bps / BPS
    if order.side is Side.SELL:
        price = dec(bid) * (1 - slip)
        qty = floor_step(order.quantity, rules.step_size)
    else:
        price = dec(ask) * (1 + slip)
        if order.quote_quantity is not None:
            qty = floor_step(order.quote_quantity / price, rules.step_size)
        else:
            qty = floor_step(order.quantity, rules.step_size)
    if qty <= 0:
        return None
    notional = qty * price
    if notional < rules.min_notional:
        return None
    return Fill(
        trade_id=trade_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        quantity=qty,
        price=price,
        fee=notional * fee_rate,
        fee_asset=quote,
        ts_ns=ts_ns,
        order_id=f"p{trade_id}",
    )
