"""Live-feed throughput: the exchange simulator in a subprocess sending as fast as it can, cryptofeed here.

    .venv/bin/python bench/live_feed.py [--exchange binance|kraken|okx] [--secs 5] [--raw]

Prints one JSON line: ticks/s received by the adapter over the window (after a 1 s warm-up), the CPU
seconds of this process and of the simulator over the same window. `--raw` replaces cryptofeed with a
reader that discards bytes, to see what the simulator alone can send.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.types import Tick  # noqa: E402
from feeds.simulator import ExchangeSimulator, SyntheticSource  # noqa: E402
from feeds.simulator.certs import client_ssl_context  # noqa: E402
from feeds.simulator.exchange_info import EXCHANGES  # noqa: E402

SYMBOLS = ("BTC-USDT", "ETH-USDT", "SOL-USDT")
WARMUP_SECS = 1.0


async def serve(cert_dir: Path, exchange: str) -> None:
    """Child: run the simulator; answer each stdin line with its counters; stop at end of input."""
    sim = ExchangeSimulator(cert_dir=cert_dir, source=SyntheticSource(SYMBOLS, seed=1, rate_hz=0.0),
                            exchanges=(exchange,))  # type: ignore[arg-type]
    await sim.start()
    print(json.dumps({"port": sim.port, "ws_url": sim.ws_url(exchange), "rest_url": sim.rest_url(exchange)}),  # type: ignore[arg-type]
          flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        print(json.dumps({"frames_sent": sim.frames_sent, "cpu_secs": time.process_time()}), flush=True)
    await sim.stop()


class Child:
    """The simulator subprocess."""

    def __init__(self, cert_dir: Path, exchange: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--cert-dir", str(cert_dir), "--exchange", exchange],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        first = self._line()
        self.port = int(first["port"])
        self.ws_url = str(first["ws_url"])
        self.rest_url = str(first["rest_url"])

    def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the simulator subprocess exited")
        return dict(json.loads(line))

    def counters(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("mark\n")
        self.proc.stdin.flush()
        return self._line()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


async def run_adapter(child: Child, cert_dir: Path, exchange: str, secs: float) -> dict[str, Any]:
    from feeds.cryptofeed_source import CryptofeedSource

    count = 0

    def on_tick(tick: Tick) -> None:
        nonlocal count
        count += 1

    source = CryptofeedSource(exchange, SYMBOLS, ws_url=child.ws_url, rest_url=child.rest_url,  # type: ignore[arg-type]
                              ssl_context=client_ssl_context(cert_dir))
    task = asyncio.create_task(source.run(on_tick))
    try:
        result = await measure(child, secs, lambda: count)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return {**result, "bad_frames": sum(source.bad_frames.values()), "reconnects": source.reconnects}


async def run_raw(child: Child, cert_dir: Path, exchange: str, secs: float) -> dict[str, Any]:
    """Read and discard the simulator's bytes: measures the sender alone."""
    ctx: ssl.SSLContext = client_ssl_context(cert_dir)
    reader, writer = await asyncio.open_connection("127.0.0.1", child.port, ssl=ctx, server_hostname="127.0.0.1")
    streams = "/".join(s.replace("-", "").lower() + "@bookTicker" for s in SYMBOLS)
    path = {"binance": f"/binance/stream?streams={streams}", "kraken": "/kraken", "okx": "/okx/ws/v5/public"}[exchange]
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    subscribe = {
        "kraken": {"event": "subscribe", "pair": ["XBT/USDT", "ETH/USDT", "SOL/USDT"], "subscription": {"name": "ticker"}},
        "okx": {"op": "subscribe", "args": [{"channel": "tickers", "instId": s} for s in SYMBOLS]},
    }.get(exchange)
    if subscribe is not None:
        sub = json.dumps(subscribe).encode()
        size = bytes([0x80 | len(sub)]) if len(sub) < 126 else bytes([0x80 | 126]) + len(sub).to_bytes(2, "big")
        writer.write(b"\x81" + size + b"\0\0\0\0" + sub)  # a text frame masked with a zero key
    got = 0

    async def drain() -> None:
        nonlocal got
        while chunk := await reader.read(1 << 20):
            got += len(chunk)

    task = asyncio.create_task(drain())
    try:
        return await measure(child, secs, lambda: got)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        writer.close()


async def measure(child: Child, secs: float, received: Any) -> dict[str, Any]:
    await asyncio.sleep(WARMUP_SECS)
    sim0, n0, cpu0, t0 = child.counters(), received(), time.process_time(), time.perf_counter()
    await asyncio.sleep(secs)
    sim1, n1, cpu1, t1 = child.counters(), received(), time.process_time(), time.perf_counter()
    wall = t1 - t0
    sent = sim1["frames_sent"] - sim0["frames_sent"]
    return {
        "secs": round(wall, 3),
        "received": n1 - n0,
        "received_per_sec": round((n1 - n0) / wall),
        "cpu_secs": round(cpu1 - cpu0, 3),
        "cpu_us_per_frame": round((cpu1 - cpu0) / max(1, n1 - n0) * 1e6, 2) if sent else None,
        "sim_frames_sent_per_sec": round(sent / wall),
        "sim_cpu_secs": round(sim1["cpu_secs"] - sim0["cpu_secs"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exchange", choices=EXCHANGES, default="binance")
    ap.add_argument("--secs", type=float, default=5.0)
    ap.add_argument("--raw", action="store_true", help="discard bytes instead of running cryptofeed")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cert-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.cert_dir, args.exchange))
        return
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        cert_dir = Path(tmp)
        child = Child(cert_dir, args.exchange)
        try:
            runner = run_raw if args.raw else run_adapter
            result = asyncio.run(runner(child, cert_dir, args.exchange, args.secs))
        finally:
            child.close()
    result = {"bench": "live_feed", "exchange": args.exchange, "mode": "raw" if args.raw else "cryptofeed",
              "cores": os.cpu_count(), **result}
    if args.raw:
        result["received"] = f"{result['received']} bytes"
        result.pop("received_per_sec")
        result.pop("cpu_us_per_frame")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
