"""One connected websocket client of the simulator: its subscriptions and its raw, batched writes."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

import numpy as np
import orjson
from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from feeds.simulator.exchange_info import Exchange
from feeds.simulator.wire import text_frame

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_SECS = 10.0


class Client:
    """A subscriber; frames go straight to its transport (pre-framed), flow-controlled by `drain`."""

    __slots__ = ("all_symbols", "conn", "exchange", "last_write", "mask", "n_subscribed")

    def __init__(self, conn: ServerConnection, exchange: Exchange, n_symbols: int) -> None:
        self.conn = conn
        self.exchange: Exchange = exchange
        self.mask = np.zeros(n_symbols, dtype=bool)
        self.n_subscribed = 0
        self.all_symbols = False
        self.last_write = 0.0

    @property
    def is_open(self) -> bool:
        """True while the websocket is open."""
        return self.conn.state is State.OPEN

    def set_subscribed(self, indices: Iterable[int], on: bool) -> None:
        """Subscribe to (or unsubscribe from) the symbols at `indices` of the universe."""
        for i in indices:
            self.mask[i] = on
        self.n_subscribed = int(self.mask.sum())
        self.all_symbols = self.n_subscribed == self.mask.shape[0]

    def write(self, data: bytes) -> None:
        """Queue complete websocket frames on the transport (no await; call `drain` after a batch)."""
        if self.is_open:
            self.conn.transport.write(data)
            self.last_write = self.conn.loop.time()

    def write_json(self, message: object) -> None:
        """Queue one JSON text frame (control messages)."""
        self.write(text_frame(orjson.dumps(message)))

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its limit; abort a client stuck for too long."""
        if not self.is_open:
            return
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_SECS):
                await self.conn.drain()
        except TimeoutError:
            log.warning("simulator client %s read nothing for %.0f s: dropping it",
                        self.conn.remote_address, DRAIN_TIMEOUT_SECS)
            self.abort()
        except OSError:
            self.abort()

    def abort(self) -> None:
        """Close the socket at once, without a websocket close frame."""
        self.conn.transport.abort()


class SessionHub(Protocol):
    """What a dialect's session needs from the simulator."""

    def subscribe(self, client: Client, indices: Iterable[int], on: bool = True) -> None:
        """Change `client`'s subscriptions and wake whoever waits for subscribers."""
        ...

    def control(self, client: Client, message: object) -> None:
        """Send `client` a control message: JSON, or a `str` as plain text (OKX's `pong`); nothing while silent."""
        ...
