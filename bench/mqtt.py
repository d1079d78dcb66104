"""Outbox events per second through the MQTT bridge and a real mosquitto to a subscriber; prints one JSON line.

The ledger's outbox is filled first; then the bridge starts and publishes every row (QoS 1, in order, marked
published after the broker's acknowledgement) to a subscriber running in its own process (QoS 1), which
reports when it has received all of them. The figure is events / (last receipt - bridge start).

Usage: .venv/bin/python bench/mqtt.py [--events 20000] [--payload-bytes 200]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import aiomqtt
import orjson

from ops.config_schema import MqttConfig
from ops.ledger import Ledger
from ops.mqtt import OUTBOX_BATCH, OUTBOX_WINDOW, MqttBridge
from ops.mqtt_commands import Command, CommandResult

TOPIC = "keel/core/fill"


@contextlib.contextmanager
def mosquitto() -> Iterator[int]:
    """An anonymous mosquitto on a free 127.0.0.1 port; yields the port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="keel-bench-mosquitto-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
                        "log_type error\n")
        if os.geteuid() == 0:  # mosquitto drops root for its own user
            entry = pwd.getpwnam("mosquitto")
            for path in (Path(tmp), conf):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start")
                time.sleep(0.02)  # polling the broker's readiness against a deadline
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=5)


class NoCommands:
    """A command handler that is never called here."""

    async def handle(self, portfolio: str, command: Command) -> CommandResult:
        """Refuse."""
        return CommandResult(False, "benchmark")


async def subscribe(port: int, events: int) -> None:
    """The subscriber process: count distinct events, print `ready`, then one JSON line when all arrived."""
    seen: set[bytes] = set()
    received = 0
    first = last = 0.0
    async with aiomqtt.Client("127.0.0.1", port, max_queued_incoming_messages=0) as client:
        await client.subscribe(TOPIC, qos=1)
        print("ready", flush=True)
        async for message in client.messages:
            last = time.time()
            if not received:
                first = last
            received += 1
            seen.add(bytes(message.payload))
            if len(seen) >= events:
                break
    print(orjson.dumps({"first": first, "last": last, "received": received}).decode(), flush=True)


async def fill_outbox(ledger: Ledger, events: int, payload_bytes: int) -> None:
    """Enqueue `events` fill-like events, many at a time (the ledger commits them in groups)."""
    pad = "x" * max(0, payload_bytes - 120)
    chunk = 500
    for start in range(0, events, chunk):
        await asyncio.gather(*(
            ledger.enqueue_outbox("core/fill", orjson.dumps({
                "trade_id": f"t{n}", "symbol": "BTC-USDT", "side": "buy", "quantity": str(Decimal("0.001")),
                "price": "65000.1", "pad": pad,
            }))
            for n in range(start, min(start + chunk, events))
        ))


async def run(events: int, payload_bytes: int) -> dict[str, object]:
    """Fill, start the subscriber process and the bridge, and time the delivery."""
    with mosquitto() as port, tempfile.TemporaryDirectory(prefix="keel-bench-mqtt-") as tmp:
        ledger = await Ledger.open(Path(tmp) / "ledger.sqlite")
        try:
            await fill_outbox(ledger, events, payload_bytes)
            sub = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--subscriber", str(port), "--events", str(events),
                stdout=asyncio.subprocess.PIPE,
            )
            assert sub.stdout is not None
            if (await sub.stdout.readline()).strip() != b"ready":
                raise RuntimeError("subscriber did not start")
            config = MqttConfig(enabled=True, port=port, client_id="keel-bench", drift_interval_secs=5.0)
            bridge = MqttBridge(config, username=None, password=None, portfolios=["core"], snapshots=list,
                                outbox=ledger, commands=NoCommands())
            cpu0, wall0 = time.process_time(), time.time()
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(bridge.run())
                report = orjson.loads(await sub.stdout.readline())
                cpu = time.process_time() - cpu0
                await bridge.wait_until(lambda: bridge.counters.events_published >= events, 60.0)
                task.cancel()
            await sub.wait()
        finally:
            await ledger.close()
    secs = report["last"] - wall0
    return {
        "bench": "mqtt_outbox_to_subscriber", "events": events, "payload_bytes": payload_bytes,
        "secs": round(secs, 3), "events_per_sec": round(events / secs),
        "bridge_cpu_us_per_event": round(cpu / events * 1e6, 1), "duplicates": report["received"] - events,
        "window": OUTBOX_WINDOW, "batch": OUTBOX_BATCH,
    }


def main() -> None:
    """Parse arguments, run, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--payload-bytes", type=int, default=200)
    parser.add_argument("--subscriber", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        asyncio.run(subscribe(args.subscriber, args.events))
        return
    print(orjson.dumps(asyncio.run(run(args.events, args.payload_bytes))).decode())


if __name__ == "__main__":
    main()
