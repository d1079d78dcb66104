"""MQTT outages against a REAL mosquitto: a dead connection (the broker's last will), a broker restart and a
broker down at start; the bridge comes back and every outbox event still arrives."""
from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from ops.ledger import Ledger
from tests.integration.mqtt_kit import (
    ACL,
    USERS,
    WAIT_SECS,
    Broker,
    Watcher,
    broker_dir,
    enqueue,
    make_bridge,
    running,
)
from tests.integration.services import HOST

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]


class Relay:
    """A TCP relay in front of the broker whose connections the test can kill (no MQTT DISCONNECT is sent)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.kill_connections()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def kill_connections(self) -> None:
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(pipe(reader, up_writer))
            tg.create_task(pipe(up_reader, writer))


@pytest.mark.asyncio
async def test_last_will_says_offline_when_the_connection_dies_and_the_bridge_comes_back(
    broker: Broker, outbox: Ledger,
) -> None:
    async with Relay(broker.port) as relay, Watcher(broker.port, "viewer", "keel/status") as watcher:
        async with running(make_bridge(relay.port, outbox)) as bridge:
            assert await watcher.next_on("keel/status") == b"online"
            relay.kill_connections()
            assert await watcher.next_on("keel/status", after=1) == b"offline"  # the broker's last will
            assert await watcher.next_on("keel/status", after=2) == b"online"  # reconnected
            await bridge.wait_until(lambda: bridge.connected, WAIT_SECS)
            assert bridge.counters.reconnects == 1
            async with Watcher(broker.port, "viewer", "keel/core/fill") as fills:
                sent = await enqueue(outbox, 3, "after-reconnect")
                await fills.until(lambda: fills.payloads("keel/core/fill") == sent)


async def watch_persistently(broker: Broker, identifier: str) -> Watcher:
    """A persistent-session subscriber to the fill events (the broker queues them while it is away)."""
    return Watcher(broker.port, "viewer", "keel/core/fill", identifier=identifier, persistent=True)


def fill_payloads(*watchers: Watcher) -> list[bytes]:
    return [p for w in watchers for p in w.payloads("keel/core/fill")]


@pytest.mark.asyncio
async def test_every_event_survives_a_broker_restart(broker: Broker, outbox: Ledger) -> None:
    sid = f"watch-{uuid.uuid4().hex[:6]}"
    first = await watch_persistently(broker, sid)
    async with first, running(make_bridge(broker.port, outbox)) as bridge:
        before = await enqueue(outbox, 20, "before")
        await first.until(lambda: len(fill_payloads(first)) >= 20)

        await asyncio.to_thread(broker.stop)  # SIGTERM by PID: mosquitto saves the subscriber's session
        await bridge.wait_until(lambda: not bridge.connected, WAIT_SECS)
        failures = bridge.counters.connect_failures
        during = await enqueue(outbox, 20, "during")  # the engine's writes never wait for the broker
        await bridge.wait_until(lambda: bridge.counters.connect_failures >= failures + 2, WAIT_SECS)
        assert not bridge.connected

        await asyncio.to_thread(broker.start)  # same port
        await bridge.wait_until(lambda: bridge.connected, WAIT_SECS)
        after = await enqueue(outbox, 20, "after")
        second = await watch_persistently(broker, sid)
        async with second:
            sent = before + during + after
            await second.until(lambda: set(sent) <= set(fill_payloads(first, second)))
            await bridge.wait_until(lambda: bridge.counters.events_published >= 60, WAIT_SECS)
    assert set(fill_payloads(first, second)) == set(sent)
    assert await outbox.outbox_pending(100) == []
    assert bridge.counters.reconnects == 1


@pytest.mark.asyncio
async def test_a_broker_down_at_start_is_retried_without_blocking_and_then_gets_everything(
    outbox: Ledger,
) -> None:
    with broker_dir() as workdir:
        broker = Broker(workdir, USERS, ACL)
        await asyncio.to_thread(broker.start)  # once, to create the subscriber's persistent session
        sid = f"watch-{uuid.uuid4().hex[:6]}"
        async with await watch_persistently(broker, sid):
            pass
        await asyncio.to_thread(broker.stop)
        try:
            bridge = make_bridge(broker.port, outbox)
            async with running(bridge):
                await bridge.wait_until(lambda: bridge.counters.connect_failures >= 3, WAIT_SECS)
                # Nothing waits for the broker: the engine's writes to the outbox complete during the outage
                # (the broker comes back only below, so a write that waited for it would never return).
                sent = await enqueue(outbox, 50, "down")
                assert not bridge.connected and bridge.counters.connects == 0

                await asyncio.to_thread(broker.start)
                await bridge.wait_until(lambda: bridge.counters.events_published >= 50, WAIT_SECS)
                async with await watch_persistently(broker, sid) as watcher:
                    await watcher.until(lambda: set(fill_payloads(watcher)) == set(sent))
                assert bridge.connected and bridge.counters.connects == 1
        finally:
            broker.stop()
