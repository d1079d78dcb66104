"""The local TLS exchange simulator and a real cryptofeed source reading it, for the feed tests."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from engine.types import Tick
from feeds.cryptofeed_source import CryptofeedSource
from feeds.simulator import ExchangeSimulator, PushSource, TickSource

Sim = TypeVar("Sim", bound=ExchangeSimulator)


@contextlib.asynccontextmanager
async def simulator(cert_dir: Path, symbols: Sequence[str], source: TickSource | None = None, *,
                    kind: type[Sim] = ExchangeSimulator, **options: Any) -> AsyncIterator[Sim]:  # type: ignore[assignment]
    """A started simulator of `kind` serving `source` (by default ticks pushed by the test); stopped at the end."""
    sim = kind(cert_dir=cert_dir, source=source or PushSource(symbols), **options)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def source_for(sim: ExchangeSimulator, exchange: Any, symbols: Sequence[str], **options: Any) -> CryptofeedSource:
    """A cryptofeed source of `exchange` pointed at the simulator: its websocket, its REST and its TLS context."""
    return CryptofeedSource(exchange, symbols, ws_url=sim.ws_url(exchange), rest_url=sim.rest_url(exchange),
                            ssl_context=sim.ssl_context_for_clients(), **options)


@contextlib.asynccontextmanager
async def feeding(source: CryptofeedSource) -> AsyncIterator[asyncio.Queue[Tick]]:
    """Run the source into a queue of ticks until the block ends, then cancel it."""
    ticks: asyncio.Queue[Tick] = asyncio.Queue()
    task = asyncio.create_task(source.run(ticks.put_nowait))
    try:
        yield ticks
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
