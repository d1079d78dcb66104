"""Feed rebuilds leave nothing behind: N drops of the real TLS simulator's connections, each followed by a
rebuild of the cryptofeed feed, keep no FeedHandler, Feed or connection alive; a running feed keeps large
buffers off the C heap (glibc's mmap threshold pinned) and trims the heap after every rebuild (issue #8's
soak: RSS must stay flat)."""
from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import platform
import weakref
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptofeed import FeedHandler

import feeds.cryptofeed_source as cryptofeed_source
from engine.types import Tick
from feeds.simulator import ExchangeSimulator
from tests.integration.feed_kit import feeding, simulator, source_for

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("clear_symbols")]

SYMBOLS = ("BTC-USDT", "ETH-USDT")
REBUILDS = 12
WAIT_SECS = 10.0


class Built:
    """Weak references to everything the source built, by kind."""

    def __init__(self) -> None:
        self.handlers: list[weakref.ref[Any]] = []
        self.feeds: list[weakref.ref[Any]] = []
        self.connections: list[weakref.ref[Any]] = []

    def recording_handler(self) -> type[FeedHandler]:
        """A FeedHandler class that records itself when built and its feeds and connections when stopped."""
        built = self

        class RecordingFeedHandler(FeedHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                built.handlers.append(weakref.ref(self))

            async def stop_async(self, loop: Any = None) -> None:
                for feed in self.feeds:
                    built.feeds.append(weakref.ref(feed))
                    built.connections.extend(weakref.ref(h.conn) for h in feed.connection_handlers)
                await super().stop_async(loop)

        return RecordingFeedHandler


async def one_tick_through(sim: ExchangeSimulator, ticks: asyncio.Queue[Tick], price: float) -> None:
    """Wait for a subscriber, publish one tick, and wait until the source delivered it."""
    await asyncio.wait_for(sim.wait_for_subscribers(1, exchange="binance"), WAIT_SECS)
    await sim.publish(Tick("BTC-USDT", price, price + 1.0, 0, 0))
    tick = await asyncio.wait_for(ticks.get(), WAIT_SECS)
    assert tick.bid == price


@pytest.mark.asyncio
async def test_rebuilds_keep_no_feed_alive_and_trim_the_heap_each_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # pytest keeps every captured record, and cryptofeed logs each drop with exc_info: those tracebacks hold
    # the dropped feed's frames. The service's log queue formats and strips them; here they are not captured.
    caplog.set_level(logging.CRITICAL, logger="feedhandler")
    monkeypatch.setattr(cryptofeed_source, "BACKOFF_BASE_SECS", 0.001)
    built = Built()
    monkeypatch.setattr(cryptofeed_source, "FeedHandler", built.recording_handler())
    trims: list[bool] = []
    real_release = cryptofeed_source.release_freed_memory

    def counted_release() -> bool:
        trims.append(real_release())
        return trims[-1]

    monkeypatch.setattr(cryptofeed_source, "release_freed_memory", counted_release)
    async with simulator(tmp_path / "certs", SYMBOLS, exchanges=("binance",)) as sim:
        source = source_for(sim, "binance", SYMBOLS, reconnect_max_secs=0.01, stale_secs=30.0)
        async with feeding(source) as ticks:
            for i in range(REBUILDS):
                await one_tick_through(sim, ticks, 100.0 + i)
                assert sim.drop_connections() == 1
            await one_tick_through(sim, ticks, 1.0)
            assert source.reconnects >= REBUILDS
            assert len(trims) == 1 + source.reconnects, "the heap is trimmed at the start and after each rebuild"
            gc.collect()
            assert len(built.feeds) == len(built.handlers) - 1 == source.reconnects
            assert len(built.connections) >= source.reconnects
            assert built.handlers[-1]() is not None, "the running feed is alive (the check can fail)"
            leftovers = [type(o).__name__ for o in (r() for r in [*built.handlers[:-1], *built.feeds,
                                                                  *built.connections]) if o is not None]
            assert leftovers == [], f"rebuilt feeds left alive: {leftovers}"
    if platform.libc_ver()[0] == "glibc":
        assert any(trims), "glibc has malloc_trim: the rebuild must use it"
        assert_large_blocks_are_mmapped()


class MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2`."""

    _fields_: ClassVar[list[tuple[str, type[ctypes.c_size_t]]]] = [
        (name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                             "uordblks", "fordblks", "keepcost")]


def mmapped_blocks() -> int:
    """How many blocks malloc holds in their own mmap (outside the heap)."""
    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    return int(mallinfo2().hblks)


def assert_large_blocks_are_mmapped() -> None:
    """Once a feed ran, a large block is mmapped even after a larger one was freed (no dynamic threshold)."""
    freed = bytearray(30 << 20)  # unpinned, freeing this raises glibc's mmap threshold to 30 MiB
    del freed
    before = mmapped_blocks()
    buffer = bytearray(24 << 20)
    during = mmapped_blocks()
    del buffer
    assert during == before + 1, "a 24 MiB buffer came from the heap: the mmap threshold is not pinned"
