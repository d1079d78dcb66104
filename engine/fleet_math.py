"""Row-wise arithmetic of a `Fleet`: the canonical band check and the price boxes, vectorised.

Every function works on a block of portfolios laid out as rows of `width` slots: the coins first
(in target order), then padding, then the quote in the last slot. Padding holds 0, target 0 and
threshold +inf; the quote's price is 1.0. With that layout the float arithmetic is the one of
`Portfolio.breached` and `Portfolio.compute_box`, element for element: values `q * p`, the total
summed slot by slot in asset order (a padding slot adds +0.0, which changes no sum), and
`|v / total - t| >= e` per member (a non-member's threshold is +inf, so it never counts).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from engine.execution import buy_orders, fill_deltas, intent_id, sell_orders
from engine.paper import paper_fill
from engine.planner import DEFAULT_RULES, dec, plan_rebalance
from engine.portfolio import BOX_SLACK, InvariantError
from engine.types import Fill, Intent, Reason, SymbolRules, split_symbol

F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]


def row_values(q: F64, px: F64) -> tuple[F64, F64]:
    """Values `q * p` per slot and the totals, summed left to right in asset order."""
    v = q * px
    total: F64 = np.add.accumulate(v, axis=1)[:, -1]  # accumulate adds strictly left to right
    return v, total


def rows_breached(v: F64, total: F64, targets: F64, thresholds: F64) -> BOOL:
    """The canonical check per row: total > 0 and some member has |v / total - t| >= e."""
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = np.abs(v / total[:, None] - targets) >= thresholds
    out: BOOL = dev.any(axis=1) & (total > 0.0)
    return out


def rows_grow(v: F64, total: F64, targets: F64, thresholds: F64) -> tuple[F64, BOOL]:
    """`Portfolio.compute_box` per row: the factor each coin price may move by, and the empty-box mask."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e = thresholds - BOX_SLACK
        up = targets + e
        lo = targets - e
        w = v / total[:, None]
        hit = (w >= up) | ((lo > 0.0) & (w <= lo))
        rest = total[:, None] - v
        k_up = np.where((up < 1.0) & (v > 0.0), up * rest / (v * (1.0 - up)), np.inf)
        k_lo = np.where((lo > 0.0) & (rest > 0.0), v * (1.0 - lo) / (lo * rest), np.inf)
    kmax = np.minimum(k_up.min(axis=1), k_lo.min(axis=1))
    empty: BOOL = hit.any(axis=1) | (kmax <= 1.0) | ~(total > 0.0)
    grow: F64 = np.sqrt(np.where(empty, 1.0, kmax))
    return grow, empty


def add_exact(q: float, delta: Decimal, what: str) -> float:
    """A float holding changed by an exact delta: the decimal sum of its shortest form, as a float."""
    new = dec(q) + delta
    if new < 0:
        raise InvariantError(f"{what} would be negative ({new})")
    return float(new)


def build_intent(
    name: str,
    seq: int,
    ts_ns: int,
    assets: Sequence[str],
    quote: str,
    q: Sequence[float],
    px: Sequence[float],
    targets: Mapping[str, float],
    fee_rate: Decimal,
    rules: Mapping[str, SymbolRules],
) -> Intent | None:
    """The threshold intent the engine's `_fire` would build for these holdings and prices (None: no legs).

    `assets` lists the coins then the quote, `q` and `px` match it (the quote's price is 1.0).
    """
    vals = [a * b for a, b in zip(q, px, strict=True)]
    total = 0.0
    for x in vals:
        total += x
    prices = {a: p for a, p in zip(assets[:-1], px[:-1], strict=True)}
    holdings = {a: dec(x) for a, x in zip(assets, q, strict=True)}
    plan = plan_rebalance(holdings, prices, targets, quote, rules=rules, fee_rate=fee_rate)
    if not plan.legs:
        return None
    weights = {a: (x / total if total > 0 else 0.0) for a, x in zip(assets, vals, strict=True)}
    index = {a: k for k, a in enumerate(assets)}
    drift = max((abs(vals[index[a]] / total - t) for a, t in targets.items()), default=0.0)
    return Intent(
        id=intent_id(name, seq, ts_ns),
        portfolio=name,
        ts_ns=ts_ns,
        reason=Reason.THRESHOLD,
        drift=drift,
        prices={f"{c}-{quote}": p for c, p in prices.items()},
        weights=weights,
        legs=plan.legs,
        expected_residual_drift=plan.residual_drift,
        quote_reserve=plan.quote_reserve,
    )


def execute_at_mid(
    intent: Intent,
    holdings: Mapping[str, Decimal],
    quote: str,
    fee_rate: Decimal,
    rules: Mapping[str, SymbolRules],
) -> list[Fill]:
    """Paper-execute an intent at the mids it saw: sells, then buys from the quote received.

    A pure function of the intent and the holdings before it, so re-running it after a crash gives
    the same fills with the same trade ids (`{client order id}-1`), which the ledger's unique keys
    then refuse to record twice.
    """
    held = dict(holdings)
    fills: list[Fill] = []
    for phase in ("sell", "buy"):
        orders = sell_orders(intent, held) if phase == "sell" else buy_orders(intent, held, quote, fee_rate, rules)
        for order in orders:
            mid = intent.prices[order.symbol]
            f = paper_fill(
                order, mid, mid, quote=split_symbol(order.symbol)[1], fee_rate=fee_rate, slippage_bps=Decimal(0),
                rules=rules.get(order.symbol, DEFAULT_RULES), trade_id=f"{order.client_order_id}-1",
                ts_ns=intent.ts_ns,
            )
            if f is not None:
                fills.append(f)
                for asset, d in fill_deltas(f, quote).items():
                    held[asset] = held.get(asset, Decimal(0)) + d
    return fills
