"""The synchronous execution core: intents become orders, fills become holdings.

An intent runs in two phases: its sells, then its buys sized from the quote actually in hand
after the sells (so a partial fill or a worse price never overdraws the account).
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal

from engine.planner import DEFAULT_RULES, ZERO, floor_step
from engine.types import Fill, Intent, Order, Side, SymbolRules, split_symbol

QUOTE_STEP = Decimal("0.00000001")


def intent_id(portfolio: str, seq: int, ts_ns: int) -> str:
    """A deterministic 16-hex-digit id for the seq-th intent of a portfolio."""
    return hashlib.blake2b(f"{portfolio}|{seq}|{ts_ns}".encode(), digest_size=8).hexdigest()


def client_order_id(intent: str, leg: int, attempt: int = 0) -> str:
    """`k{intent}{leg:02d}{attempt:x}`: the same leg attempt always gets the same id."""
    return f"k{intent}{leg:02d}{attempt:x}"


def fill_deltas(fill: Fill, quote: str) -> dict[str, Decimal]:
    """How a fill changes holdings (asset -> exact delta)."""
    base, fill_quote = split_symbol(fill.symbol)
    if fill_quote != quote:
        raise ValueError(f"fill {fill.trade_id} is in {fill_quote}, the portfolio's quote is {quote}")
    notional = fill.quantity * fill.price
    if fill.side is Side.BUY:
        deltas = {base: fill.quantity, quote: -notional}
    else:
        deltas = {base: -fill.quantity, quote: notional}
    if fill.fee_asset in deltas:
        deltas[fill.fee_asset] -= fill.fee
    return deltas


def sell_orders(intent: Intent, holdings: Mapping[str, Decimal]) -> list[Order]:
    """The sell legs as orders, never for more than is held."""
    orders = []
    for k, leg in enumerate(intent.legs):
        if leg.side is not Side.SELL:
            continue
        base, _ = split_symbol(leg.symbol)
        qty = min(leg.quantity, holdings.get(base, ZERO))
        if qty > 0:
            orders.append(Order(client_order_id(intent.id, k), intent.id, intent.portfolio, k, leg.symbol,
                                Side.SELL, qty))
    return orders


def buy_orders(
    intent: Intent,
    holdings: Mapping[str, Decimal],
    quote: str,
    fee_rate: Decimal,
    rules: Mapping[str, SymbolRules],
    attempt: int = 0,
) -> list[Order]:
    """The buy legs as quote-sized orders, scaled to the quote actually available after the sells."""
    legs = [(k, leg) for k, leg in enumerate(intent.legs) if leg.side is Side.BUY]
    if not legs:
        return []
    planned = sum((leg.notional for _, leg in legs), ZERO) * (1 + fee_rate)
    budget = holdings.get(quote, ZERO) - intent.quote_reserve
    if budget <= 0 or planned <= 0:
        return []
    scale = min(Decimal(1), budget / planned)
    orders = []
    for k, leg in legs:
        spend = floor_step(leg.notional * scale, QUOTE_STEP)
        r = rules.get(leg.symbol, DEFAULT_RULES)
        if spend <= 0 or spend < r.min_notional:
            continue
        qty = floor_step(spend / leg.expected_price, r.step_size)
        orders.append(Order(client_order_id(intent.id, k, attempt), intent.id, intent.portfolio, k, leg.symbol,
                            Side.BUY, qty, quote_quantity=spend))
    return orders
