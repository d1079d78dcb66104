"""Real local services for integration tests: Prometheus, Alertmanager, mosquitto, nats-server.

Each context manager starts the real binary on a free 127.0.0.1 port in a temporary directory, polls
its readiness against a deadline, yields a `RunningService`, then stops it by PID (SIGTERM, SIGKILL
after a timeout). A missing binary skips the test. Mark such tests `@pytest.mark.services`.

Start-up blocks the calling thread for a second or two; that is harmless inside an async test as long
as nothing in the loop has to answer during it (Prometheus simply retries a scrape).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import nats
import pytest
import pytest_asyncio
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = REPO / "grafana" / "prometheus" / "prometheus.yml"
RULES_YML = REPO / "grafana" / "prometheus" / "keel-rules.yml"
RULES_TEST_YML = REPO / "grafana" / "prometheus" / "keel-rules.test.yml"
ALERTMANAGER_YML = REPO / "grafana" / "alertmanager" / "alertmanager.yml"
HOST = "127.0.0.1"
START_TIMEOUT_SECS = 20.0
STOP_TIMEOUT_SECS = 5.0
START_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class RunningService:
    """A started service: where it listens, its PID and its working directory (config, data, log)."""

    name: str
    port: int
    pid: int
    workdir: Path
    scheme: str = "http"
    monitor_port: int | None = None
    host: str = HOST

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:9090` or `nats://127.0.0.1:4222`."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """`host:port`."""
        return f"{self.host}:{self.port}"


def find_binary(name: str) -> str:
    """Path of an installed binary (also looked up in the sbin folders), or skip the test."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.skip(f"{name} is not installed (run `bash ops/scripts/install-services.sh` as root)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (start-up retries if another process takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_ok(url: str) -> bool:
    """True when a GET answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as r:
            return int(r.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def tcp_open(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _log_tail(log: Path, chars: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_SECS) -> None:
    """SIGTERM the process by PID, SIGKILL it if it is still alive after `timeout`, and reap it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def _start(
    name: str, argv: Sequence[str], workdir: Path, ready: Callable[[], bool], timeout: float,
) -> subprocess.Popen[bytes] | None:
    """Start `argv` and poll `ready` until the deadline; None when it exited early (e.g. port taken)."""
    log = workdir / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv), cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        if ready():
            return proc
        time.sleep(0.05)  # polling a readiness condition against a deadline
    stop_process(proc)
    raise TimeoutError(f"{name} not ready within {timeout}s; log tail:\n{_log_tail(log)}")


@contextlib.contextmanager
def _serve(
    name: str,
    make: Callable[[Path, int, int], tuple[list[str], Callable[[], bool]]],
    workdir: Path,
    timeout: float,
    scheme: str = "http",
    with_monitor: bool = False,
) -> Iterator[RunningService]:
    """Run a service built by `make(workdir, port, monitor_port)`, retrying with new ports if it exits early."""
    for _ in range(START_ATTEMPTS):
        port, monitor = free_port(), (free_port() if with_monitor else 0)
        argv, ready = make(workdir, port, monitor)
        proc = _start(name, argv, workdir, ready, timeout)
        if proc is None:
            continue
        try:
            yield RunningService(name, port, proc.pid, workdir, scheme, monitor if with_monitor else None)
        finally:
            stop_process(proc)
        return
    raise RuntimeError(f"{name} exited at start {START_ATTEMPTS} times; log tail:\n{_log_tail(workdir / f'{name}.log')}")


def _write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def prometheus_config(
    scrape_targets: Sequence[str], rules_files: Sequence[str | Path], alertmanager_url: str | None, interval: str,
) -> dict[str, object]:
    """The shared grafana/prometheus/prometheus.yml with targets, rules, Alertmanager and intervals replaced."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval=interval, evaluation_interval=interval, scrape_timeout=interval)
    config["rule_files"] = [str(Path(p).resolve()) for p in rules_files]
    if alertmanager_url is None:
        config.pop("alerting", None)
    else:
        config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [urlsplit(alertmanager_url).netloc]}]
    (keel_job,) = [job for job in config["scrape_configs"] if job["job_name"] == "keel"]
    keel_job["static_configs"] = [{"targets": list(scrape_targets)}]
    return config


@contextlib.contextmanager
def prometheus(
    scrape_targets: Sequence[str],
    rules_files: Sequence[str | Path] = (),
    alertmanager_url: str | None = None,
    interval: str = "1s",
    *,
    timeout: float = START_TIMEOUT_SECS,
) -> Iterator[RunningService]:
    """A real Prometheus scraping `scrape_targets` (`host:port`) as job `keel`, from the shared config."""
    binary = find_binary("prometheus")
    with tempfile.TemporaryDirectory(prefix="keel-prometheus-") as tmp:
        workdir = Path(tmp)
        config = _write_yaml(
            workdir / "prometheus.yml", prometheus_config(scrape_targets, rules_files, alertmanager_url, interval),
        )

        def make(wd: Path, port: int, _: int) -> tuple[list[str], Callable[[], bool]]:
            argv = [
                binary, f"--config.file={config}", f"--storage.tsdb.path={wd / 'data'}",
                f"--web.listen-address={HOST}:{port}", "--log.level=warn",
            ]
            return argv, lambda: http_ok(f"http://{HOST}:{port}/-/ready")

        with _serve("prometheus", make, workdir, timeout) as svc:
            yield svc


@contextlib.contextmanager
def alertmanager(
    webhook_url: str,
    *,
    group_wait: str = "0s",
    group_interval: str = "1s",
    timeout: float = START_TIMEOUT_SECS,
) -> Iterator[RunningService]:
    """A real Alertmanager from the shared config, sending to `webhook_url`, grouping fast for tests."""
    binary = find_binary("prometheus-alertmanager")
    with tempfile.TemporaryDirectory(prefix="keel-alertmanager-") as tmp:
        workdir = Path(tmp)
        config = yaml.safe_load(ALERTMANAGER_YML.read_text())
        config["route"].update(group_wait=group_wait, group_interval=group_interval)
        for receiver in config["receivers"]:
            for hook in receiver.get("webhook_configs", []):
                hook["url"] = webhook_url
        path = _write_yaml(workdir / "alertmanager.yml", config)

        def make(wd: Path, port: int, _: int) -> tuple[list[str], Callable[[], bool]]:
            argv = [
                binary, f"--config.file={path}", f"--storage.path={wd / 'data'}",
                f"--web.listen-address={HOST}:{port}", "--cluster.listen-address=", "--log.level=warn",
            ]
            return argv, lambda: http_ok(f"http://{HOST}:{port}/-/ready")

        with _serve("alertmanager", make, workdir, timeout) as svc:
            yield svc


def _hand_to_user(workdir: Path, user: str) -> None:
    """When root, let the daemon's own user (mosquitto drops privileges to it) read the temp dir."""
    if os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return
    for path in (workdir, *workdir.iterdir()):
        os.chown(path, entry.pw_uid, entry.pw_gid)


@contextlib.contextmanager
def mosquitto(
    users: Mapping[str, str] | None = None,
    acl: str | None = None,
    *,
    timeout: float = START_TIMEOUT_SECS,
) -> Iterator[RunningService]:
    """A real mosquitto on 127.0.0.1 only; anonymous unless `users` ({name: password}); `acl` is file text."""
    binary = find_binary("mosquitto")
    with tempfile.TemporaryDirectory(prefix="keel-mosquitto-") as tmp:
        workdir = Path(tmp)
        auth = ["allow_anonymous true"]
        if users:
            passwd_bin = find_binary("mosquitto_passwd")
            passwd = workdir / "passwd"
            passwd.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run([passwd_bin, "-b", str(passwd), name, password], check=True, capture_output=True)
            auth = ["allow_anonymous false", f"password_file {passwd}"]
        if acl is not None:
            (workdir / "acl").write_text(acl)
            auth.append(f"acl_file {workdir / 'acl'}")

        def make(wd: Path, port: int, _: int) -> tuple[list[str], Callable[[], bool]]:
            conf = wd / "mosquitto.conf"
            conf.write_text("\n".join([
                "per_listener_settings false", "persistence false", "log_dest stderr",
                "log_type error", "log_type warning", f"listener {port} {HOST}", *auth, "",
            ]))
            _hand_to_user(wd, "mosquitto")
            return [binary, "-c", str(conf)], lambda: tcp_open(port)

        with _serve("mosquitto", make, workdir, timeout, scheme="mqtt") as svc:
            yield svc


@contextlib.contextmanager
def nats_server(jetstream: bool = True, *, timeout: float = START_TIMEOUT_SECS) -> Iterator[RunningService]:
    """A real nats-server on 127.0.0.1 (JetStream in the temp dir); `monitor_port` serves /healthz."""
    binary = find_binary("nats-server")
    with tempfile.TemporaryDirectory(prefix="keel-nats-") as tmp:
        workdir = Path(tmp)

        def make(wd: Path, port: int, monitor: int) -> tuple[list[str], Callable[[], bool]]:
            argv = [binary, "-a", HOST, "-p", str(port), "-m", str(monitor)]
            if jetstream:
                argv += ["-js", "-sd", str(wd / "jetstream")]
            return argv, lambda: http_ok(f"http://{HOST}:{monitor}/healthz")

        with _serve("nats-server", make, workdir, timeout, scheme="nats", with_monitor=True) as svc:
            yield svc


@pytest.fixture
def mosquitto_broker() -> Iterator[RunningService]:
    """An anonymous mosquitto on 127.0.0.1 for one test."""
    with mosquitto() as svc:
        yield svc


@pytest.fixture
def nats_jetstream() -> Iterator[RunningService]:
    """A nats-server with JetStream for one test."""
    with nats_server(jetstream=True) as svc:
        yield svc


@pytest_asyncio.fixture
async def nats_client(nats_jetstream: RunningService) -> AsyncIterator[nats.NATS]:
    """A client of `nats_jetstream`, closed after the test even when it fails (no socket left to the next test)."""
    nc = await nats.connect(nats_jetstream.url)
    try:
        yield nc
    finally:
        await nc.close()


async def prometheus_query(http: aiohttp.ClientSession, prom: RunningService, expr: str) -> list[dict[str, Any]]:
    """The instant-query result of `expr` (a list of series); raises on a query error."""
    async with http.get(f"{prom.url}/api/v1/query", params={"query": expr}) as r:
        body = await r.json()
    if body.get("status") != "success":
        raise AssertionError(f"Prometheus refused {expr!r}: {body.get('errorType')}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def wait_for_series(
    http: aiohttp.ClientSession, prom: RunningService, expr: str, within_secs: float = 20.0,
) -> list[dict[str, Any]]:
    """Poll `expr` until it returns at least one series, or fail after `within_secs`."""
    deadline = time.monotonic() + within_secs
    while True:
        result = await prometheus_query(http, prom, expr)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{expr!r} returned no series within {within_secs}s")
        await asyncio.sleep(0.2)  # polling a condition against a deadline
