"""The MQTT bridge against a REAL mosquitto with a password file and an ACL; every check is a receipt by a second
client. Here: events, state and status, logins and TLS (commands and outages have their own files)."""
from __future__ import annotations

import asyncio
import gc
import ssl
import subprocess
import time
from pathlib import Path

import aiomqtt
import orjson
import pytest

from engine.types import PortfolioSnapshot
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
    snapshot,
    until,
)
from tests.integration.services import HOST, find_binary

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]


# ----- events, state and status -----

@pytest.mark.asyncio
async def test_status_state_drift_and_outbox_events_arrive_in_order(broker: Broker, outbox: Ledger) -> None:
    calls: list[float] = []
    called = asyncio.Event()
    drift = [0.02]

    def snapshots() -> list[PortfolioSnapshot]:
        calls.append(time.monotonic())
        called.set()
        return [snapshot("core", drift[0]), snapshot("sat", 0.01)]

    before = [*await enqueue(outbox, 3, "before", "intent"), *await enqueue(outbox, 3, "before", "fill")]
    async with Watcher(broker.port, "viewer", "keel/#") as watcher:
        started = time.monotonic()
        async with running(make_bridge(broker.port, outbox, snapshots=snapshots, interval=0.1)) as bridge:
            assert await watcher.next_on("keel/status") == b"online"
            state = orjson.loads(await watcher.next_on("keel/core/state"))
            assert (state["name"], state["holdings"], state["drift"]) == ("core", {"BTC": "0.1", "ETH": "1.5"}, 0.02)
            assert orjson.loads(await watcher.next_on("keel/sat/drift"))["drift"] == 0.01
            after = [*await enqueue(outbox, 5, "after", "fill"), *await enqueue(outbox, 2, "after", "alert")]
            events = ("keel/core/intent", "keel/core/fill", "keel/core/alert")
            await watcher.until(lambda: sum(len(watcher.payloads(t)) for t in events) >= 13)
            in_order = [bytes(m.payload) for m in watcher.received if str(m.topic) in events]  # type: ignore[arg-type]
            assert in_order == before + after
            await bridge.wait_until(lambda: bridge.counters.events_published == 13, WAIT_SECS)
            assert await outbox.outbox_pending(100) == [] and bridge.connected

            # A change is published once; an unchanged snapshot is not published again.
            drift[0] = 0.07
            assert orjson.loads(await watcher.next_on("keel/core/state", after=1))["drift"] == 0.07
            n_calls = len(calls)
            await until(lambda: len(calls) >= n_calls + 3, called)
            marker = await enqueue(outbox, 1, "marker", "alert")
            await watcher.until(lambda: marker[0] in watcher.payloads("keel/core/alert"))
            assert len(watcher.payloads("keel/core/state")) == 2
            assert len(watcher.payloads("keel/core/drift")) == 2
            assert len(watcher.payloads("keel/sat/state")) == 1
        # Rate limit: snapshots are read at most once per interval (0.1 s), however fast they change.
        assert len(calls) <= (time.monotonic() - started) / 0.1 + 2
        assert await watcher.next_on("keel/status", after=1) == b"offline"

    # Retained: a client that subscribes later gets the latest state and the offline status.
    async with Watcher(broker.port, "viewer", "keel/core/state", "keel/status") as late:
        assert orjson.loads(await late.next_on("keel/core/state"))["drift"] == 0.07
        assert await late.next_on("keel/status") == b"offline"
        assert all(m.retain for m in late.received)


# ----- authentication -----

@pytest.mark.asyncio
async def test_a_wrong_password_is_refused_and_the_bridge_keeps_retrying(broker: Broker, outbox: Ledger) -> None:
    with pytest.raises(aiomqtt.MqttCodeError):
        async with aiomqtt.Client(HOST, broker.port, username="viewer", password="wrong"):
            pass
    bridge = make_bridge(broker.port, outbox, password="not-the-password")
    async with running(bridge):
        await bridge.wait_until(lambda: bridge.counters.connect_failures >= 3, WAIT_SECS)
        assert not bridge.connected and bridge.counters.connects == 0
        assert "not-the-password" not in bridge.last_error and "authori" in bridge.last_error.lower()


# ----- TLS -----

def self_signed_certificate(workdir: Path) -> tuple[Path, Path]:
    """A certificate for IP 127.0.0.1 and its key, made with openssl."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run([
        find_binary("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1",
    ], check=True, capture_output=True)
    return cert, key


# paho leaks the TLS socket of a failed handshake (closed when collected); collect it inside this test.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.asyncio
async def test_tls_with_the_configured_ca_file_and_a_refusal_without_it(outbox: Ledger) -> None:
    with broker_dir() as workdir:
        cert, key = await asyncio.to_thread(self_signed_certificate, workdir)
        broker = Broker(workdir, USERS, ACL, tls=(cert, key))
        await asyncio.to_thread(broker.start)
        try:
            untrusting = make_bridge(broker.port, outbox, tls=True)  # the system CAs do not know this cert
            async with running(untrusting):
                await untrusting.wait_until(lambda: untrusting.counters.connect_failures >= 2, WAIT_SECS)
                assert not untrusting.connected and "CERTIFICATE_VERIFY_FAILED" in untrusting.last_error
            gc.collect()

            client_tls = ssl.create_default_context(cafile=str(cert))
            async with Watcher(broker.port, "viewer", "keel/status", "keel/core/fill", tls_context=client_tls) as w:
                bridge = make_bridge(broker.port, outbox, tls=True, ca_file=str(cert))
                async with running(bridge):
                    assert await w.next_on("keel/status") == b"online"
                    sent = await enqueue(outbox, 3, "tls")
                    await w.until(lambda: w.payloads("keel/core/fill") == sent)
        finally:
            broker.stop()
