"""The MQTT bridge's health as Prometheus metrics, read at scrape time (registered only when MQTT is on)."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ops.ledger_read import OutboxBacklog


class MqttCounts(Protocol):
    """The bridge's monotonic counters (ops.mqtt.MqttCounters)."""

    connects: int
    reconnects: int
    connect_failures: int
    published: int
    events_published: int
    events_dropped: int
    events_pruned: int
    commands_ok: int
    commands_error: int
    answers_dropped: int


class MqttState(Protocol):
    """What the collector reads of the bridge (ops.mqtt.MqttBridge)."""

    @property
    def connected(self) -> bool: ...

    @property
    def counters(self) -> MqttCounts: ...

    @property
    def backlog(self) -> OutboxBacklog | None: ...


class MqttCollector:
    """keel_mqtt_*: the broker connection, what went out, the commands taken and the outbox still to publish."""

    def __init__(self, bridge: MqttState, *, now_ns: Callable[[], int] = time.time_ns) -> None:
        self._bridge = bridge
        self._now_ns = now_ns

    def describe(self) -> list[Metric]:
        """The families this collector exports (no samples; lets the registry catch name clashes)."""
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        """The families with their samples, read from the bridge now."""
        fam = self._families()
        bridge = self._bridge
        c = bridge.counters
        fam["connected"].add_metric([], 1.0 if bridge.connected else 0.0)
        fam["connects"].add_metric([], c.connects)
        fam["reconnects"].add_metric([], c.reconnects)
        fam["failures"].add_metric([], c.connect_failures)
        fam["messages"].add_metric([], c.published)
        fam["events"].add_metric(["published"], c.events_published)
        fam["events"].add_metric(["dropped"], c.events_dropped)
        fam["events"].add_metric(["pruned"], c.events_pruned)
        fam["commands"].add_metric(["ok"], c.commands_ok)
        fam["commands"].add_metric(["error"], c.commands_error)
        fam["answers_dropped"].add_metric([], c.answers_dropped)
        backlog = bridge.backlog
        if backlog is not None:  # not measured yet: no sample rather than a false zero
            fam["backlog"].add_metric([], backlog.events)
            oldest = backlog.oldest_created_ns
            fam["oldest"].add_metric([], 0.0 if oldest is None else max(self._now_ns() - oldest, 0) / 1e9)
        yield from fam.values()

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
        return {
            "connected": GaugeMetricFamily("keel_mqtt_connected", "1 while the broker session is up and subscribed."),
            "connects": CounterMetricFamily("keel_mqtt_connects", "Broker sessions opened."),
            "reconnects": CounterMetricFamily("keel_mqtt_reconnects", "Broker sessions opened after the first."),
            "failures": CounterMetricFamily("keel_mqtt_connect_failures", "Connection attempts that failed."),
            "messages": CounterMetricFamily("keel_mqtt_messages_published", "Messages the broker acknowledged."),
            "events": CounterMetricFamily(
                "keel_mqtt_outbox_events", "Outbox events published, dropped (invalid topic) or pruned.", labels=["outcome"],
            ),
            "commands": CounterMetricFamily("keel_mqtt_commands", "Commands received, by result.", labels=["result"]),
            "answers_dropped": CounterMetricFamily(
                "keel_mqtt_answers_dropped", "Command answers dropped because too many were waiting.",
            ),
            "backlog": GaugeMetricFamily("keel_mqtt_outbox_backlog_events", "Outbox events not yet published."),
            "oldest": GaugeMetricFamily(
                "keel_mqtt_outbox_oldest_event_age_seconds", "Age of the oldest unpublished outbox event (0: none).",
            ),
        }
