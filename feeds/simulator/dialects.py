"""The simulator's dialect table: which wire format serves each exchange, and which URL path leads to it.

Every exchange lives under its own prefix on the one TLS port: `/binance/stream?streams=...`, `/kraken`,
`/okx/ws/v5/public` for websockets, and `/{exchange}{exchange_info_path}` for the symbol documents.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import orjson

from feeds.simulator.binance import BinanceDialect
from feeds.simulator.exchange_info import Exchange, exchange_info_path
from feeds.simulator.kraken import KrakenDialect
from feeds.simulator.okx import OkxDialect

Dialect = BinanceDialect | KrakenDialect | OkxDialect

DIALECTS: dict[Exchange, Callable[[Sequence[str]], Dialect]] = {
    "binance": BinanceDialect,
    "kraken": KrakenDialect,
    "okx": OkxDialect,
}


def make_dialects(exchanges: Sequence[Exchange], symbols: Sequence[str]) -> dict[Exchange, Dialect]:
    """One dialect per named exchange (duplicates ignored), in the order given."""
    dialects: dict[Exchange, Dialect] = {}
    for e in dict.fromkeys(exchanges):
        exchange_info_path(e)  # raises a clear error for an unknown exchange
        dialects[e] = DIALECTS[e](symbols)
    return dialects


def rest_documents(dialects: Mapping[Exchange, Dialect]) -> dict[str, bytes]:
    """Each exchange's symbol document as JSON, keyed by its full request path (query included)."""
    return {f"/{e}{exchange_info_path(e)}": orjson.dumps(d.exchange_info()) for e, d in dialects.items()}


def find_document(documents: Mapping[str, bytes], path: str) -> bytes | None:
    """The document at `path`: an exact match first (OKX's lives behind `?instType=SPOT`), then the path alone."""
    found = documents.get(path)
    if found is None:
        found = documents.get(path.split("?", 1)[0])
    return found


def websocket_exchange(dialects: Mapping[Exchange, Dialect], path: str) -> Exchange | None:
    """The exchange whose websocket lives at `path` (`/okx/ws/v5/public` -> okx), or None."""
    prefix, _, rest = path.lstrip("/").partition("/")
    for exchange, dialect in dialects.items():
        if exchange == prefix and dialect.accepts_path("/" + rest if rest else ""):
            return exchange
    return None
