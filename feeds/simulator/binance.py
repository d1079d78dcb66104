"""Binance spot combined streams, as cryptofeed 2.4.1 connects for its TICKER channel (bookTicker).

The client puts its streams in the URL (`/stream?streams=btcusdt@bookTicker/ethusdt@bookTicker`) and sends
nothing; every update is wrapped as
`{"stream":"btcusdt@bookTicker","data":{"u":400900217,"s":"BTCUSDT","b":"25.35190000","B":"31.21000000",
"a":"25.36520000","A":"40.66000000"}}`.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection

from feeds.simulator.clients import Client, SessionHub
from feeds.simulator.exchange_info import binance_exchange_info, binance_name
from feeds.simulator.wire import text_frame

STREAM_PATH = "/stream"
_SIZE = "1.00000000"


class BinanceDialect:
    """Encodes bookTicker frames and serves a combined-stream session."""

    name = "binance"
    ws_path = ""  # cryptofeed adds its own path to the base address

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = tuple(symbols)
        self._names = [binance_name(s) for s in self.symbols]
        self._streams = {n.lower() + "@bookTicker": i for i, n in enumerate(self._names)}
        self._heads = [f'{{"stream":"{n.lower()}@bookTicker","data":{{"u":' for n in self._names]
        self._tails = [f',"s":"{n}","b":"' for n in self._names]
        self._update_id = 0
        self._garbage = itertools.cycle(range(6))

    def exchange_info(self) -> dict[str, object]:
        """The `/api/v3/exchangeInfo` document of the simulated symbols."""
        return binance_exchange_info(self.symbols)

    def accepts_path(self, path: str) -> bool:
        """True for the combined-stream path (`/stream?streams=...`)."""
        return urlsplit(path).path == STREAM_PATH

    def encode(self, index: int, bid: float, ask: float) -> bytes:
        """One bookTicker frame."""
        self._update_id += 1
        return text_frame(
            f'{self._heads[index]}{self._update_id}{self._tails[index]}{bid!r}","B":"{_SIZE}",'
            f'"a":"{ask!r}","A":"{_SIZE}"}}}}'.encode()
        )

    def encode_many(self, indices: Sequence[int], bids: Sequence[float], asks: Sequence[float]) -> list[bytes]:
        """bookTicker frames for parallel lists of symbol indices, bids and asks."""
        heads, tails = self._heads, self._tails
        u = self._update_id
        out = []
        for i, b, a in zip(indices, bids, asks, strict=True):
            u += 1
            out.append(text_frame(
                f'{heads[i]}{u}{tails[i]}{b!r}","B":"{_SIZE}","a":"{a!r}","A":"{_SIZE}"}}}}'.encode()
            ))
        self._update_id = u
        return out

    def garbage(self, client: Client) -> bytes:
        """One frame that cryptofeed's Binance parser cannot handle: broken JSON or a wrong shape."""
        subscribed = client.mask.nonzero()[0]
        name = self._names[int(subscribed[0])] if subscribed.size else "BTCUSDT"
        stream = name.lower() + "@bookTicker"
        kind = next(self._garbage)
        payloads = (
            f'{{"stream":"{stream}","data":{{"u":1,"s":"{name}","b":',
            f'{{"data":{{"u":1,"s":"{name}","b":"1","B":"1","a":"2","A":"1"}}}}',
            f'{{"stream":"{stream}","data":{{"u":1,"s":"{name}","B":"1","A":"1"}}}}',
            f'{{"stream":"{stream}","data":{{"u":1,"s":"{name}","b":"x","B":"1","a":"y","A":"1"}}}}',
            "[1,2,3]",
            "this is not json",
        )
        return text_frame(payloads[kind].encode())

    def subscriptions(self, path: str) -> list[int]:
        """Symbol indices named by the streams of a combined-stream path (unknown streams are ignored)."""
        query = parse_qs(urlsplit(path).query)
        found = []
        for value in query.get("streams", []):
            for stream in value.split("/"):
                i = self._streams.get(stream)
                if i is not None:
                    found.append(i)
        return found

    async def session(self, conn: ServerConnection, client: Client, hub: SessionHub) -> None:
        """Subscribe from the URL, then read (and ignore) whatever the client sends until it leaves."""
        hub.subscribe(client, self.subscriptions(conn.request.path if conn.request else ""))
        async for _ in conn:
            pass
