"""Paper fills: sells at the bid, buys at the ask of the current book, with fee and slippage."""
from __future__ import annotations

from decimal import Decimal

from engine.planner import dec, floor_step
from engine.types import Fill, Order, Side, SymbolRules, new_fill

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
    fill: Fill = new_fill(  # Fill(...) with every field in order, minus the per-field setattr
        trade_id, order.client_order_id, order.symbol, order.side, qty, price, notional * fee_rate, quote, ts_ns,
        f"p{trade_id}")
    return fill
