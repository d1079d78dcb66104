"""The MQTT bridge's health in Prometheus: the session, what went out and the outbox still waiting, measured
from a real SQLite ledger, with a real mosquitto up or nowhere to be found, and scraped from the running service."""
from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine.types import Intent, Reason
from ops.config import loads_config
from ops.config_schema import MqttConfig
from ops.ledger import Ledger
from ops.metrics import PrometheusSensor
from ops.metrics_mqtt import MqttCollector
from ops.mqtt import Backoff, MqttBridge
from ops.service import Service
from tests.integration.mqtt_kit import T0, Clock, NoCommands
from tests.integration.services import HOST, free_port, mosquitto

pytestmark = pytest.mark.timeout(90)

SEC_NS = 1_000_000_000
WAIT_SECS = 10.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def ledger(clocked_outbox: Ledger) -> Ledger:
    """The outbox on the clock the test moves."""
    return clocked_outbox


def parse(text: str) -> Samples:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(bridge: MqttBridge, clock: Clock) -> Samples:
    """What Prometheus would read from a registry holding only the bridge's collector."""
    registry = CollectorRegistry()
    registry.register(MqttCollector(bridge, now_ns=clock))
    return parse(generate_latest(registry).decode())


def bridge_for(port: int, ledger: Ledger) -> MqttBridge:
    config = MqttConfig(enabled=True, host=HOST, port=port, client_id="keel-metrics")
    return MqttBridge(config, username=None, password=None, portfolios=["core"], snapshots=list, outbox=ledger,
                      commands=NoCommands(), backoff=Backoff(initial_secs=0.05, cap_secs=0.2), keepalive_secs=5,
                      timeout_secs=3.0, backlog_interval_secs=0.02)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_with_no_broker_the_waiting_events_and_their_age_are_exported(ledger: Ledger, clock: Clock) -> None:
    for i in range(3):
        await ledger.enqueue_outbox("core/fill", f"fill-{i}".encode())
        clock.now_ns += 10 * SEC_NS
    bridge = bridge_for(free_port(), ledger)  # nothing listens there
    assert ("keel_mqtt_outbox_backlog_events", ()) not in scrape(bridge, clock)  # not measured: no false zero
    task = asyncio.create_task(bridge.run())
    try:
        await bridge.wait_until(lambda: bridge.backlog is not None and bridge.counters.connect_failures >= 2,
                                WAIT_SECS)
        clock.now_ns = T0 + 90 * SEC_NS
        samples = scrape(bridge, clock)
    finally:
        await stop(task)
    assert samples[("keel_mqtt_connected", ())] == 0
    assert samples[("keel_mqtt_outbox_backlog_events", ())] == 3
    assert samples[("keel_mqtt_outbox_oldest_event_age_seconds", ())] == 90.0  # the first event, written at T0
    assert samples[("keel_mqtt_connect_failures_total", ())] >= 2
    assert samples[("keel_mqtt_connects_total", ())] == 0
    assert samples[("keel_mqtt_outbox_events_total", (("outcome", "published"),))] == 0


@pytest.mark.services
@pytest.mark.asyncio
async def test_published_events_leave_the_backlog_and_are_counted(ledger: Ledger, clock: Clock) -> None:
    seqs = [await ledger.enqueue_outbox("core/fill", f"fill-{i}".encode()) for i in range(4)]
    with mosquitto() as broker:
        bridge = bridge_for(broker.port, ledger)
        task = asyncio.create_task(bridge.run())
        try:
            await bridge.wait_until(lambda: bridge.counters.events_published == 4, WAIT_SECS)
            await bridge.wait_until(lambda: bridge.backlog is not None and bridge.backlog.events == 0, WAIT_SECS)
            samples = scrape(bridge, clock)
        finally:
            await stop(task)
    assert samples[("keel_mqtt_connected", ())] == 1
    assert samples[("keel_mqtt_connects_total", ())] == 1 and samples[("keel_mqtt_reconnects_total", ())] == 0
    assert samples[("keel_mqtt_outbox_events_total", (("outcome", "published"),))] == len(seqs)
    assert samples[("keel_mqtt_outbox_events_total", (("outcome", "dropped"),))] == 0
    assert samples[("keel_mqtt_messages_published_total", ())] >= len(seqs) + 1  # the events and `online`
    assert samples[("keel_mqtt_outbox_backlog_events", ())] == 0
    assert samples[("keel_mqtt_outbox_oldest_event_age_seconds", ())] == 0.0
    conn = sqlite3.connect(ledger.path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM outbox WHERE published_ns IS NULL").fetchone()[0] == 0
    finally:
        conn.close()


CONFIG = """
[portfolio]
name = "mx"
capital = 10000
[portfolio.targets]
BTC = 0.5
ETH = 0.3
USDT = 0.2
[rebalance]
threshold = 0.02
window_secs = 1
[feed]
source = "sim"
sim_rate_hz = 150
sim_swing = 0.12
speed = 40
stale_secs = 0
[ledger]
path = "{ledger}"
[metrics]
port = 0
[mqtt]
enabled = true
port = {port}
"""


@pytest.mark.services
@pytest.mark.asyncio
async def test_the_service_serves_its_bridge_metrics(tmp_path: Path) -> None:
    with mosquitto() as broker:
        config = loads_config(CONFIG.format(ledger=tmp_path / "keel.sqlite", port=broker.port), base_dir=tmp_path)
        service = Service(config, state_dir=tmp_path, sensor=PrometheusSensor())  # as `keel run` builds it
        stop_service = asyncio.Event()
        rebalanced = asyncio.Event()
        on_done = service.on_done

        def watch(intent: Intent, outcome: str) -> None:
            on_done(intent, outcome)
            if intent.reason is Reason.THRESHOLD:
                rebalanced.set()

        service.on_done = watch  # type: ignore[method-assign]
        task = asyncio.create_task(service.run(stop_service))
        try:
            await asyncio.wait_for(rebalanced.wait(), 60)
            bridge = service.mqtt_bridge
            assert isinstance(bridge, MqttBridge)
            # the start's and the rebalance's events are out and the backlog was measured after them
            await bridge.wait_until(lambda: bridge.counters.events_published >= 2 and bridge.backlog is not None
                                    and bridge.backlog.events == 0, 30)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                async with http.get(f"http://127.0.0.1:{service.metrics_port}/metrics") as resp:
                    samples = parse(await resp.text())
            assert samples[("keel_mqtt_outbox_events_total", (("outcome", "published"),))] >= 2
            assert samples[("keel_mqtt_connected", ())] == 1
            assert samples[("keel_mqtt_connect_failures_total", ())] == 0
            assert ("keel_portfolio_value_quote", (("portfolio", "mx"),)) in samples  # one registry for both
        finally:
            stop_service.set()
            await asyncio.wait_for(task, 30)
