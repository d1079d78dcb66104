"""The fake Binance spot server as the ccxt tests and the service tests set it up."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import TYPE_CHECKING

from engine.types import Intent
from ops.venues.binance_fake import BinanceFake, SymbolSpec
from tests.service_kit import LEDGER_TOML, SPOT_TARGETS, portfolio_toml, sim_feed_toml, toml_keys

if TYPE_CHECKING:
    from ops.service import Service


def spot_specs(eth_min_notional: str) -> dict[str, SymbolSpec]:
    """BTC-USDT (step 0.00001, min notional 5) and ETH-USDT (step 0.0001), both quoted to the cent."""
    return {
        "BTC-USDT": SymbolSpec(step_size=Decimal("0.00001"), tick_size=Decimal("0.01"), min_notional=Decimal("5")),
        "ETH-USDT": SymbolSpec(step_size=Decimal("0.0001"), tick_size=Decimal("0.01"),
                               min_notional=Decimal(eth_min_notional)),
    }


@contextlib.asynccontextmanager
async def quoting(fake: BinanceFake) -> AsyncIterator[BinanceFake]:
    """Start `fake` quoting BTC-USDT at 50000/50010 and ETH-USDT at 3000/3001; stop it at the end."""
    await fake.start()
    fake.set_price("BTC-USDT", "50000", "50010")
    fake.set_price("ETH-USDT", "3000", "3001")
    try:
        yield fake
    finally:
        await fake.stop()


# ----- the whole service trading through ccxt against the fake -----

SERVICE_SPECS = spot_specs("5")


def service_fake(key: str, secret: str) -> BinanceFake:
    """A fake holding 10,000 USDT for the service to trade SERVICE_SPECS at a 0.1% fee (not started)."""
    return BinanceFake(key, secret, {"USDT": Decimal(10000)}, SERVICE_SPECS, fee_rate=Decimal("0.001"))


def symbols_toml(specs: dict[str, SymbolSpec]) -> str:
    """The [venue.symbols.*] tables giving keel the fake's step sizes and minimum notionals."""
    return "".join(f"[venue.symbols.{symbol}]\nstep_size = {spec.step_size}\nmin_notional = {spec.min_notional}\n"
                   for symbol, spec in specs.items())


def ccxt_service_toml(name: str, tail: str, **venue: object) -> str:
    """Portfolio `name` (BTC/ETH/USDT 50/30/20) on a ccxt venue with these keys, fed by the simulator; then `tail`."""
    return (portfolio_toml(name, targets=SPOT_TARGETS, threshold=0.02, window_secs=0.3)
            + '[venue]\nkind = "ccxt"\n' + toml_keys(venue) + symbols_toml(SERVICE_SPECS)
            + sim_feed_toml(sim_rate_hz=50, sim_swing=0.15, speed=40, stale_secs=0) + LEDGER_TOML + tail)


def keep_prices_in_line(service: Service, fake: BinanceFake) -> None:
    """The exchange quotes what the feed shows at the moment keel decides."""
    real = service.dispatch

    def dispatch(intents: list[Intent], cause_ns: int) -> None:
        book = service.engine.book if service.engine is not None else None
        if book is not None:
            for symbol in SERVICE_SPECS:
                i = book.index(symbol)
                if book.has_price(i):
                    fake.set_price(symbol, Decimal(repr(round(book.bid[i], 2))), Decimal(repr(round(book.ask[i], 2))))
        real(intents, cause_ns)

    service.dispatch = dispatch  # type: ignore[method-assign]
