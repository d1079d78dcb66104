"""The MQTT bridge: status, conflated state and drift, outbox events (at least once) and commands.

Topics under `config.prefix` (default `keel/`):
- `status`: `online` (retained) on connect, `offline` (retained) on a clean stop or via the last will;
- `<portfolio>/state` (retained, QoS 1) and `<portfolio>/drift` (QoS 0): read from `snapshots()` at most
  once per `drift_interval_secs`, published only when they changed;
- `<portfolio>/intent|fill|alert`, ...: rows of the durable outbox, QoS 1, in outbox order, marked published
  only after the broker acknowledged them, deleted `outbox_retention_secs` after that (checked every 10 minutes;
  the backlog still to publish is measured every 15 s for the metrics, see ops/mqtt_outbox.py);
- `<portfolio>/cmd` (in) and `<portfolio>/cmd/result` (out): see ops/mqtt_commands.py.

Nothing here is awaited by the engine: the engine writes to the ledger's outbox and keeps snapshots in memory;
a broker outage only makes this bridge retry (capped, jittered exponential backoff).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import TypeVar

import aiomqtt
import orjson

from engine.types import PortfolioSnapshot
from feeds.backoff import Backoff
from ops.config_schema import MqttConfig
from ops.ledger_read import OutboxBacklog
from ops.mqtt_commands import CommandDesk, CommandHandler
from ops.mqtt_outbox import (
    OUTBOX_BACKLOG_INTERVAL_SECS,
    OUTBOX_PRUNE_INTERVAL_SECS,
    MeasurableOutbox,
    Outbox,
    PrunableOutbox,
    prune_published,
    unpack_row,
    watch_backlog,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

ONLINE = b"online"
OFFLINE = b"offline"
# aiomqtt warns on every call once more than `pending_calls_threshold` (10) calls are in flight. In a session the
# bridge has at most OUTBOX_WINDOW outbox publishes + 1 state/drift + 1 answer in flight (the subscribe and the
# status publishes happen while nothing else runs): 10.
OUTBOX_WINDOW = 8
OUTBOX_BATCH = 256
SHUTDOWN_TIMEOUT_SECS = 2.0
STABLE_SESSION_SECS = 10.0
CONNECTION_ERRORS = (aiomqtt.MqttError, OSError)  # ssl.SSLError is an OSError
_TOPIC_SUFFIX = re.compile(r"[^+#/\x00$][^+#\x00]*")


@dataclass(slots=True)
class MqttCounters:
    """Monotonic counters for metrics."""

    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    published: int = 0
    events_published: int = 0  # outbox rows acknowledged by the broker and marked published
    events_dropped: int = 0  # outbox rows with an invalid topic (marked, never sent)
    events_pruned: int = 0  # published outbox rows deleted after the retention
    commands_ok: int = 0
    commands_error: int = 0
    answers_dropped: int = 0


def _cancel_requests() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


async def _guarded(call: Awaitable[T]) -> T:
    """Await an aiomqtt call, re-raising a cancellation that it swallowed.

    aiomqtt waits with asyncio.wait_for, which in Python 3.11 drops a cancellation that arrives as the awaited
    acknowledgement completes (fixed in 3.12); the task would then never stop.
    """
    cancels = _cancel_requests()
    result = await call
    if _cancel_requests() > cancels:
        raise asyncio.CancelledError
    return result


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def state_payload(snapshot: PortfolioSnapshot) -> bytes:
    """The retained `<portfolio>/state` JSON: the whole snapshot, exact holdings as strings."""
    return orjson.dumps(snapshot, default=_json_default)


def drift_payload(snapshot: PortfolioSnapshot) -> bytes:
    """The `<portfolio>/drift` JSON: drift, deviations and weights against targets."""
    return orjson.dumps({
        "portfolio": snapshot.name, "drift": snapshot.drift, "deviations": snapshot.deviations,
        "weights": snapshot.weights, "targets": snapshot.targets, "trigger_state": snapshot.trigger_state,
        "paused": snapshot.paused, "stale": snapshot.stale,
    })


class MqttBridge:
    """Keeps one broker connection alive and moves status, state, drift, outbox events and commands over it."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        username: str | None,
        password: str | None,
        portfolios: Sequence[str],
        snapshots: Callable[[], list[PortfolioSnapshot]],
        outbox: Outbox,
        commands: CommandHandler,
        ssl_context: ssl.SSLContext | None = None,
        backoff: Backoff | None = None,
        keepalive_secs: int = 30,
        timeout_secs: float = 10.0,
        rng: random.Random | None = None,
        prune_interval_secs: float = OUTBOX_PRUNE_INTERVAL_SECS,
        backlog_interval_secs: float = OUTBOX_BACKLOG_INTERVAL_SECS,
    ) -> None:
        self._config = config
        self._username = username
        self._password = password
        self._snapshots = snapshots
        self._outbox = outbox
        if ssl_context is None and config.tls:
            ssl_context = ssl.create_default_context(cafile=config.ca_file)
        self._ssl_context = ssl_context
        self._backoff = backoff or Backoff()
        self._keepalive_secs = keepalive_secs
        self._timeout_secs = timeout_secs
        self._rng = rng or random.Random()
        self._prune_interval_secs = prune_interval_secs
        self._backlog_interval_secs = backlog_interval_secs
        self.counters = MqttCounters()
        self.backlog: OutboxBacklog | None = None  # measured every backlog interval when the outbox can say
        self.last_error = ""
        self._connected = False
        self._stopping = False
        self._marking: asyncio.Future[None] | None = None
        self._changed = asyncio.Event()
        self._desk = CommandDesk(config.prefix, portfolios, commands, self.counters, self._notify)
        self._prefix = config.prefix
        self._status_topic = f"{config.prefix}status"
        self._command_filter = f"{config.prefix}+/cmd"

    @property
    def connected(self) -> bool:
        """True while a broker session is up, subscribed to commands and `online` has been published."""
        return self._connected

    async def wait_until(self, predicate: Callable[[], bool], timeout_secs: float) -> None:
        """Wait until `predicate()` holds after a change of connection state or counters; TimeoutError after the limit."""
        async with asyncio.timeout(timeout_secs):
            while not predicate():
                await self._changed.wait()

    async def run(self) -> None:
        """Connect, publish and serve commands until cancelled, reconnecting after every failure."""
        self._stopping = False
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._desk.run(), name="mqtt-commands")
            tg.create_task(self._stay_connected(), name="mqtt-connection")
            outbox = self._outbox
            if self._config.outbox_retention_secs > 0 and isinstance(outbox, PrunableOutbox):
                tg.create_task(prune_published(outbox, self._config.outbox_retention_secs, self._prune_interval_secs,
                                               self._on_pruned), name="mqtt-outbox-prune")
            if isinstance(outbox, MeasurableOutbox):
                tg.create_task(watch_backlog(outbox, self._backlog_interval_secs, self._on_backlog),
                               name="mqtt-outbox-backlog")

    def _on_pruned(self, events: int) -> None:
        self.counters.events_pruned += events
        self._notify()

    def _on_backlog(self, backlog: OutboxBacklog) -> None:
        self.backlog = backlog
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _set_connected(self, connected: bool) -> None:
        if connected != self._connected:
            self._connected = connected
            self._notify()

    def _topic(self, portfolio: str, leaf: str) -> str:
        return f"{self._prefix}{portfolio}/{leaf}"

    async def _stay_connected(self) -> None:
        failures = 0
        address = f"{self._config.host}:{self._config.port}"
        while True:
            connects_before = self.counters.connects
            started = time.monotonic()
            error: BaseException | None = None
            try:
                await self._session()
            except* CONNECTION_ERRORS as group:
                error = _first_leaf(group)
            if self._stopping:
                raise asyncio.CancelledError  # a failed clean disconnect must not swallow our cancellation
            self.last_error = f"{type(error).__name__}: {error}"
            connected = self.counters.connects > connects_before
            if connected and time.monotonic() - started >= STABLE_SESSION_SECS:
                failures = 0  # a connection that held resets the backoff; one that flaps does not
            failures += 1
            delay = self._backoff.delay_secs(failures - 1, self._rng)  # the first failure waits `initial_secs`
            if connected:
                log.warning("MQTT connection to %s lost: %s; reconnecting in %.2fs", address, self.last_error, delay)
            else:
                self.counters.connect_failures += 1
                self._notify()
                log.warning("MQTT connect to %s failed (%d in a row): %s; retrying in %.2fs", address, failures,
                            self.last_error, delay)
            await asyncio.sleep(delay)

    def _client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self._config.host, self._config.port, username=self._username, password=self._password,
            identifier=self._config.client_id, keepalive=self._keepalive_secs, timeout=self._timeout_secs,
            will=aiomqtt.Will(self._status_topic, OFFLINE, qos=1, retain=True), tls_context=self._ssl_context,
        )

    async def _session(self) -> None:
        cancels = _cancel_requests()
        async with self._client() as client:
            if _cancel_requests() > cancels:
                raise asyncio.CancelledError  # swallowed while connecting (see _guarded)
            self.counters.connects += 1
            if self.counters.connects > 1:
                self.counters.reconnects += 1
            try:
                async with asyncio.TaskGroup() as tg:
                    # The receiver goes first: it is what notices a lost connection (aiomqtt does not wake a
                    # publish waiting for its acknowledgement), and it cancels everything here when it does.
                    tg.create_task(self._receive_commands(client), name="mqtt-receive")
                    await _guarded(client.subscribe(self._command_filter, qos=1))
                    await _guarded(client.publish(self._status_topic, ONLINE, qos=1, retain=True))
                    self.counters.published += 1
                    log.info("MQTT connected to %s:%d as %s", self._config.host, self._config.port,
                             self._config.client_id)
                    self._set_connected(True)  # online: commands are accepted from here on
                    tg.create_task(self._publish_outbox(client), name="mqtt-outbox")
                    tg.create_task(self._publish_state(client), name="mqtt-state")
                    tg.create_task(self._desk.publish_answers(partial(self._publish_answer, client)),
                                   name="mqtt-answers")
                    # Park here until a task fails: Python 3.11's TaskGroup leaks a cancellation request when a
                    # task fails after the body has ended, so the body must not end.
                    await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                self._stopping = True
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await client.publish(self._status_topic, OFFLINE, qos=1, retain=True,
                                         timeout=SHUTDOWN_TIMEOUT_SECS)
                    self.counters.published += 1
                    log.info("MQTT status offline published; disconnecting")
                raise
            finally:
                self._set_connected(False)

    async def _publish_outbox(self, client: aiomqtt.Client) -> None:
        outbox = self._outbox
        if self._marking is not None:
            await self._marking  # a batch acknowledged just before the last connection died: never send it again
            self._marking = None
        while True:
            outbox.outbox_event.clear()
            rows = [unpack_row(row) for row in await outbox.outbox_pending(OUTBOX_BATCH)]
            if not rows:
                await outbox.outbox_event.wait()
                continue
            await self._publish_rows(client, rows)
            # Acknowledged rows are marked even if the connection dies meanwhile (shielded).
            marking = asyncio.get_running_loop().create_task(self._mark_published([seq for seq, _, _ in rows]))
            self._marking = marking
            await asyncio.shield(marking)
            self._marking = None

    async def _mark_published(self, seqs: list[int]) -> None:
        await self._outbox.mark_published(seqs)
        self.counters.events_published += len(seqs)
        self._notify()

    async def _publish_rows(self, client: aiomqtt.Client, rows: list[tuple[int, str, bytes]]) -> None:
        """Publish rows in order with up to OUTBOX_WINDOW acknowledgements outstanding; returns when all are acked."""
        window = asyncio.Semaphore(OUTBOX_WINDOW)
        async with asyncio.TaskGroup() as tg:
            for seq, suffix, payload in rows:
                if not _TOPIC_SUFFIX.fullmatch(suffix):
                    self.counters.events_dropped += 1
                    log.error("outbox row %d has an invalid topic %r; dropped", seq, suffix)
                    continue
                await window.acquire()
                # Tasks start in creation order and hand the message to paho before their first await,
                # so the broker receives the rows in outbox order.
                tg.create_task(self._publish_event(client, self._prefix + suffix, payload, window))

    async def _publish_event(
        self, client: aiomqtt.Client, topic: str, payload: bytes, window: asyncio.Semaphore,
    ) -> None:
        try:
            await _guarded(client.publish(topic, payload, qos=1))
            self.counters.published += 1
        finally:
            window.release()

    async def _publish_state(self, client: aiomqtt.Client) -> None:
        last_state: dict[str, bytes] = {}
        last_drift: dict[str, bytes] = {}
        while True:
            for snapshot in self._snapshots():
                state = state_payload(snapshot)
                if last_state.get(snapshot.name) != state:
                    await _guarded(client.publish(self._topic(snapshot.name, "state"), state, qos=1, retain=True))
                    last_state[snapshot.name] = state
                    self.counters.published += 1
                drift = drift_payload(snapshot)
                if last_drift.get(snapshot.name) != drift:
                    await _guarded(client.publish(self._topic(snapshot.name, "drift"), drift, qos=0))
                    last_drift[snapshot.name] = drift
                    self.counters.published += 1
            await asyncio.sleep(self._config.drift_interval_secs)

    async def _publish_answer(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        await _guarded(client.publish(topic, payload, qos=1))
        self.counters.published += 1

    async def _receive_commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            self._desk.take(str(message.topic), bytes(payload), message.retain)
