"""Kraken's v1 websocket API, as cryptofeed 2.4.1's Kraken feed uses it for tickers.

On connect the server sends `{"connectionID":1,"event":"systemStatus","status":"online","version":"1.9.1"}`.
The client subscribes with `{"event":"subscribe","pair":["XBT/USDT"],"subscription":{"name":"ticker"}}`;
each pair is answered with `{"channelID":101,"channelName":"ticker","event":"subscriptionStatus",
"pair":"XBT/USDT","status":"subscribed","subscription":{"name":"ticker"}}`. Updates are arrays:
`[101,{"a":["5525.4",1,"1.0"],"b":["5525.1",1,"1.0"],"c":["5525.1","0.1"],...},"ticker","XBT/USDT"]`,
and `{"event":"heartbeat"}` arrives after a second without updates.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import orjson
from websockets.asyncio.server import ServerConnection

from feeds.simulator.clients import Client, SessionHub
from feeds.simulator.exchange_info import kraken_asset_pairs, kraken_wsname
from feeds.simulator.wire import text_frame

CHANNEL_ID_BASE = 100
HEARTBEAT = text_frame(b'{"event":"heartbeat"}')
_SIZE = "1.00000000"


class KrakenDialect:
    """Encodes ticker arrays and serves a v1 websocket session (subscribe, unsubscribe, ping)."""

    name = "kraken"
    ws_path = ""

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = tuple(symbols)
        self._pairs = [kraken_wsname(s) for s in self.symbols]
        self._index = {p: i for i, p in enumerate(self._pairs)}
        self._heads = [f'[{CHANNEL_ID_BASE + i},{{"a":["' for i in range(len(self._pairs))]
        self._tails = [f'"ticker","{p}"]' for p in self._pairs]
        self._connection_ids = itertools.count(1)
        self._garbage = itertools.cycle(range(6))

    def exchange_info(self) -> dict[str, object]:
        """The `/0/public/AssetPairs` document of the simulated symbols."""
        return kraken_asset_pairs(self.symbols)

    def accepts_path(self, path: str) -> bool:
        """Kraken's websocket lives at the root."""
        return path in ("", "/")

    def _payload(self, i: int, bid: float, ask: float) -> str:
        b, a = repr(bid), repr(ask)
        return (
            f'{self._heads[i]}{a}",1,"{_SIZE}"],"b":["{b}",1,"{_SIZE}"],"c":["{b}","0.10000000"],'
            f'"v":["0.0","0.0"],"p":["{b}","{b}"],"t":[0,0],"l":["{b}","{b}"],'
            f'"h":["{a}","{a}"],"o":["{b}","{b}"]}},{self._tails[i]}'
        )

    def encode(self, index: int, bid: float, ask: float) -> bytes:
        """One ticker frame."""
        return text_frame(self._payload(index, bid, ask).encode())

    def encode_many(self, indices: Sequence[int], bids: Sequence[float], asks: Sequence[float]) -> list[bytes]:
        """Ticker frames for parallel lists of symbol indices, bids and asks."""
        payload = self._payload
        return [text_frame(payload(i, b, a).encode()) for i, b, a in zip(indices, bids, asks, strict=True)]

    def garbage(self, client: Client) -> bytes:
        """One frame that cryptofeed's Kraken parser cannot handle: broken JSON or a wrong shape."""
        subscribed = client.mask.nonzero()[0]
        i = int(subscribed[0]) if subscribed.size else 0
        pair, cid = self._pairs[i], CHANNEL_ID_BASE + i
        kind = next(self._garbage)
        payloads = (
            f'[{cid},{{"a":["1",1,"1"],"b":',
            f'[{cid},{{"a":["1",1,"1"]}},"ticker","{pair}"]',
            '{"status":"online"}',
            f"[{cid}]",
            f'[{cid},{{"a":["x",1,"1"],"b":["y",1,"1"]}},"ticker","{pair}"]',
            "this is not json",
        )
        return text_frame(payloads[kind].encode())

    async def session(self, conn: ServerConnection, client: Client, hub: SessionHub) -> None:
        """Greet, then answer subscribe, unsubscribe and ping requests until the client leaves."""
        hub.control(client, {"connectionID": next(self._connection_ids), "event": "systemStatus",
                             "status": "online", "version": "1.9.1"})
        async for raw in conn:
            try:
                msg = orjson.loads(raw)
            except orjson.JSONDecodeError:
                hub.control(client, {"event": "error", "errorMessage": "Malformed request"})
                continue
            event = msg.get("event") if isinstance(msg, dict) else None
            if event == "ping":
                hub.control(client, {"event": "pong", "reqid": msg.get("reqid")})
            elif event in ("subscribe", "unsubscribe"):
                self._subscription(client, hub, msg, event == "subscribe")
            else:
                hub.control(client, {"event": "error", "errorMessage": f"Unsupported event {event!r}"})

    def _subscription(self, client: Client, hub: SessionHub, msg: dict[str, object], on: bool) -> None:
        sub = msg.get("subscription")
        name = sub.get("name") if isinstance(sub, dict) else None
        pairs = msg.get("pair")
        for pair in pairs if isinstance(pairs, list) else [pairs]:
            status: dict[str, object] = {"channelName": name, "event": "subscriptionStatus", "pair": pair,
                                         "subscription": {"name": name}}
            i = self._index.get(pair) if isinstance(pair, str) else None
            if name != "ticker":
                status.update(status="error", errorMessage="Subscription name invalid")
            elif i is None:
                status.update(status="error", errorMessage=f"Currency pair not supported {pair}")
            else:
                hub.subscribe(client, [i], on)
                status.update(channelID=CHANNEL_ID_BASE + i, status="subscribed" if on else "unsubscribed")
            hub.control(client, status)
