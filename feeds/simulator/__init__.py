"""A local TLS exchange simulator speaking Binance, Kraken and OKX websocket dialects, for tests and demos."""
from __future__ import annotations

from feeds.simulator.runner import run_exchange_sim
from feeds.simulator.server import ExchangeSimulator, SimStats
from feeds.simulator.sources import PushSource, ReplaySource, SyntheticSource, TickSource

__all__ = [
    "ExchangeSimulator",
    "PushSource",
    "ReplaySource",
    "SimStats",
    "SyntheticSource",
    "TickSource",
    "run_exchange_sim",
]
