"""The MQTT bridge against a REAL mosquitto with a password file and an ACL; every check is a receipt by a second client."""
from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import pwd
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path

import aiomqtt
import orjson
import pytest
import pytest_asyncio

from engine.types import PortfolioSnapshot
from ops.config_schema import MqttConfig
from ops.ledger import Ledger
from ops.mqtt import Backoff, MqttBridge, Outbox
from ops.mqtt_commands import (
    Command,
    CommandRejected,
    CommandResult,
    Deposit,
    Pause,
    Rebalance,
    Resume,
    Terminate,
    Withdraw,
    command_name,
    parse_command,
)
from tests.integration.services import HOST, find_binary, free_port, stop_process, tcp_open

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

WAIT_SECS = 10.0
USERS = {"keel": "keel-secret", "viewer": "viewer-secret", "operator": "operator-secret"}
ACL = """user keel
topic readwrite keel/#

user viewer
topic read keel/#

user operator
topic write keel/+/cmd
topic read keel/#
"""
FAST_RETRY = Backoff(initial_secs=0.05, cap_secs=0.2)


# ----- a real mosquitto that the test can stop and start again on the same port -----

class Broker:
    """mosquitto on a fixed 127.0.0.1 port with users, an ACL and persistence (sessions survive a restart)."""

    def __init__(self, workdir: Path, users: Mapping[str, str], acl: str, tls: tuple[Path, Path] | None = None):
        self.port = free_port()
        self.workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None
        passwd = workdir / "passwd"
        passwd.touch(mode=0o600)
        for name, password in users.items():
            subprocess.run([find_binary("mosquitto_passwd"), "-b", str(passwd), name, password], check=True)
        (workdir / "acl").write_text(acl)
        tls_lines = [f"certfile {tls[0]}", f"keyfile {tls[1]}"] if tls else []
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join([
            "per_listener_settings false", "persistence true", f"persistence_location {workdir}/",
            "log_dest stderr", "log_type error", "log_type warning", f"listener {self.port} {HOST}", *tls_lines,
            "allow_anonymous false", f"password_file {passwd}", f"acl_file {workdir / 'acl'}", "",
        ]))
        if os.geteuid() == 0:  # mosquitto drops root for its own user, which must read and write here
            entry = pwd.getpwnam("mosquitto")
            for path in (workdir, *workdir.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        """Start on `self.port` and poll until it accepts connections (blocking: call through to_thread)."""
        with (self.workdir / "mosquitto.log").open("ab") as out:
            self._proc = subprocess.Popen([find_binary("mosquitto"), "-c", str(self.conf)], stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + WAIT_SECS
        while not tcp_open(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start: {(self.workdir / 'mosquitto.log').read_text()[-800:]}")
            time.sleep(0.02)  # polling an external process's readiness against a deadline

    def stop(self) -> None:
        """SIGTERM by PID (mosquitto saves its sessions) and reap."""
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None


@contextlib.contextmanager
def broker_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="keel-mqtt-test-") as tmp:
        yield Path(tmp)


@pytest.fixture
def broker() -> Iterator[Broker]:
    with broker_dir() as workdir:
        b = Broker(workdir, USERS, ACL)
        b.start()
        try:
            yield b
        finally:
            b.stop()


async def until(predicate: Callable[[], bool], changed: asyncio.Event, within_secs: float = WAIT_SECS) -> None:
    """Wait until `predicate()` holds, re-checking each time `changed` is set."""
    async with asyncio.timeout(within_secs):
        while not predicate():
            changed.clear()
            await changed.wait()


# ----- a second, independent client that records what it receives -----

class Watcher:
    """A real MQTT client that subscribes and records every message it receives."""

    def __init__(self, port: int, user: str, *topics: str, password: str | None = None, identifier: str | None = None,
                 persistent: bool = False, tls_context: ssl.SSLContext | None = None) -> None:
        self.client = aiomqtt.Client(HOST, port, username=user, password=password or USERS[user],
                                     identifier=identifier, clean_session=not persistent, tls_context=tls_context)
        self.topics = topics
        self.received: list[aiomqtt.Message] = []
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        await self.client.__aenter__()
        for topic in self.topics:
            await self.client.subscribe(topic, qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the broker went away: the test reconnects explicitly
            async for message in self.client.messages:
                self.received.append(message)
                self._changed.set()

    def payloads(self, topic: str) -> list[bytes]:
        return [bytes(m.payload) for m in self.received if str(m.topic) == topic]  # type: ignore[arg-type]

    async def until(self, predicate: Callable[[], bool], within_secs: float = WAIT_SECS) -> None:
        await until(predicate, self._changed, within_secs)

    async def next_on(self, topic: str, after: int = 0) -> bytes:
        await self.until(lambda: len(self.payloads(topic)) > after)
        return self.payloads(topic)[after]


# ----- the bridge's collaborators -----

@pytest_asyncio.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Ledger]:
    """The real ledger (SQLite) as the bridge's outbox."""
    ledger = await Ledger.open(tmp_path / "l.sqlite")
    try:
        yield ledger
    finally:
        await ledger.close()


class Handler:
    """Records each command; ids starting `no` answer ok=False, `boom` raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Command]] = []

    async def handle(self, portfolio: str, command: Command) -> CommandResult:
        self.calls.append((portfolio, command))
        if command.id.startswith("boom"):
            raise RuntimeError("venue exploded")
        ok = not command.id.startswith("no")
        return CommandResult(ok, f"{command_name(command)} {'done' if ok else 'refused'}", {"portfolio": portfolio})


def snapshot(name: str = "core", drift: float = 0.02) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        name=name, mode="live", quote="USDT", value=10_000.0, hodl_value=9_900.0, weights={"BTC": 0.52, "ETH": 0.48},
        targets={"BTC": 0.5, "ETH": 0.5}, deviations={"BTC": drift, "ETH": -drift}, thresholds={"BTC": 0.05, "ETH": 0.05},
        holdings={"BTC": Decimal("0.1"), "ETH": Decimal("1.5")}, drift=drift, trigger_state="idle",
        window_remaining_secs=0.0, paused=False, stale=False,
    )


def make_bridge(port: int, outbox: Outbox, *, user: str = "keel", password: str | None = None,
                handler: Handler | None = None, snapshots: Callable[[], list[PortfolioSnapshot]] | None = None,
                interval: float = 0.1, tls: bool = False, ca_file: str | None = None) -> MqttBridge:
    config = MqttConfig(enabled=True, host=HOST, port=port, client_id=f"keel-{uuid.uuid4().hex[:8]}",
                        drift_interval_secs=interval, tls=tls, ca_file=ca_file)
    return MqttBridge(config, username=user, password=password or USERS[user], portfolios=["core", "sat"],
                      snapshots=snapshots or (lambda: [snapshot()]), outbox=outbox, commands=handler or Handler(),
                      backoff=FAST_RETRY, keepalive_secs=5, timeout_secs=3.0)


@contextlib.asynccontextmanager
async def running(bridge: MqttBridge) -> AsyncIterator[MqttBridge]:
    """Run the bridge as a task; cancel it (a clean stop) on exit and surface any crash."""
    task = asyncio.create_task(bridge.run())
    try:
        yield bridge
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publish(port: int, user: str, topic: str, payload: bytes, *, retain: bool = False) -> None:
    async with aiomqtt.Client(HOST, port, username=user, password=USERS[user]) as c:
        await c.publish(topic, payload, qos=1, retain=retain)


async def enqueue(outbox: Ledger, n: int, tag: str, kind: str = "fill") -> list[bytes]:
    payloads = [orjson.dumps({"tag": tag, "n": i}) for i in range(n)]
    for p in payloads:
        await outbox.enqueue_outbox(f"core/{kind}", p)
    return payloads


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


# ----- commands -----

VALID_COMMANDS: list[tuple[dict[str, str], Command]] = [
    ({"id": "c1", "cmd": "pause"}, Pause("c1")),
    ({"id": "c2", "cmd": "resume"}, Resume("c2")),
    ({"id": "c3", "cmd": "rebalance"}, Rebalance("c3")),
    ({"id": "c4", "cmd": "terminate", "mode": "sell"}, Terminate("c4", "sell")),
    ({"id": "c5", "cmd": "terminate", "mode": "return"}, Terminate("c5", "return")),
    ({"id": "c6", "cmd": "deposit", "asset": "USDT", "amount": "250.50"}, Deposit("c6", "USDT", Decimal("250.50"))),
    ({"id": "c7", "cmd": "withdraw", "amount": "0.001"}, Withdraw("c7", Decimal("0.001"))),
]


@pytest.mark.asyncio
async def test_each_command_reaches_the_handler_parsed_and_is_answered(broker: Broker, outbox: Ledger) -> None:
    handler = Handler()
    results = "keel/core/cmd/result"
    async with Watcher(broker.port, "operator", results, "keel/sat/cmd/result") as watcher:
        async with running(make_bridge(broker.port, outbox, handler=handler)) as bridge:
            await bridge.wait_until(lambda: bridge.connected, WAIT_SECS)
            for body, _ in VALID_COMMANDS:
                await publish(broker.port, "operator", "keel/core/cmd", orjson.dumps(body))
            await publish(broker.port, "operator", "keel/sat/cmd", b'{"id": "no-1", "cmd": "rebalance"}')
            await publish(broker.port, "operator", "keel/sat/cmd", b'{"id": "boom-1", "cmd": "pause"}')
            await watcher.until(lambda: len(watcher.payloads(results)) == len(VALID_COMMANDS))
            await watcher.until(lambda: len(watcher.payloads("keel/sat/cmd/result")) == 2)
            assert (bridge.counters.commands_ok, bridge.counters.commands_error) == (7, 2)

    assert handler.calls == [("core", c) for _, c in VALID_COMMANDS] + [("sat", Rebalance("no-1")), ("sat", Pause("boom-1"))]
    answers = [orjson.loads(p) for p in watcher.payloads(results)]
    assert [(a["id"], a["cmd"], a["ok"], a["data"]) for a in answers] == [
        (body["id"], body["cmd"], True, {"portfolio": "core"}) for body, _ in VALID_COMMANDS]
    assert answers[5]["message"] == "deposit done"
    refused, crashed = (orjson.loads(p) for p in watcher.payloads("keel/sat/cmd/result"))
    assert (refused["id"], refused["ok"], refused["message"]) == ("no-1", False, "rebalance refused")
    assert (crashed["id"], crashed["ok"]) == ("boom-1", False) and "venue exploded" in crashed["message"]


MALFORMED: list[tuple[str, bytes, str | None, str]] = [
    ("keel/core/cmd", b'{"id": "m1", "cmd": "explode"}', "m1", "Invalid value 'explode'"),
    ("keel/core/cmd", b'{"id": "m2", "cmd": "pause", "force": true}', "m2", "unknown field `force`"),
    ("keel/core/cmd", b'{"id": "m3", "cmd": "terminate", "mode": "burn"}', "m3", "$.mode"),
    ("keel/core/cmd", b'{"id": "m4", "cmd": "terminate"}', "m4", "missing required field `mode`"),
    ("keel/core/cmd", b'{"id": "m5", "cmd": "deposit", "asset": "USDT", "amount": 10}', "m5", "Expected `str`, got `int`"),
    ("keel/core/cmd", b'{"id": "m6", "cmd": "deposit", "asset": "USDT", "amount": "0"}', "m6", "must be positive"),
    ("keel/core/cmd", b'{"id": "m7", "cmd": "withdraw", "amount": "-5"}', "m7", "$.amount"),
    ("keel/core/cmd", b'{"id": "m8", "cmd": "withdraw", "amount": "NaN"}', "m8", "$.amount"),
    ("keel/core/cmd", b'{"id": "m9", "cmd": "withdraw", "amount": "1e3"}', "m9", "$.amount"),
    ("keel/core/cmd", b'{"id": "m10", "cmd": "deposit", "asset": "us dt", "amount": "1"}', "m10", "$.asset"),
    ("keel/core/cmd", b'{"id": 11, "cmd": "pause"}', None, "Expected `str`, got `int`"),
    ("keel/core/cmd", b'{"cmd": "pause"}', None, "missing required field `id`"),
    ("keel/core/cmd", b'{"id": "m13", "cmd": "pause"', None, "invalid JSON"),
    ("keel/core/cmd", b"\xff\xfe", None, "invalid JSON"),
    ("keel/core/cmd", b'["pause"]', None, "Expected `object`"),
    ("keel/core/cmd", b'{"id": "m16", "cmd": "pause", "pad": "' + b"x" * 4100 + b'"}', None, "limit is 4096"),
    ("keel/ghost/cmd", b'{"id": "m17", "cmd": "pause"}', "m17", "unknown portfolio 'ghost'"),
]


@pytest.mark.asyncio
async def test_malformed_commands_are_answered_with_an_error_and_never_reach_the_handler(
    broker: Broker, outbox: Ledger,
) -> None:
    handler = Handler()
    # A retained command would run again at every reconnect: it is refused when the subscription delivers it.
    await publish(broker.port, "operator", "keel/core/cmd", b'{"id": "m0", "cmd": "pause"}', retain=True)
    async with Watcher(broker.port, "operator", "keel/+/cmd/result") as watcher:
        async with running(make_bridge(broker.port, outbox, handler=handler)) as bridge:
            await watcher.until(lambda: len(watcher.received) == 1)
            for topic, payload, _, _ in MALFORMED:
                await publish(broker.port, "operator", topic, payload)
            await watcher.until(lambda: len(watcher.received) == len(MALFORMED) + 1)
            assert handler.calls == []
            await publish(broker.port, "operator", "keel/core/cmd", b'{"id": "ok-1", "cmd": "pause"}')
            await watcher.until(lambda: len(watcher.received) == len(MALFORMED) + 2)
            assert bridge.counters.commands_error == len(MALFORMED) + 1 and bridge.counters.commands_ok == 1

    answers = [(str(m.topic), orjson.loads(m.payload)) for m in watcher.received]  # type: ignore[arg-type]
    assert answers[0][1]["id"] == "m0" and "retained" in answers[0][1]["message"]
    for (topic, answer), (cmd_topic, _, expected_id, reason) in zip(answers[1:], MALFORMED, strict=False):
        assert topic == cmd_topic + "/result"
        assert (answer["id"], answer["ok"]) == (expected_id, False), answer
        assert reason in answer["message"], (reason, answer)
    assert answers[-1][1]["id"] == "ok-1" and answers[-1][1]["ok"] is True
    assert handler.calls == [("core", Pause("ok-1"))]


def test_parse_command_accepts_exact_decimals_and_refuses_an_empty_id() -> None:
    assert parse_command(b'{"id":"a","cmd":"withdraw","amount":"0.10000000000000000001"}') == Withdraw(
        "a", Decimal("0.10000000000000000001"))
    with pytest.raises(CommandRejected, match=r"\$\.id"):
        parse_command(b'{"id":"","cmd":"pause"}')


# ----- authentication and ACL -----

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


@pytest.mark.asyncio
async def test_a_command_from_a_client_the_acl_forbids_does_nothing(broker: Broker, outbox: Ledger) -> None:
    handler = Handler()
    async with Watcher(broker.port, "operator", "keel/core/cmd/result") as watcher:
        async with running(make_bridge(broker.port, outbox, handler=handler)) as bridge:
            await bridge.wait_until(lambda: bridge.connected, WAIT_SECS)
            await publish(broker.port, "viewer", "keel/core/cmd", b'{"id": "from-viewer", "cmd": "terminate", "mode": "sell"}')
            await publish(broker.port, "operator", "keel/core/cmd", b'{"id": "from-operator", "cmd": "pause"}')
            await watcher.until(lambda: len(watcher.received) >= 1)
    assert [orjson.loads(p)["id"] for p in watcher.payloads("keel/core/cmd/result")] == ["from-operator"]
    assert handler.calls == [("core", Pause("from-operator"))]


# ----- broker outages -----

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
