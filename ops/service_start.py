"""`keel run`'s start-up: the ledger learns a new portfolio's capital, the engine is rebuilt from the ledger
alone (holdings, HODL basket, intent count, post-rebalance window), and the venue is built from the config."""
from __future__ import annotations

import logging
import os
import time
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.engine import Engine
from engine.types import Reason, Transfer
from ops.config import Config
from ops.ledger import Ledger
from ops.ledger_read import holdings_from

log = logging.getLogger(__name__)
_DECIDING: ContextVar[str] = ContextVar("keel_deciding_intent", default="")


class Halt(Exception):
    """The service must stop trading (a ledger it cannot write, a venue it cannot trust)."""


async def record_start(ledger: Ledger, engine: Engine) -> None:
    """First start of a portfolio: its capital (or adopted holdings) enters the ledger."""
    now = time.time_ns()
    for name, rt in engine.runtimes.items():
        spec = rt.spec
        if not await ledger.record_portfolio(name, spec.quote, {"mode": spec.mode}, created_ns=now):
            continue
        if spec.start == "quote":
            await ledger.record_transfer(Transfer(f"{name}-capital", name, spec.quote, spec.capital, now), "capital")
        else:
            for asset, qty in spec.holdings.items():
                await ledger.record_transfer(Transfer(f"{name}-adopt-{asset}", name, asset, qty, now), "adopt")


async def restore(ledger: Ledger, engine: Engine) -> None:
    """Holdings, HODL basket, intent count and window from the ledger alone."""
    for name, rt in engine.runtimes.items():
        holdings = await ledger.rebuild_holdings(name)
        intents = await ledger.intent_count(name)
        last = await ledger.last_intent(name)
        quiet = await ledger.last_quiet_check(name)  # a check that found nothing to trade started a window too
        starts = [r for r in await ledger.intents_with_status(
            "complete", "partial", "interrupted", "parked", "executing", "new", portfolio=name)
            if r.intent.reason is Reason.START]
        started = rt.spec.start == "holdings" or bool(starts) or quiet is not None  # only a started one checks
        hodl = None
        if starts or (quiet is not None and rt.spec.start == "quote"):  # bought in, or a start with nothing to buy
            hodl = await _holdings_after(ledger, name, rt.spec.quote, starts[0].intent.id if starts else None)
        engine.restore(name, holdings, hodl, started=started, intents=intents,
                       last_intent_ns=last.intent.ts_ns if last is not None else None, last_quiet_check_ns=quiet)
        log.info("%s: restored %s (started=%s, %d intents)", name,
                 {a: str(q) for a, q in holdings.items() if q}, started, intents)


async def _holdings_after(ledger: Ledger, name: str, quote: str, start_id: str | None) -> dict[str, Decimal]:
    """Transfers plus the fills of the start intent (none for a start that found nothing to buy): the basket HODL
    compares against."""
    transfers = await ledger.transfers(name)
    fills = [rec for rec in await ledger.fills(name) if start_id and rec.fill.client_order_id[1:17] == start_id]
    return holdings_from(name, quote, transfers, fills)


def build_venue(config: Config, engine: Engine, quotes: dict[str, dict[str, tuple[float, float]]]) -> Any:
    """The configured venue: paper (filled at the touch each intent was decided at, from `quotes`) or ccxt."""
    v = config.venue
    rules = {s: r for rt in engine.runtimes.values() for s, r in rt.spec.rules.items()}
    if v.kind == "paper":
        from ops.venues.paper import PaperVenue

        book = engine.book

        def price_of(symbol: str) -> tuple[float, float]:
            touch = quotes.get(_DECIDING.get(), {}).get(symbol)
            if touch is not None:
                return touch
            i = book.index(symbol)
            if i < 0 or not book.has_price(i):
                raise KeyError(f"no price for {symbol}")
            return book.bid[i], book.ask[i]

        class DecisionPricedPaperVenue(PaperVenue):
            """Paper fills at the touch of the moment the intent was decided, as the backtest fills,
            so a recorded live run and its replay follow the same holdings (latency delays the answer)."""

            async def place_order(self, order: Any) -> Any:
                token = _DECIDING.set(order.intent_id)
                try:
                    return await super().place_order(order)
                finally:
                    _DECIDING.reset(token)

        journal = Path(config.ledger.path).with_suffix(".paper-venue.sqlite")
        return DecisionPricedPaperVenue(price_of, fee_rate=v.fee_rate, slippage_bps=Decimal(repr(v.slippage_bps)),
                                        rules=rules, latency_ms=v.latency_ms, journal=journal)
    from ops.venues.ccxt_venue import CcxtVenue

    key = os.environ.get(v.api_key_env)
    secret = os.environ.get(v.api_secret_env)
    if not key or not secret:
        raise Halt(f"venue.kind = ccxt needs the API key and secret in ${v.api_key_env} and ${v.api_secret_env}")
    book = engine.book
    return CcxtVenue(v.exchange, api_key=key, api_secret=secret, base_url=v.base_url, sandbox=v.sandbox,
                     timeout_secs=v.timeout_secs, order_type=v.order_type, ioc_spread_bps=v.ioc_spread_bps,
                     price_of=lambda s: (book.bid[book.index(s)], book.ask[book.index(s)]))
