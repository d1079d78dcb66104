"""Target weights: custom, equal, market cap (with a cap) and core-satellite.

Every allocation returns `coin -> weight` with every weight > 0 and `math.fsum` of the
weights within 1e-12 of 1. Bad input raises `AllocationError` with a message that says
what to fix.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence

SUPPLY_HEADER = ("coin", "circulating_supply")
_SUM_TOLERANCE = 1e-12


class AllocationError(ValueError):
    """Target weights cannot be built from the given input."""


def custom(targets: Mapping[str, float], tolerance: float = 1e-9) -> dict[str, float]:
    """Fixed weights as given: each in (0, 1], summing to 1 within `tolerance`."""
    if not targets:
        raise AllocationError("custom targets are empty: name at least one coin and its weight")
    _check_coins(targets)
    bad = {c: w for c, w in targets.items() if not (math.isfinite(w) and 0.0 < w <= 1.0)}
    if bad:
        raise AllocationError(f"custom target weights must be in (0, 1]; fix {_fmt(bad)}")
    total = math.fsum(targets.values())
    if abs(total - 1.0) > tolerance:
        raise AllocationError(
            f"custom target weights sum to {total!r}, not 1 (tolerance {tolerance:g}); "
            f"fix the weights {_fmt(dict(targets))} so that they add up to 1"
        )
    return _normalise(dict(targets))


def equal(coins: Sequence[str], quote: str | None = None, quote_weight: float = 0.0) -> dict[str, float]:
    """1/n for each coin; with `quote_weight` > 0 the quote (stablecoin sleeve) gets that share first."""
    if not coins:
        raise AllocationError("equal weights need at least one coin")
    _check_coins(coins)
    sleeve = _quote_sleeve(coins, quote, quote_weight)
    share = (1.0 - quote_weight) / len(coins)
    weights = dict.fromkeys(coins, share)
    weights.update(sleeve)
    return _normalise(weights)


def market_cap(
    prices: Mapping[str, float],
    supply: Mapping[str, float],
    *,
    cap: float | None = None,
    quote: str | None = None,
    quote_weight: float = 0.0,
    coins: Sequence[str] | None = None,
) -> dict[str, float]:
    """Weights proportional to price x circulating supply, each at most `cap` (excess redistributed).

    The basket is `coins` when given (other entries of `prices` and `supply` are ignored),
    else every coin named in `prices` or `supply` except `quote`; each basket coin needs a
    price and a supply. With `quote_weight` > 0 the quote gets that share and the coins
    split the rest; `cap` bounds each coin's final weight.
    """
    if coins is None:
        coins = [c for c in dict.fromkeys([*prices, *supply]) if c != quote]
    if not coins:
        raise AllocationError("market-cap weights need at least one coin with a price and a supply")
    _check_coins(coins)
    missing_price = [c for c in coins if c not in prices]
    missing_supply = [c for c in coins if c not in supply]
    if missing_price or missing_supply:
        parts = []
        if missing_price:
            parts.append(f"no price for {', '.join(missing_price)}")
        if missing_supply:
            parts.append(f"no circulating supply for {', '.join(missing_supply)}")
        raise AllocationError("market-cap weights: " + "; ".join(parts))
    bad = [c for c in coins if not _positive(prices[c]) or not _positive(supply[c])]
    if bad:
        raise AllocationError(
            "market-cap weights need a finite positive price and supply; fix "
            + ", ".join(f"{c} (price {prices[c]!r}, supply {supply[c]!r})" for c in bad)
        )
    sleeve = _quote_sleeve(coins, quote, quote_weight)
    budget = 1.0 - quote_weight
    caps = {c: prices[c] * supply[c] for c in coins}
    if not all(math.isfinite(m) for m in caps.values()):
        raise AllocationError("market-cap weights: price x supply overflows for " + ", ".join(
            c for c, m in caps.items() if not math.isfinite(m)))
    if cap is None:
        total = math.fsum(caps.values())
        weights = {c: budget * m / total for c, m in caps.items()}
    else:
        weights = _capped(caps, cap, budget)
    weights.update(sleeve)
    return _normalise(weights)


def _capped(caps: Mapping[str, float], cap: float, budget: float) -> dict[str, float]:
    """Water-filling: coins above `cap` are pinned at it, the rest share what is left by market cap."""
    if not (math.isfinite(cap) and 0.0 < cap <= 1.0):
        raise AllocationError(f"market-cap cap must be in (0, 1], got {cap!r}")
    n = len(caps)
    if cap * n < budget * (1.0 - _SUM_TOLERANCE):
        raise AllocationError(
            f"market-cap cap {cap!r} is impossible for {n} coins: {n} x {cap!r} = {cap * n!r} "
            f"is less than the {budget!r} they must hold; raise the cap or add coins"
        )
    pinned: set[str] = set()
    while True:
        free = [c for c in caps if c not in pinned]
        if not free:
            return dict.fromkeys(caps, cap)
        left = budget - cap * len(pinned)
        free_total = math.fsum(caps[c] for c in free)
        shares = {c: left * caps[c] / free_total for c in free}
        over = [c for c in free if shares[c] > cap]
        if not over:
            weights = dict.fromkeys(pinned, cap)
            weights.update(shares)
            return {c: weights[c] for c in caps}
        pinned.update(over)


def core_satellite(
    core: str,
    core_weight: float,
    satellites: Sequence[str],
    satellite_weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """The core holds `core_weight`; the satellites share the rest equally or by `satellite_weights`."""
    if not (math.isfinite(core_weight) and 0.0 < core_weight < 1.0):
        raise AllocationError(f"core weight must be strictly between 0 and 1, got {core_weight!r}")
    if not satellites:
        raise AllocationError("core-satellite needs at least one satellite coin")
    _check_coins([core, *satellites])
    rest = 1.0 - core_weight
    if satellite_weights is None:
        weights = dict.fromkeys(satellites, rest / len(satellites))
    else:
        missing = [c for c in satellites if c not in satellite_weights]
        extra = sorted(set(satellite_weights) - set(satellites))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"not satellites: {', '.join(extra)}")
            raise AllocationError("satellite weights must name exactly the satellites; " + "; ".join(parts))
        bad = {c: w for c, w in satellite_weights.items() if not _positive(w)}
        if bad:
            raise AllocationError(f"satellite weights must be finite and > 0; fix {_fmt(bad)}")
        total = math.fsum(satellite_weights[c] for c in satellites)
        weights = {c: rest * satellite_weights[c] / total for c in satellites}
    weights[core] = core_weight
    return _normalise(weights)


def read_supply_file(path: str | os.PathLike[str]) -> dict[str, float]:
    """Circulating supplies from a CSV file with the header `coin,circulating_supply`.

    Sample::

        # supplies on 2024-06-01
        coin,circulating_supply
        BTC,19700000
        ETH,120100000   # trailing comments are fine
    """
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AllocationError(f"cannot read supply file {os.fspath(path)!r}: {e}") from e
    return _parse_supply(lines, os.fspath(path))


def _parse_supply(lines: Iterable[str], where: str) -> dict[str, float]:
    supply: dict[str, float] = {}
    header_seen = False
    for lineno, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if not header_seen:
            if tuple(f.lower() for f in fields) != SUPPLY_HEADER:
                raise AllocationError(
                    f"{where}:{lineno}: expected the header 'coin,circulating_supply', got {raw.strip()!r}"
                )
            header_seen = True
            continue
        if len(fields) != 2:
            raise AllocationError(f"{where}:{lineno}: expected 2 fields 'coin,circulating_supply', got {raw.strip()!r}")
        coin, text = fields
        if not coin:
            raise AllocationError(f"{where}:{lineno}: empty coin name in {raw.strip()!r}")
        try:
            value = float(text.replace("_", ""))
        except ValueError:
            raise AllocationError(f"{where}:{lineno}: supply of {coin} is not a number: {text!r}") from None
        if not _positive(value):
            raise AllocationError(f"{where}:{lineno}: supply of {coin} must be finite and > 0, got {text!r}")
        if coin in supply:
            raise AllocationError(f"{where}:{lineno}: {coin} is listed twice")
        supply[coin] = value
    if not header_seen:
        raise AllocationError(f"{where}: no header 'coin,circulating_supply' (the file is empty)")
    if not supply:
        raise AllocationError(f"{where}: no supply rows after the header")
    return supply


def _quote_sleeve(coins: Iterable[str], quote: str | None, quote_weight: float) -> dict[str, float]:
    """The quote's share as `{quote: weight}` (empty when there is no sleeve)."""
    if not (math.isfinite(quote_weight) and 0.0 <= quote_weight < 1.0):
        raise AllocationError(f"quote weight must be in [0, 1), got {quote_weight!r}")
    if quote_weight == 0.0:
        return {}
    if not quote:
        raise AllocationError(f"quote weight {quote_weight!r} given without a quote coin to hold it")
    if quote in set(coins):
        raise AllocationError(f"{quote} is both a basket coin and the quote sleeve; name it only once")
    return {quote: quote_weight}


def _check_coins(coins: Iterable[str]) -> None:
    seen: set[str] = set()
    for c in coins:
        if not isinstance(c, str) or not c.strip():
            raise AllocationError(f"coin names must be non-empty strings, got {c!r}")
        if c in seen:
            raise AllocationError(f"coin {c} is named twice")
        seen.add(c)


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0.0


def _normalise(weights: dict[str, float]) -> dict[str, float]:
    """Divide by the exact sum, then put the last rounding residue on the largest weight."""
    total = math.fsum(weights.values())
    out = {c: w / total for c, w in weights.items()}
    residue = 1.0 - math.fsum(out.values())
    if residue:
        largest = max(out, key=out.__getitem__)
        out[largest] += residue
    if abs(math.fsum(out.values()) - 1.0) > _SUM_TOLERANCE or min(out.values()) <= 0.0:
        raise AllocationError(f"weights cannot be normalised to sum to 1: {_fmt(weights)}")
    return out


def _fmt(weights: Mapping[str, float]) -> str:
    return ", ".join(f"{c}={w!r}" for c, w in weights.items())
