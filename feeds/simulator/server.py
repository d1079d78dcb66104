"""The exchange simulator: one TLS port serving Binance, Kraken and OKX websockets and their symbol REST documents."""
from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine.types import Tick
from feeds.simulator.certs import DEFAULT_CERT_DIR, client_ssl_context, server_ssl_context
from feeds.simulator.clients import Client
from feeds.simulator.dialects import Dialect, find_document, make_dialects, rest_documents, websocket_exchange
from feeds.simulator.exchange_info import EXCHANGES, Exchange
from feeds.simulator.faults import PriceFaults
from feeds.simulator.kraken import HEARTBEAT
from feeds.simulator.sources import Chunk, PushSource, TickSource
from feeds.simulator.wire import text_frame

log = logging.getLogger(__name__)
# The websockets library logs every connection at INFO; the simulator keeps those for debugging only.
_ws_log = logging.getLogger(__name__ + ".websockets")
_ws_log.setLevel(logging.WARNING)

MAX_BATCH = 512
WRITE_LIMIT = 1 << 20
HEARTBEAT_SECS = 1.0
CLOSE_TIMEOUT_SECS = 1.0


@dataclass(frozen=True, slots=True)
class SimStats:
    """The simulator's counters."""

    frames_sent: int
    connections_accepted: int
    subscribers: int
    faults_injected: dict[str, int]


class ExchangeSimulator:
    """A local TLS exchange speaking Binance spot combined streams, Kraken's v1 and OKX's v5 websocket APIs."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        cert_dir: Path = DEFAULT_CERT_DIR,
        source: TickSource | None = None,
        exchanges: Sequence[Exchange] = EXCHANGES,
    ) -> None:
        self.host = host
        self.cert_dir = Path(cert_dir)
        self.source: TickSource = source if source is not None else PushSource()
        self.symbols = self.source.symbols
        self._index = {s: i for i, s in enumerate(self.symbols)}
        self._dialects = make_dialects(exchanges, self.symbols)
        self._rest = rest_documents(self._dialects)
        self._requested_port = port
        self._port = 0
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[Client] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._has_subscribers = asyncio.Event()
        self._silent = False
        self._faults = PriceFaults()
        self.frames_sent = 0
        self.connections_accepted = 0

    # ---- lifecycle and addresses

    async def start(self) -> None:
        """Listen on host:port (0: any free port) and start playing the source."""
        ctx = await asyncio.to_thread(server_ssl_context, self.cert_dir)
        self._server = await serve(
            self._session, self.host, self._requested_port, ssl=ctx, process_request=self._http,
            compression=None, ping_interval=None, close_timeout=CLOSE_TIMEOUT_SECS, max_size=1 << 20,
            write_limit=WRITE_LIMIT, logger=_ws_log,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._pump(), name="sim-pump")]
        if "kraken" in self._dialects:
            self._tasks.append(loop.create_task(self._heartbeats(), name="sim-heartbeats"))

    async def stop(self) -> None:
        """Stop playing, close every connection and the listening socket."""
        tasks, self._tasks = self._tasks, []
        try:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks)
        finally:
            if self._server is not None:
                self._server.close()
                try:
                    async with asyncio.timeout(CLOSE_TIMEOUT_SECS):
                        await self._server.wait_closed()
                except TimeoutError:  # a client that stopped reading blocks its closing handshake
                    for c in self._clients:
                        c.abort()
                    await self._server.wait_closed()
                self._server = None
        for t in tasks:
            if not t.cancelled() and t.exception() is not None:
                raise RuntimeError(f"simulator task {t.get_name()} failed") from t.exception()

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Wait until `stop` is set; raises if a background task (the pump, heartbeats) fails first."""
        stopper = asyncio.get_running_loop().create_task(stop.wait(), name="sim-stop-wait")
        pending: set[asyncio.Task[Any]] = {stopper, *self._tasks}
        try:
            while not stopper.done():
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t is not stopper and not t.cancelled() and t.exception() is not None:
                        raise RuntimeError(f"simulator task {t.get_name()} failed") from t.exception()
        finally:
            stopper.cancel()

    @property
    def port(self) -> int:
        """The listening port (known after `start`)."""
        return self._port

    def dialect(self, exchange: Exchange) -> Dialect:
        """The wire format served for `exchange`."""
        try:
            return self._dialects[exchange]
        except KeyError:
            raise ValueError(f"the simulator does not serve {exchange!r} (serving {list(self._dialects)})") from None

    def ws_url(self, exchange: Exchange) -> str:
        """The websocket base address cryptofeed should use for `exchange`."""
        return f"wss://{self._url_host()}:{self._port}/{exchange}{self.dialect(exchange).ws_path}"

    def rest_url(self, exchange: Exchange) -> str:
        """The REST base address for `exchange` (exchange info at `rest_url + exchange_info_path`)."""
        self.dialect(exchange)
        return f"https://{self._url_host()}:{self._port}/{exchange}"

    def ssl_context_for_clients(self) -> ssl.SSLContext:
        """A client TLS context that trusts the simulator's self-signed certificate."""
        return client_ssl_context(self.cert_dir)

    # ---- faults and counters

    def drop_connections(self) -> int:
        """Close every client socket abruptly (no close frame); returns how many were dropped."""
        clients, self._clients = self._clients, []
        for c in clients:
            c.abort()
        self._faults.count("drop", len(clients))
        self._subscriptions_changed()
        return len(clients)

    def go_silent(self, silent: bool = True) -> None:
        """Keep every connection open but send nothing (not even heartbeats) until called with False."""
        if silent and not self._silent:
            self._faults.count("silent")
        self._silent = silent

    def send_garbage(self, n: int) -> None:
        """Send `n` unparseable frames (broken JSON, wrong shapes) to every connected client now."""
        for c in self._clients:
            dialect = self._dialects[c.exchange]
            c.write(b"".join(dialect.garbage(c) for _ in range(n)))
        self._faults.count("garbage", n)

    def spike(self, symbol: str, factor: float) -> None:
        """Multiply the next frame's prices of `symbol` by `factor`."""
        self._symbol_index(symbol)
        self._faults.spike(symbol, factor)

    def cross(self, symbol: str) -> None:
        """Send the next frame of `symbol` with bid > ask."""
        self._symbol_index(symbol)
        self._faults.cross(symbol)

    @property
    def stats(self) -> SimStats:
        """Frames sent, connections accepted, current subscribers and faults injected by kind."""
        return SimStats(self.frames_sent, self.connections_accepted, self.subscriber_count(),
                        dict(self._faults.injected))

    def subscriber_count(self, exchange: Exchange | None = None, symbol: str | None = None) -> int:
        """Open clients subscribed to anything (or to `symbol`), optionally on one exchange only."""
        u = None if symbol is None else self._symbol_index(symbol)
        return sum(
            1 for c in self._clients
            if c.is_open and (exchange is None or c.exchange == exchange)
            and (c.n_subscribed > 0 if u is None else bool(c.mask[u]))
        )

    async def wait_for_subscribers(
        self, n: int = 1, *, exchange: Exchange | None = None, symbol: str | None = None,
    ) -> None:
        """Return once at least `n` clients are subscribed (to `symbol`, on `exchange`, when given)."""
        while self.subscriber_count(exchange, symbol) < n:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)

    # ---- sending

    async def publish(self, tick: Tick) -> int:
        """Send one frame of `tick` to every subscriber of its symbol; returns how many clients got it."""
        u = self._symbol_index(tick.symbol)
        if self._silent:
            return 0
        bid, ask = self._faults.apply(tick.symbol, tick.bid, tick.ask)
        frames: dict[Exchange, bytes] = {}
        written = []
        for c in self._clients:
            if c.mask[u] and c.is_open:
                frame = frames.get(c.exchange)
                if frame is None:
                    frame = frames[c.exchange] = self._dialects[c.exchange].encode(u, bid, ask)
                c.write(frame)
                written.append(c)
        self.frames_sent += len(written)
        for c in written:
            await c.drain()
        return len(written)

    async def _pump(self) -> None:
        """Play the source's chunks on time, in batches, to the subscribers of each symbol."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        chunks = self.source.chunks()
        while True:
            # Making a chunk (a synthetic path, a replay slice) can take a while: not on the event loop.
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                return
            umap = np.array([self._index[s] for s in chunk.columns.symbols] or [0], dtype=np.int64)
            usym = umap[chunk.columns.sym]
            due = chunk.due_secs
            i, n = 0, len(due)
            while i < n:
                if not self._has_subscribers.is_set():
                    paused = loop.time()
                    await self._has_subscribers.wait()
                    t0 += loop.time() - paused  # the market waits for its first listener: no burst after
                now = loop.time() - t0
                j = int(np.searchsorted(due, now, side="right"))
                if j <= i:
                    await asyncio.sleep(float(due[i]) - now)
                    continue
                j = min(j, i + MAX_BATCH)
                if not self._silent:
                    await self._emit(chunk, usym, i, j)
                i = j
                await asyncio.sleep(0)

    async def _emit(self, chunk: Chunk, usym: np.ndarray, i: int, j: int) -> None:
        """Encode rows i..j once per exchange and write each client the frames of its symbols."""
        batch_sym = usym[i:j]
        syms: list[int] = batch_sym.tolist()
        bids: list[float] = chunk.columns.bid[i:j].tolist()
        asks: list[float] = chunk.columns.ask[i:j].tolist()
        if self._faults.armed:
            for symbol in self._faults.armed_symbols():
                hits = np.flatnonzero(batch_sym == self._index[symbol])
                if hits.size:
                    k = int(hits[0])
                    bids[k], asks[k] = self._faults.apply(symbol, bids[k], asks[k])
        written = []
        for exchange, dialect in self._dialects.items():
            clients = [c for c in self._clients if c.exchange == exchange and c.n_subscribed and c.is_open]
            if not clients:
                continue
            frames = dialect.encode_many(syms, bids, asks)
            everything = None
            for c in clients:
                if c.all_symbols:
                    if everything is None:
                        everything = b"".join(frames)
                    c.write(everything)
                    self.frames_sent += len(frames)
                else:
                    picked = np.flatnonzero(c.mask[batch_sym]).tolist()
                    if picked:
                        c.write(b"".join([frames[k] for k in picked]))
                        self.frames_sent += len(picked)
                written.append(c)
        for c in written:
            await c.drain()

    async def _heartbeats(self) -> None:
        """Kraken sends a heartbeat after a second without other messages."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HEARTBEAT_SECS / 2)
            if self._silent:
                continue
            now = loop.time()
            for c in self._clients:
                if c.exchange == "kraken" and now - c.last_write >= HEARTBEAT_SECS:
                    c.write(HEARTBEAT)

    # ---- connections

    def _http(self, conn: ServerConnection, request: Request) -> Response | None:
        """Serve the exchange-info documents; accept websocket upgrades on known paths; 404 otherwise."""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if websocket_exchange(self._dialects, request.path) is not None:
                return None
            return conn.respond(404, f"no websocket at {request.path}\n")
        body = find_document(self._rest, request.path)
        if body is None:
            return conn.respond(404, f"nothing at {request.path}\n")
        headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                           ("Connection", "close")])
        return Response(200, "OK", headers, body)

    async def _session(self, conn: ServerConnection) -> None:
        """One websocket client, from its handshake until it leaves."""
        exchange = websocket_exchange(self._dialects, conn.request.path if conn.request else "")
        if exchange is None:  # refused in `_http` already
            return
        client = Client(conn, exchange, len(self.symbols))
        self.connections_accepted += 1
        self._clients.append(client)
        log.debug("simulator: %s client connected from %s", exchange, conn.remote_address)
        try:
            await self._dialects[exchange].session(conn, client, self)
        except ConnectionClosed:
            pass
        finally:
            if client in self._clients:
                self._clients.remove(client)
                self._subscriptions_changed()

    def subscribe(self, client: Client, indices: Iterable[int], on: bool = True) -> None:
        """Change `client`'s subscriptions and wake whoever waits for subscribers."""
        client.set_subscribed(indices, on)
        self._subscriptions_changed()

    def control(self, client: Client, message: object) -> None:
        """Send a control message to `client`: JSON, or a `str` as plain text (nothing while silent)."""
        if self._silent:
            return
        if isinstance(message, str):
            client.write(text_frame(message.encode()))
        else:
            client.write_json(message)

    def _subscriptions_changed(self) -> None:
        if any(c.n_subscribed for c in self._clients):
            self._has_subscribers.set()
        else:
            self._has_subscribers.clear()
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)

    # ---- helpers

    def _symbol_index(self, symbol: str) -> int:
        try:
            return self._index[symbol]
        except KeyError:
            raise ValueError(f"the simulator does not list {symbol!r} (listing {list(self.symbols)})") from None

    def _url_host(self) -> str:
        return "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
