"""A local Binance-compatible spot REST server with fault injection, for testing the ccxt venue."""
from __future__ import annotations

from ops.venues.binance_fake.faults import (
    ACCOUNT,
    ANY,
    CANCEL_ORDER,
    EXCHANGE_INFO,
    MY_TRADES,
    OPEN_ORDERS,
    ORDER,
    QUERY_ORDER,
    Fault,
    FaultKind,
)
from ops.venues.binance_fake.model import BinanceError, FakeOrder, FakeTrade, SymbolSpec
from ops.venues.binance_fake.server import BinanceFake

__all__ = [
    "ACCOUNT",
    "ANY",
    "CANCEL_ORDER",
    "EXCHANGE_INFO",
    "MY_TRADES",
    "OPEN_ORDERS",
    "ORDER",
    "QUERY_ORDER",
    "BinanceError",
    "BinanceFake",
    "FakeOrder",
    "FakeTrade",
    "Fault",
    "FaultKind",
    "SymbolSpec",
]
