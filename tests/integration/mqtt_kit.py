"""MQTT test pieces: a restartable mosquitto with users and an ACL, a watching client, the bridge built to retry
fast, and the broker the whole service logs into."""
from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest

from engine.types import PortfolioSnapshot
from ops.config_schema import MqttConfig
from ops.ledger import Ledger
from ops.mqtt import Backoff, MqttBridge
from ops.mqtt_commands import Command, CommandHandler, CommandResult, command_name
from ops.mqtt_outbox import Outbox
from tests.integration.services import (
    HOST,
    RunningService,
    find_binary,
    free_port,
    mosquitto,
    stop_process,
    tcp_open,
)
from tests.service_kit import LEDGER_TOML, METRICS_OFF_TOML, portfolio_toml, sim_feed_toml

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
    """A temporary folder for one broker's config, passwords and saved sessions."""
    with tempfile.TemporaryDirectory(prefix="keel-mqtt-test-") as tmp:
        yield Path(tmp)


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
        """The payloads received on `topic`, in order."""
        return [bytes(m.payload) for m in self.received if str(m.topic) == topic]  # type: ignore[arg-type]

    async def until(self, predicate: Callable[[], bool], within_secs: float = WAIT_SECS) -> None:
        """Wait until `predicate()` holds, re-checking after every message."""
        await until(predicate, self._changed, within_secs)

    async def next_on(self, topic: str, after: int = 0) -> bytes:
        """The payload number `after` (from 0) on `topic`, once it arrived."""
        await self.until(lambda: len(self.payloads(topic)) > after)
        return self.payloads(topic)[after]


# ----- the bridge and its collaborators -----

T0 = 1_700_000_000_000_000_000


class Clock:
    """The ledger's (and a collector's) clock, moved by the test: it stamps created_ns and published_ns."""

    def __init__(self) -> None:
        self.now_ns = T0

    def __call__(self) -> int:
        return self.now_ns


class NoCommands:
    """A command handler for bridges whose tests send no command: it refuses every one."""

    async def handle(self, portfolio: str, command: Command) -> CommandResult:
        """Refuse."""
        return CommandResult(False, "no commands here")


class Handler:
    """Records each command; ids starting `no` answer ok=False, `boom` raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Command]] = []

    async def handle(self, portfolio: str, command: Command) -> CommandResult:
        """Record the command and answer it (or raise) as its id says."""
        self.calls.append((portfolio, command))
        if command.id.startswith("boom"):
            raise RuntimeError("venue exploded")
        ok = not command.id.startswith("no")
        return CommandResult(ok, f"{command_name(command)} {'done' if ok else 'refused'}", {"portfolio": portfolio})


def snapshot(name: str = "core", drift: float = 0.02) -> PortfolioSnapshot:
    """A live portfolio 52/48 against 50/50 targets, drifted by `drift`."""
    return PortfolioSnapshot(
        name=name, mode="live", quote="USDT", value=10_000.0, hodl_value=9_900.0, weights={"BTC": 0.52, "ETH": 0.48},
        targets={"BTC": 0.5, "ETH": 0.5}, deviations={"BTC": drift, "ETH": -drift}, thresholds={"BTC": 0.05, "ETH": 0.05},
        holdings={"BTC": Decimal("0.1"), "ETH": Decimal("1.5")}, drift=drift, trigger_state="idle",
        window_remaining_secs=0.0, paused=False, stale=False,
    )


def mqtt_config(port: int, client_prefix: str = "keel", **options: Any) -> MqttConfig:
    """MQTT on 127.0.0.1:`port` under a fresh client id (`<client_prefix>-<8 hex digits>`)."""
    return MqttConfig(enabled=True, host=HOST, port=port, client_id=f"{client_prefix}-{uuid.uuid4().hex[:8]}",
                      **options)


def fast_bridge(config: MqttConfig, *, portfolios: Sequence[str], snapshots: Callable[[], list[PortfolioSnapshot]],
                outbox: Outbox, commands: CommandHandler, user: str = "keel",
                password: str | None = None) -> MqttBridge:
    """A bridge logged in as `user` (password from USERS unless given) that retries fast and times out in seconds."""
    return MqttBridge(config, username=user, password=password or USERS[user], portfolios=portfolios,
                      snapshots=snapshots, outbox=outbox, commands=commands, backoff=FAST_RETRY, keepalive_secs=5,
                      timeout_secs=3.0)


def make_bridge(port: int, outbox: Outbox, *, user: str = "keel", password: str | None = None,
                handler: Handler | None = None, snapshots: Callable[[], list[PortfolioSnapshot]] | None = None,
                interval: float = 0.1, tls: bool = False, ca_file: str | None = None) -> MqttBridge:
    """The bridge of portfolios `core` and `sat`, publishing `snapshot()` every `interval` unless told otherwise."""
    config = mqtt_config(port, drift_interval_secs=interval, tls=tls, ca_file=ca_file)
    return fast_bridge(config, portfolios=["core", "sat"], snapshots=snapshots or (lambda: [snapshot()]),
                       outbox=outbox, commands=handler or Handler(), user=user, password=password)


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
    """Publish one message at QoS 1 as `user`, from a client of its own."""
    async with aiomqtt.Client(HOST, port, username=user, password=USERS[user]) as c:
        await c.publish(topic, payload, qos=1, retain=retain)


async def enqueue(outbox: Ledger, n: int, tag: str, kind: str = "fill") -> list[bytes]:
    """Write `n` numbered events of `kind` for portfolio core to the outbox; their payloads."""
    payloads = [orjson.dumps({"tag": tag, "n": i}) for i in range(n)]
    for p in payloads:
        await outbox.enqueue_outbox(f"core/{kind}", p)
    return payloads


# ----- the whole service over MQTT -----

SERVICE_ACL = """user keel
topic readwrite keel/#

user viewer
topic read keel/#
topic write keel/+/cmd
"""
SERVICE_VIEWER_PASSWORD = "s3cret-view"
SERVICE_CONFIG = (portfolio_toml("mq", threshold=0.02, window_secs=1) + "[venue]\nfee_rate = 0.001\n"
                  + sim_feed_toml(sim_rate_hz=150, sim_swing=0.12, speed=40, stale_secs=0) + LEDGER_TOML
                  + METRICS_OFF_TOML + "[mqtt]\nenabled = true\nport = {port}\ndrift_interval_secs = 0.2\n")


@contextlib.contextmanager
def service_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningService]:
    """mosquitto with SERVICE_ACL: the service logs in as `keel` (from its env variables), `viewer` watches."""
    monkeypatch.setenv("KEEL_MQTT_USERNAME", "keel")
    monkeypatch.setenv("KEEL_MQTT_PASSWORD", "s3cret-keel")
    with mosquitto(users={"keel": "s3cret-keel", "viewer": SERVICE_VIEWER_PASSWORD}, acl=SERVICE_ACL) as broker:
        yield broker
