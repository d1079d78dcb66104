"""A seeded synthetic market: correlated geometric Brownian motion, one symbol per tick, round robin."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from engine.columns import F64, TickColumns
from engine.types import split_symbol

DEFAULT_START_PRICES: dict[str, float] = {
    "BTC": 42000.0,
    "ETH": 2300.0,
    "SOL": 100.0,
    "BNB": 300.0,
    "XRP": 0.6,
    "ADA": 0.5,
    "DOGE": 0.08,
}
OTHER_START_PRICE = 10.0
PRICE_CHARS = 8
MIN_SIGNIFICANT_DIGITS = 5
NS_PER_YEAR = 365 * 86_400 * 1_000_000_000
MIN_SWING_PERIOD_NS = 60 * 1_000_000_000


def synth_ticks(
    coins: Sequence[str],
    *,
    quote: str = "USDT",
    n_ticks: int,
    seed: int,
    start_ns: int = 1_704_067_200_000_000_000,
    step_ns: int = 100_000_000,
    vol: float = 0.8,
    corr: float = 0.6,
    spread_bps: float = 2.0,
    start_prices: Mapping[str, float] | None = None,
    swing: float = 0.0,
    swing_period_ns: int | None = None,
) -> TickColumns:
    """`n_ticks` ticks of `COIN-QUOTE` symbols in round-robin order, `step_ns` apart, bit-identical per seed.

    Each coin's log price is a GBM with annualised volatility `vol`; the increments of any two coins
    correlate by `corr` (one common factor); the first tick of each coin is at its start price. `swing` > 0
    multiplies each price by `exp(swing * (sin(2 pi t / period + phase) - sin(phase)))`, phases spread
    evenly over the coins, so the basket
    drifts back and forth across its bands; the period defaults to a quarter of the span (at least 60 s).
    Bid and ask sit `spread_bps` apart around the mid, rounded outwards to the coin's tick size (see
    `tick_decimals`).
    """
    coins = list(coins)
    _validate(coins, quote, n_ticks, step_ns, vol, corr, spread_bps, swing, swing_period_ns)
    k = len(coins)
    symbols = tuple(f"{c}-{quote}" for c in coins)
    rounds = -(-n_ticks // k)
    idx = np.arange(n_ticks, dtype=np.int64)
    ts_ns = start_ns + idx * step_ns
    sym = (idx % k).astype(np.int32)

    rng = np.random.default_rng(seed)
    common = rng.standard_normal(rounds)
    own = rng.standard_normal((rounds, k))
    shocks = math.sqrt(corr) * common[:, None] + math.sqrt(1.0 - corr) * own
    shocks[:1, :] = 0.0
    dt_years = k * step_ns / NS_PER_YEAR
    sigma = vol * math.sqrt(dt_years)
    log_paths = np.cumsum(shocks * sigma - 0.5 * sigma * sigma, axis=0)
    del shocks, own, common
    log_mid = log_paths.reshape(-1)[:n_ticks]
    if swing > 0.0:
        period_ns = swing_period_ns or max(MIN_SWING_PERIOD_NS, (n_ticks * step_ns) // 4)
        phases = 2.0 * math.pi * np.arange(k) / k
        angle = 2.0 * math.pi * ((idx * step_ns) % period_ns) / period_ns + phases[sym]
        log_mid = log_mid + swing * (np.sin(angle) - np.sin(phases[sym]))

    starts = _start_prices(coins, start_prices)
    decimals = np.array([tick_decimals(p) for p in starts], dtype=np.int64)
    mid = np.asarray(starts, dtype=np.float64)[sym] * np.exp(log_mid)
    half = spread_bps * 1e-4 / 2.0
    bid = _round_to_tick(mid * (1.0 - half), decimals[sym], np.floor)
    ask = _round_to_tick(mid * (1.0 + half), decimals[sym], np.ceil)
    return TickColumns(symbols, ts_ns, ts_ns.copy(), sym, bid, ask)


def tick_decimals(price: float) -> int:
    """Decimals of a coin's tick size, as an exchange would pick it: the price written in at most
    PRICE_CHARS characters (42000.01, 2300.123, 0.599938), but never fewer than MIN_SIGNIFICANT_DIGITS."""
    magnitude = math.floor(math.log10(price))
    int_digits = max(1, magnitude + 1)
    return max(PRICE_CHARS - 1 - int_digits, MIN_SIGNIFICANT_DIGITS - 1 - magnitude)


def _round_to_tick(x: F64, decimals: np.ndarray, rounder: np.ufunc) -> F64:
    """x rounded by `rounder` to `decimals` decimal places; divides by an exact power of ten so reprs stay short."""
    out = np.empty_like(x)
    for d in np.unique(decimals).tolist():
        sel = decimals == d
        if d >= 0:
            scale = 10.0 ** d
            out[sel] = np.maximum(rounder(x[sel] * scale), 1.0) / scale
        else:
            scale = 10.0 ** -d
            out[sel] = np.maximum(rounder(x[sel] / scale), 1.0) * scale
    return out


def _start_prices(coins: list[str], given: Mapping[str, float] | None) -> list[float]:
    """Start price per coin: `given`, else the defaults, else OTHER_START_PRICE."""
    prices = []
    for c in coins:
        p = float((given or {}).get(c, DEFAULT_START_PRICES.get(c, OTHER_START_PRICE)))
        if not math.isfinite(p) or p <= 0.0:
            raise ValueError(f"start price of {c} must be a positive number, got {p!r}")
        prices.append(p)
    return prices


def _validate(
    coins: list[str], quote: str, n_ticks: int, step_ns: int, vol: float, corr: float,
    spread_bps: float, swing: float, swing_period_ns: int | None,
) -> None:
    """Raise ValueError naming the first bad argument."""
    if not coins:
        raise ValueError("synth_ticks needs at least one coin")
    if len(set(coins)) != len(coins):
        raise ValueError(f"coins must be distinct, got {coins}")
    for c in coins:
        if c == quote:
            raise ValueError(f"coin {c} is the quote currency {quote}")
        split_symbol(f"{c}-{quote}")
    if n_ticks < 0:
        raise ValueError(f"n_ticks must be >= 0, got {n_ticks}")
    if step_ns <= 0:
        raise ValueError(f"step_ns must be > 0, got {step_ns}")
    if not 0.0 <= corr <= 1.0:
        raise ValueError(f"corr must be within [0, 1], got {corr}")
    if not (vol >= 0.0 and spread_bps >= 0.0 and swing >= 0.0):
        raise ValueError(f"vol, spread_bps and swing must be >= 0, got {vol}, {spread_bps}, {swing}")
    if swing_period_ns is not None and swing_period_ns <= 0:
        raise ValueError(f"swing_period_ns must be > 0, got {swing_period_ns}")
