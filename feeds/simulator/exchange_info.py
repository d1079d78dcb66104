"""Venue symbol names and the exchange-info documents cryptofeed's symbol loaders read.

The simulator serves these documents over HTTPS; the cryptofeed adapter builds the same documents from
the configured symbols to seed `cryptofeed.symbols.Symbols` without calling a real exchange.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from engine.types import split_symbol

Exchange = Literal["binance", "kraken", "okx"]
EXCHANGES: tuple[Exchange, ...] = ("binance", "kraken", "okx")

BINANCE_EXCHANGE_INFO_PATH = "/api/v3/exchangeInfo"
KRAKEN_ASSET_PAIRS_PATH = "/0/public/AssetPairs"
OKX_INSTRUMENTS_PATH = "/api/v5/public/instruments?instType=SPOT"

# Kraken's websocket names use its legacy asset codes; cryptofeed maps them back (XBT->BTC, XDG->DOGE).
_KRAKEN_ASSET = {"BTC": "XBT", "DOGE": "XDG"}


def binance_name(symbol: str) -> str:
    """`BTC-USDT` -> `BTCUSDT`."""
    base, quote = split_symbol(symbol)
    return base + quote


def kraken_wsname(symbol: str) -> str:
    """`BTC-USDT` -> `XBT/USDT` (Kraken's websocket pair name)."""
    base, quote = split_symbol(symbol)
    return f"{_KRAKEN_ASSET.get(base, base)}/{_KRAKEN_ASSET.get(quote, quote)}"


def okx_inst_id(symbol: str) -> str:
    """`BTC-USDT` -> `BTC-USDT` (OKX's spot instrument id is BASE-QUOTE, as keel's symbols)."""
    base, quote = split_symbol(symbol)
    return f"{base}-{quote}"


def exchange_info_path(exchange: Exchange) -> str:
    """The REST path of the exchange-info document cryptofeed reads for `exchange`."""
    if exchange == "binance":
        return BINANCE_EXCHANGE_INFO_PATH
    if exchange == "kraken":
        return KRAKEN_ASSET_PAIRS_PATH
    if exchange == "okx":
        return OKX_INSTRUMENTS_PATH
    raise ValueError(f"unknown exchange {exchange!r} (known: {', '.join(EXCHANGES)})")


def binance_exchange_info(symbols: Sequence[str]) -> dict[str, Any]:
    """A Binance spot `/api/v3/exchangeInfo` document listing `symbols` as TRADING."""
    entries = []
    for symbol in symbols:
        base, quote = split_symbol(symbol)
        entries.append({
            "symbol": binance_name(symbol),
            "status": "TRADING",
            "baseAsset": base,
            "baseAssetPrecision": 8,
            "quoteAsset": quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "isSpotTradingAllowed": True,
            # cryptofeed reads the tick size from filters[0]: PRICE_FILTER must stay first.
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": "0.00000001", "maxPrice": "10000000.00000000",
                 "tickSize": "0.00000001"},
                {"filterType": "LOT_SIZE", "minQty": "0.00000001", "maxQty": "9000000.00000000",
                 "stepSize": "0.00000001"},
                {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
                 "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
            ],
            "permissions": ["SPOT"],
        })
    return {"timezone": "UTC", "serverTime": 0, "rateLimits": [], "exchangeFilters": [], "symbols": entries}


def kraken_asset_pairs(symbols: Sequence[str]) -> dict[str, Any]:
    """A Kraken `/0/public/AssetPairs` document listing `symbols`."""
    result: dict[str, Any] = {}
    for symbol in symbols:
        wsname = kraken_wsname(symbol)
        base, quote = wsname.split("/")
        altname = base + quote
        result[altname] = {
            "altname": altname,
            "wsname": wsname,
            "aclass_base": "currency",
            "base": base,
            "aclass_quote": "currency",
            "quote": quote,
            "lot": "unit",
            "pair_decimals": 8,
            "lot_decimals": 8,
            "lot_multiplier": 1,
            "ordermin": "0.0001",
            "costmin": "0.5",
            "tick_size": "0.00000001",
            "status": "online",
        }
    return {"error": [], "result": result}


def okx_instruments(symbols: Sequence[str]) -> dict[str, Any]:
    """An OKX `/api/v5/public/instruments?instType=SPOT` document listing `symbols` as live."""
    entries = []
    for symbol in symbols:
        base, quote = split_symbol(symbol)
        entries.append({
            "instType": "SPOT", "instId": okx_inst_id(symbol), "uly": "", "instFamily": "", "category": "1",
            "baseCcy": base, "quoteCcy": quote, "settleCcy": "", "ctVal": "", "ctMult": "", "ctValCcy": "",
            "optType": "", "stk": "", "listTime": "1704067200000", "expTime": "", "lever": "",
            "tickSz": "0.00000001", "lotSz": "0.00000001", "minSz": "0.00001", "ctType": "", "alias": "",
            "state": "live", "ruleType": "normal", "maxLmtSz": "9999999999", "maxMktSz": "1000000",
            "maxLmtAmt": "20000000", "maxMktAmt": "1000000", "maxTwapSz": "9999999999",
            "maxIcebergSz": "9999999999", "maxTriggerSz": "9999999999", "maxStopSz": "1000000",
        })
    return {"code": "0", "msg": "", "data": entries}


def exchange_info(exchange: Exchange, symbols: Sequence[str]) -> dict[str, Any]:
    """The exchange-info document for `exchange` listing `symbols`."""
    if exchange == "binance":
        return binance_exchange_info(symbols)
    if exchange == "kraken":
        return kraken_asset_pairs(symbols)
    if exchange == "okx":
        return okx_instruments(symbols)
    raise ValueError(f"unknown exchange {exchange!r} (known: {', '.join(EXCHANGES)})")
