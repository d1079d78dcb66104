"""OKX's v5 public websocket, as cryptofeed 2.4.1's OKX feed uses it for its TICKER channel (`tickers`).

The client connects to `/ws/v5/public` and subscribes with
`{"op":"subscribe","args":[{"channel":"tickers","instId":"BTC-USDT"}]}`; each argument is answered with
`{"event":"subscribe","arg":{"channel":"tickers","instId":"BTC-USDT"},"connId":"0000000a"}` (a refused one with
`{"event":"error","code":"60018","msg":"...","connId":"0000000a"}`). Updates carry OKX's own time in ms:
`{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instType":"SPOT","instId":"BTC-USDT","last":"9999.99",
"lastSz":"0.1","askPx":"9999.99","askSz":"11","bidPx":"8888.88","bidSz":"5","open24h":"9000",...,
"ts":"1597026383085"}]}`. The plain text `ping` is answered with `pong`; there is no server heartbeat.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

import orjson
from websockets.asyncio.server import ServerConnection

from feeds.simulator.clients import Client, SessionHub
from feeds.simulator.exchange_info import okx_inst_id, okx_instruments
from feeds.simulator.wire import text_frame

WS_PATH = "/ws/v5/public"
CHANNEL = "tickers"
_SIZE = "1"


class OkxDialect:
    """Encodes `tickers` pushes and serves a v5 public websocket session (subscribe, unsubscribe, ping)."""

    name = "okx"
    ws_path = WS_PATH

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = tuple(symbols)
        self._ids = [okx_inst_id(s) for s in self.symbols]
        self._index = {inst: i for i, inst in enumerate(self._ids)}
        self._heads = [
            f'{{"arg":{{"channel":"{CHANNEL}","instId":"{inst}"}},"data":[{{"instType":"SPOT","instId":"{inst}",'
            f'"last":"'
            for inst in self._ids
        ]
        self._conn_ids = itertools.count(1)
        self.clock_ns: Callable[[], int] = time.time_ns  # OKX's clock, which stamps `ts`
        self._garbage = itertools.cycle(range(6))

    def exchange_info(self) -> dict[str, object]:
        """The `/api/v5/public/instruments?instType=SPOT` document of the simulated symbols."""
        return okx_instruments(self.symbols)

    def accepts_path(self, path: str) -> bool:
        """OKX's public websocket path."""
        return path == WS_PATH

    def _payload(self, i: int, bid: float, ask: float, ts_ms: int) -> str:
        b, a = repr(bid), repr(ask)
        return (
            f'{self._heads[i]}{b}","lastSz":"0.1","askPx":"{a}","askSz":"{_SIZE}","bidPx":"{b}","bidSz":"{_SIZE}",'
            f'"open24h":"{b}","high24h":"{a}","low24h":"{b}","sodUtc0":"{b}","sodUtc8":"{b}",'
            f'"volCcy24h":"0","vol24h":"0","ts":"{ts_ms}"}}]}}'
        )

    def encode(self, index: int, bid: float, ask: float) -> bytes:
        """One `tickers` push stamped with the current time (OKX's exchange time, in ms)."""
        return text_frame(self._payload(index, bid, ask, self.clock_ns() // 1_000_000).encode())

    def encode_many(self, indices: Sequence[int], bids: Sequence[float], asks: Sequence[float]) -> list[bytes]:
        """`tickers` pushes for parallel lists of symbol indices, bids and asks, all stamped now."""
        payload, ts_ms = self._payload, self.clock_ns() // 1_000_000
        return [text_frame(payload(i, b, a, ts_ms).encode()) for i, b, a in zip(indices, bids, asks, strict=True)]

    def garbage(self, client: Client) -> bytes:
        """One frame that cryptofeed's OKX parser cannot handle: broken JSON or a wrong shape."""
        subscribed = client.mask.nonzero()[0]
        inst = self._ids[int(subscribed[0])] if subscribed.size else "BTC-USDT"
        arg = f'"arg":{{"channel":"{CHANNEL}","instId":"{inst}"}}'
        kind = next(self._garbage)
        payloads = (
            f'{{{arg},"data":[{{"instType":"SPOT","instId":"{inst}","bidPx":',
            f"{{{arg}}}",
            f'{{{arg},"data":[{{"instType":"SPOT","instId":"{inst}","last":"1","ts":"1"}}]}}',
            f'{{{arg},"data":[{{"instId":"{inst}","bidPx":"x","bidSz":"1","askPx":"y","askSz":"1","ts":"1"}}]}}',
            '{"arg":"tickers","data":[]}',
            "this is not json",
        )
        return text_frame(payloads[kind].encode())

    async def session(self, conn: ServerConnection, client: Client, hub: SessionHub) -> None:
        """Answer `ping`, subscribe and unsubscribe requests until the client leaves."""
        conn_id = f"{next(self._conn_ids):08x}"
        async for raw in conn:
            if raw == "ping":
                hub.control(client, "pong")
                continue
            try:
                msg = orjson.loads(raw)
            except orjson.JSONDecodeError:
                msg = None
            op = msg.get("op") if isinstance(msg, dict) else None
            args = msg.get("args") if isinstance(msg, dict) else None
            if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
                text = raw if isinstance(raw, str) else raw.decode(errors="replace")
                hub.control(client, {"event": "error", "code": "60012", "msg": f"Invalid request: {text[:200]}",
                                     "connId": conn_id})
                continue
            for arg in args:
                self._subscription(client, hub, arg, op, conn_id)

    def _subscription(self, client: Client, hub: SessionHub, arg: object, op: str, conn_id: str) -> None:
        channel = arg.get("channel") if isinstance(arg, dict) else None
        inst = arg.get("instId") if isinstance(arg, dict) else None
        i = self._index.get(inst) if isinstance(inst, str) else None
        if channel != CHANNEL or i is None:
            hub.control(client, {"event": "error", "code": "60018",
                                 "msg": f"Wrong URL or channel:{channel},instId:{inst} doesn't exist.",
                                 "connId": conn_id})
            return
        hub.subscribe(client, [i], op == "subscribe")
        hub.control(client, {"event": op, "arg": {"channel": CHANNEL, "instId": inst}, "connId": conn_id})
