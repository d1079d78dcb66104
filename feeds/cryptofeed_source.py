"""Live ticks from cryptofeed 2.4.1 (Binance spot bookTicker, Kraken v1 ticker, OKX v5 tickers), supervised.

cryptofeed's own reconnect backoff doubles without a cap, its feed dies silently after `retries`, and its
watchdog never notices a feed that is silent from the start. So each feed is built with `retries=0` and no
watchdog, and this adapter rebuilds it (capped, jittered backoff) when its connection drops, its task ends
or no frame arrived for `stale_secs`. Symbols are seeded from an exchange-info document, so building a
feed never calls a real exchange's REST API. Large connection buffers are kept off the C heap and its free
pages go back to the OS after each rebuild (see `keep_large_buffers_off_the_heap` for why).
"""
from __future__ import annotations

import asyncio
import atexit
import ctypes
import json
import logging
import math
import os
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import aiohttp
import orjson
from cryptofeed import FeedHandler
from cryptofeed.connection import WebsocketEndpoint
from cryptofeed.defines import TICKER
from cryptofeed.exchanges import OKX, Binance, Kraken
from cryptofeed.feed import Feed
from cryptofeed.symbols import Symbols

from engine.types import Tick, new_tick, split_symbol
from feeds.backoff import Backoff
from feeds.simulator.exchange_info import Exchange, exchange_info, exchange_info_path

log = logging.getLogger(__name__)

CRYPTOFEED_CONFIG: dict[str, Any] = {"uvloop": False, "log": {"disabled": True}}
FEED_CLASSES: dict[str, type[Feed]] = {"binance": Binance, "kraken": Kraken, "okx": OKX}
# cryptofeed reads OKX symbols from five REST routes (spot, swap, futures, two option families) and hands its
# parser the list of documents; keel serves the spot one only, so it is wrapped in a list of one.
_LIST_OF_DOCUMENTS = frozenset({"okx"})
BACKOFF_BASE_SECS = 0.5
MAX_QUEUE_FRAMES = 4096
CLOSE_TIMEOUT_SECS = 2.0
REST_TIMEOUT_SECS = 10.0
INF = math.inf


class FeedConfigError(ValueError):
    """A configuration the venue cannot serve (unknown symbol, bad address): retrying will not help."""


class _FeedReconnected(Exception):
    """cryptofeed reconnected on its own: end that feed so the supervisor rebuilds it with its backoff."""


class _TaskRecorder:
    """Stands in for the event loop in `Feed.start` so the connection tasks it creates can be watched."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tasks: list[asyncio.Task[Any]]) -> None:
        self._loop = loop
        self._tasks = tasks

    def create_task(self, coro: Coroutine[Any, Any, Any], **kwargs: Any) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro, **kwargs)
        self._tasks.append(task)
        return task


class _OncePerSecond:
    """A warning logger that says a thing at most once a second and counts what it held back."""

    def __init__(self) -> None:
        self._last = -math.inf
        self._held = 0

    def warn(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < 1.0:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        log.warning(msg + " (%d similar held back)", *args, held)


async def fetch_exchange_info(url: str, ssl_context: ssl.SSLContext | None) -> Any:
    """GET an exchange-info document (JSON) over HTTPS."""
    timeout = aiohttp.ClientTimeout(total=REST_TIMEOUT_SECS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(url, ssl=ssl_context if ssl_context is not None else True) as resp:
            resp.raise_for_status()
            return orjson.loads(await resp.read())


def seed_symbols(exchange: str, document: Any) -> dict[str, str]:
    """Load cryptofeed's process-global `Symbols` for `exchange` from its exchange-info document."""
    cls = FEED_CLASSES[exchange]
    normalized, info = cls._parse_symbol_data([document] if exchange in _LIST_OF_DOCUMENTS else document)
    Symbols.set(cls.id, normalized, info)
    return dict(normalized)


class CryptofeedSource:
    """Ticks of `symbols` on one exchange through cryptofeed, delivered to `on_tick` inside this event loop."""

    def __init__(
        self,
        exchange: Exchange,
        symbols: Sequence[str],
        *,
        ws_url: str | None = None,
        rest_url: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_bad_frame: Callable[[str], None] | None = None,
        reconnect_max_secs: float = 30.0,
        stale_secs: float = 60.0,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        if exchange not in FEED_CLASSES:
            raise FeedConfigError(f"exchange must be one of {sorted(FEED_CLASSES)}, got {exchange!r}")
        if not symbols:
            raise FeedConfigError("a feed needs at least one symbol")
        for s in symbols:
            split_symbol(s)
        if ws_url is not None and not ws_url.startswith("wss://"):
            raise FeedConfigError(f"cryptofeed accepts only wss:// addresses, got {ws_url!r}")
        if reconnect_max_secs <= 0 or stale_secs <= 0:
            raise FeedConfigError("reconnect_max_secs and stale_secs must be > 0")
        self.exchange = exchange
        self.symbols = tuple(dict.fromkeys(symbols))
        self.ws_url = ws_url
        self.rest_url = rest_url
        self.ssl_context = ssl_context
        self.on_bad_frame = on_bad_frame
        self.on_reconnect = on_reconnect
        self.reconnect_max_secs = reconnect_max_secs
        self.stale_secs = stale_secs
        self.reconnects = 0
        self.frames = 0
        self.ticks = 0
        self._bad_total = 0
        self.bad_frames: Counter[str] = Counter()
        self.callback_errors = 0
        self._on_tick: Callable[[Tick], None] = _no_tick
        self._document: Any = None
        self._last_frame = 0.0
        self._seen_conns: set[int] = set()
        self._bad_log = _OncePerSecond()

    async def run(self, on_tick: Callable[[Tick], None]) -> None:
        """Deliver ticks to `on_tick` until cancelled, rebuilding the feed whenever it drops or goes quiet."""
        self._on_tick = on_tick
        keep_large_buffers_off_the_heap()
        failures = 0
        while True:
            frames_before = self.frames
            await self._run_feed_once()
            failures = 0 if self.frames > frames_before else failures + 1
            delay = Backoff(BACKOFF_BASE_SECS, self.reconnect_max_secs).delay_secs(failures)
            log.warning("%s feed: reconnecting in %.2f s (attempt %d since the last data)",
                        self.exchange, delay, failures + 1)
            await asyncio.sleep(delay)
            release_freed_memory()
            self.reconnects += 1
            if self.on_reconnect is not None:
                self.on_reconnect()

    async def _run_feed_once(self) -> None:
        """Build one cryptofeed feed, watch it until it drops, dies or goes quiet, then stop it."""
        fh: FeedHandler | None = None
        tasks: list[asyncio.Task[Any]] = []
        try:
            if self._document is None:
                self._document = await self._exchange_info()
            fh, feed = self._start_feed(tasks)
            reason = await self._watch(feed, tasks)
            log.warning("%s feed %s", self.exchange, reason)
        except FeedConfigError:
            raise
        except Exception as exc:  # loop boundary: any failure of one feed attempt leads to a rebuild
            log.warning("%s feed failed: %r", self.exchange, exc)
        finally:
            await self._stop_feed(fh, tasks)

    async def _exchange_info(self) -> Any:
        if self.rest_url is None:
            return exchange_info(self.exchange, self.symbols)
        return await fetch_exchange_info(self.rest_url + exchange_info_path(self.exchange), self.ssl_context)

    def _start_feed(self, tasks: list[asyncio.Task[Any]]) -> tuple[FeedHandler, Feed]:
        normalized = seed_symbols(self.exchange, self._document)
        missing = [s for s in self.symbols if s not in normalized]
        if missing:
            raise FeedConfigError(f"{self.exchange} does not list {missing}")
        cls = FEED_CLASSES[self.exchange]
        feed = cls(symbols=list(self.symbols), channels=[TICKER], callbacks={TICKER: self._on_ticker},
                   config=CRYPTOFEED_CONFIG, retries=0, timeout=-1)
        endpoint = self.websocket_endpoint()
        feed.websocket_endpoints = [endpoint]
        # Instance attributes: cryptofeed binds these when it connects, so the wrappers see every frame.
        feed.message_handler = self._guard_frames(feed.message_handler)
        feed.subscribe = self._guard_reconnects(feed.subscribe)
        start = feed.start
        feed.start = lambda loop: start(_TaskRecorder(loop, tasks))
        self._seen_conns = set()
        self._last_frame = time.monotonic()
        fh = FeedHandler(config=CRYPTOFEED_CONFIG)
        fh.add_feed(feed)
        fh.run(start_loop=False, install_signal_handlers=False)
        log.info("%s feed started for %s at %s", self.exchange, ", ".join(self.symbols), endpoint.address)
        return fh, feed

    def websocket_endpoint(self) -> WebsocketEndpoint:
        """The one public websocket this feed connects to: `ws_url`, or the exchange's own public endpoint."""
        default = FEED_CLASSES[self.exchange].websocket_endpoints[0]
        options: dict[str, Any] = dict(default.options or {})  # OKX's turns compression off
        options.update(max_queue=MAX_QUEUE_FRAMES, close_timeout=CLOSE_TIMEOUT_SECS)
        if self.ws_url is not None:
            options["proxy"] = None
        if self.ssl_context is not None:
            options["ssl"] = self.ssl_context
        return WebsocketEndpoint(self.ws_url or default.address, sandbox=default.sandbox, limit=default.limit,
                                 options=options)

    async def _watch(self, feed: Feed, tasks: list[asyncio.Task[Any]]) -> str:
        """Return why the feed must be rebuilt: its task ended, its connection dropped, or silence."""
        poll = min(0.25, self.stale_secs / 4)
        while True:
            done, _ = await asyncio.wait(tasks, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
            if done:
                return "connection task ended"
            for handler in feed.connection_handlers:
                if id(handler.conn) in self._seen_conns and not handler.conn.is_open:
                    return "connection dropped"
            quiet = time.monotonic() - self._last_frame
            if quiet > self.stale_secs:
                return f"silent for {quiet:.1f} s"

    async def _stop_feed(self, fh: FeedHandler | None, tasks: list[asyncio.Task[Any]]) -> None:
        try:
            if fh is not None:
                await fh.stop_async()
        except Exception as exc:  # shutting down a broken feed may fail; the tasks are cancelled below
            log.debug("%s feed stop: %r", self.exchange, exc)
        finally:
            if fh is not None:
                _forget_connections(fh)
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks)
            for t in tasks:  # retrieve each outcome (cryptofeed ends with ExhaustedRetries) so none is "never retrieved"
                if not t.cancelled() and t.exception() is not None:
                    log.debug("%s feed task ended with %r", self.exchange, t.exception())

    def _guard_frames(
        self, handler: Callable[[str, Any, float], Coroutine[Any, Any, None]],
    ) -> Callable[[str, Any, float], Coroutine[Any, Any, None]]:
        """Wrap cryptofeed's parser: an exception there would drop the websocket; count and drop the frame."""
        async def guarded(msg: str, conn: Any, timestamp: float) -> None:
            self.frames += 1
            self._last_frame = time.monotonic()
            seen = self.ticks + self._bad_total
            try:
                await handler(msg, conn, timestamp)
            except Exception as exc:
                self._bad("unparseable", "%s feed: dropped a frame it cannot parse (%r): %.200s",
                          self.exchange, exc, msg)
                return
            if self.ticks + self._bad_total == seen and not _is_control(msg):
                # cryptofeed logged and skipped it (no 'A' in a bookTicker, an unknown channel or event)
                self._bad("ignored", "%s feed: cryptofeed skipped a frame: %.200s", self.exchange, msg)
        return guarded

    def _guard_reconnects(
        self, subscribe: Callable[[Any], Coroutine[Any, Any, None]],
    ) -> Callable[[Any], Coroutine[Any, Any, None]]:
        """cryptofeed reconnects a cleanly closed socket by itself, without backoff: end it instead."""
        async def guarded(conn: Any) -> None:
            if id(conn) in self._seen_conns:
                raise _FeedReconnected(f"{self.exchange} connection {conn.uuid} reconnected by cryptofeed")
            self._seen_conns.add(id(conn))
            await subscribe(conn)
        return guarded

    async def _on_ticker(self, ticker: Any, receipt_ts: float) -> None:
        """cryptofeed's TICKER callback: validate, convert, deliver; it must never raise."""
        try:
            bid = float(ticker.bid)
            ask = float(ticker.ask)
            if 0.0 < bid <= ask < INF:  # the common case in one test (NaN fails every comparison)
                ts_recv_ns = int(receipt_ts * 1e9)
                ts = ticker.timestamp  # None (Kraken), the receipt time (Binance spot) or the venue's (OKX, in ms)
                # A float of epoch seconds holds microseconds exactly: rounding there undoes its binary error.
                ts_event_ns = ts_recv_ns if ts is None or ts == receipt_ts else round(ts * 1e6) * 1000
                self.ticks += 1
                self._on_tick(new_tick(ticker.symbol, bid, ask, ts_event_ns, ts_recv_ns))
            elif not (math.isfinite(bid) and math.isfinite(ask)):
                self._bad("nan", "%s %s: non-finite prices %r/%r dropped", self.exchange, ticker.symbol, bid, ask)
            elif bid <= 0.0 or ask <= 0.0:
                self._bad("non_positive", "%s %s: non-positive prices %r/%r dropped",
                          self.exchange, ticker.symbol, bid, ask)
            else:
                self._bad("crossed", "%s %s: crossed prices bid %r > ask %r dropped",
                          self.exchange, ticker.symbol, bid, ask)
        except Exception as exc:  # an exception here would make cryptofeed drop the websocket
            self.callback_errors += 1
            self._bad("error", "%s feed: tick dropped, the tick callback raised %r", self.exchange, exc)

    def _bad(self, reason: str, msg: str, *args: object) -> None:
        self.bad_frames[reason] += 1
        self._bad_total += 1
        self._bad_log.warn(msg, *args)
        if self.on_bad_frame is not None:
            try:
                self.on_bad_frame(reason)
            except Exception:  # a failing report hook must not drop the websocket either
                log.exception("%s feed: on_bad_frame raised", self.exchange)


def _no_tick(tick: Tick) -> None:
    """The tick sink before `run` is called."""


def _forget_connections(fh: FeedHandler) -> None:
    """cryptofeed 2.4.1 registers every connection's __del__ with atexit, which keeps each old connection and
    its TLS buffers alive for the life of the process (about 430 KB per reconnect): unregister them."""
    for feed in getattr(fh, "feeds", []):
        conns = [h.conn for h in getattr(feed, "connection_handlers", [])]
        http = getattr(feed, "http_conn", None)
        if http is not None:
            conns.append(http)
        for conn in conns:
            atexit.unregister(conn.__del__)


# Why the heap needs care: feed rebuilds leave no Python object behind, but every TLS connection allocates
# large buffers (uvloop's 256 KiB read buffer, on both ends when the simulator is embedded), and glibc raises
# its mmap threshold to the largest block ever freed (the embedded simulator's numpy chunks, 600 KB at 5,000
# ticks/s), so those buffers then come from the heap and, freed between live blocks, stay resident. Measured
# (100 rebuilds at 5,000 frames/s, simulator in-process): RSS +8-9 MB with malloc's in-use bytes flat; with
# the thresholds pinned, +0.3 MB. 10-minute soak (seed 11): RSS x1.071 before, x1.017 pinned; the rest is
# the intents and order reports the service keeps. A trim after each rebuild frees what smaller blocks leave.
try:
    _GLIBC: ctypes.CDLL | None = ctypes.CDLL(None)
except (OSError, TypeError):  # no C library handle (Windows)
    _GLIBC = None
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
HEAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own default, before its dynamic threshold moves it


def keep_large_buffers_off_the_heap() -> bool:
    """Pin glibc's mmap and trim thresholds (unless MALLOC_*_THRESHOLD_ is set); True if pinned."""
    mallopt = getattr(_GLIBC, "mallopt", None)
    if mallopt is None or "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    pinned = all(mallopt(p, HEAP_THRESHOLD_BYTES) == 1 for p in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD))
    release_freed_memory()  # what the heap already holds free would otherwise still serve large blocks
    return pinned


def release_freed_memory() -> bool:
    """Give the C heap's free pages back to the OS (glibc; a no-op elsewhere); True if any were released."""
    trim = getattr(_GLIBC, "malloc_trim", None)
    return trim is not None and bool(trim(ctypes.c_size_t(0)))


_CONTROL_EVENTS = frozenset({"heartbeat", "systemStatus", "pong", "subscribe", "unsubscribe"})


def _is_control(msg: str) -> bool:
    """A frame that is expected to carry no price: Kraken's heartbeats, status and successful subscriptions,
    Binance's subscription answers, OKX's subscribe answers. Anything else that yields no tick is counted as
    skipped."""
    if '"event"' not in msg and '"result"' not in msg:
        return False
    try:
        obj = json.loads(msg)
    except ValueError:
        return False
    if not isinstance(obj, dict):
        return False
    if "result" in obj and "id" in obj:
        return True
    event = obj.get("event")
    if event in _CONTROL_EVENTS:
        return True
    return event == "subscriptionStatus" and obj.get("status") in ("subscribed", "unsubscribed")
