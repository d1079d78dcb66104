"""The planner: what to trade to bring a portfolio back to its targets (SPEC.md, Planning).

Sells first, then buys netted through the quote; buys never need more quote than the free quote
plus the sells' proceeds after fees; quantities round down to the venue step; legs under the
minimum notional are dropped and the rest re-planned; an asset is never both sold and bought.
Money is exact: prices enter as the shortest decimal of their float.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from engine.types import Leg, Side, SymbolRules, new_leg

ZERO = Decimal(0)
DEFAULT_RULES = SymbolRules()


_DEC_CACHE: dict[float, Decimal] = {}
_DEC_CACHE_MAX = 1 << 12  # 4,096 prices (~0.6 MB): a long run never holds more


def dec(x: float) -> Decimal:
    """A float as the shortest decimal that round-trips (deterministic; recent values are cached)."""
    d = _DEC_CACHE.get(x)
    if d is None:
        d = Decimal(repr(x))
        if x != 0.0:  # 0.0 and -0.0 share a key but not a repr (and NaN never finds itself)
            if len(_DEC_CACHE) >= _DEC_CACHE_MAX:
                _DEC_CACHE.clear()
            _DEC_CACHE[x] = d
    return d


def floor_step(quantity: Decimal, step: Decimal) -> Decimal:
    """Round a quantity down to a multiple of the step."""
    if quantity <= 0:
        return ZERO
    return (quantity / step).to_integral_value(rounding=ROUND_FLOOR) * step


@dataclass(frozen=True, slots=True)
class Plan:
    """The legs of a rebalance and what the portfolio should look like after them."""

    legs: tuple[Leg, ...]
    expected_holdings: dict[str, Decimal]
    residual_drift: float
    quote_reserve: Decimal


def _drift(holdings: Mapping[str, Decimal], prices: Mapping[str, float], targets: Mapping[str, float],
           quote: str) -> float:
    vals = {a: float(q) * (prices[a] if a != quote else 1.0) for a, q in holdings.items()}
    total = sum(vals.values())
    if total <= 0:
        return 0.0
    return max((abs(vals.get(a, 0.0) / total - t) for a, t in targets.items()), default=0.0)


def plan_rebalance(
    holdings: Mapping[str, Decimal],
    prices: Mapping[str, float],
    targets: Mapping[str, float],
    quote: str,
    *,
    desired: Mapping[str, float] | None = None,
    rules: Mapping[str, SymbolRules] | None = None,
    fee_rate: Decimal = ZERO,
    sells: bool = True,
) -> Plan:
    """Plan the legs that move `holdings` (coin -> qty, quote included) to `desired` weights
    (default: the targets, i.e. the band centre) at mid `prices` (coin -> quote per coin).
    With `sells=False` only buys are planned, from the free quote (a deposit)."""
    rules = rules or {}
    want = desired if desired is not None else targets
    px = {c: dec(p) for c, p in prices.items()}
    for c in want:
        if c != quote and c not in px:
            raise ValueError(f"no price for {c}: cannot plan")
    value = {a: (q * px[a] if a != quote else q) for a, q in holdings.items()}
    total = sum(value.values(), ZERO)
    if total <= 0:
        return Plan((), dict(holdings), 0.0, ZERO)
    quote_reserve = dec(want.get(quote, 0.0)) * total
    delta = {c: dec(w) * total - value.get(c, ZERO) for c, w in want.items() if c != quote}
    for c, q in holdings.items():  # held coins outside the targets go back to the quote
        if c != quote and c not in want and q > 0:
            delta[c] = -value[c]

    sell_legs: list[Leg] = []
    for c in sorted(delta):
        d = delta[c]
        if d >= 0 or not sells:
            continue
        sym = f"{c}-{quote}"
        r = rules.get(sym, DEFAULT_RULES)
        qty = floor_step(min(-d / px[c], holdings.get(c, ZERO)), r.step_size)
        notional = qty * px[c]
        if qty > 0 and notional >= r.min_notional:
            sell_legs.append(new_leg(sym, Side.SELL, qty, px[c], notional))
    proceeds = sum((leg.notional for leg in sell_legs), ZERO) * (1 - fee_rate)
    budget = holdings.get(quote, ZERO) + proceeds - quote_reserve

    wanted = {c: d for c, d in sorted(delta.items()) if d > 0}
    buys: list[Leg] = []
    while wanted:
        need = sum(wanted.values(), ZERO) * (1 + fee_rate)
        scale = min(Decimal(1), budget / need) if budget > 0 else ZERO
        buys = []
        dropped = []
        for c, d in wanted.items():
            sym = f"{c}-{quote}"
            r = rules.get(sym, DEFAULT_RULES)
            qty = floor_step(d * scale / px[c], r.step_size)
            notional = qty * px[c]
            if qty > 0 and notional >= r.min_notional:
                buys.append(new_leg(sym, Side.BUY, qty, px[c], notional))
            else:
                dropped.append(c)
        if not dropped or scale >= 1:
            break
        for c in dropped:  # freed budget goes to the legs that remain
            del wanted[c]

    expected = dict(holdings)
    for leg in sell_legs:
        c = leg.symbol.split("-")[0]
        expected[c] = expected.get(c, ZERO) - leg.quantity
        expected[quote] = expected.get(quote, ZERO) + leg.notional * (1 - fee_rate)
    for leg in buys:
        c = leg.symbol.split("-")[0]
        expected[c] = expected.get(c, ZERO) + leg.quantity
        expected[quote] = expected.get(quote, ZERO) - leg.notional * (1 + fee_rate)
    residual = _drift(expected, prices, targets, quote)
    return Plan((*sell_legs, *buys), expected, residual, quote_reserve)
