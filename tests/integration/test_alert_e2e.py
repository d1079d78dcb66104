"""End to end: keel in observe mode on a swinging market, a real Prometheus scraping it with keel's
rules, a real Alertmanager routing to a webhook here: the drift alert fires, then resolves.

The rules are keel's own file with only the `for:` of KeelObserveDrift shortened (1m -> 3s) so the
test takes seconds; promtool's unit tests cover the real durations.
"""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.types import Reason
from ops.config import loads_config
from ops.metrics import PrometheusSensor
from ops.service import Service
from tests.integration.services import RULES_YML, alertmanager, prometheus
from tests.integration.test_rules import start_webhook

pytestmark = [pytest.mark.services, pytest.mark.slow]

CONFIG = """
[portfolio]
name = "watch"
capital = 10000
[portfolio.targets]
BTC = 0.5
ETH = 0.3
SOL = 0.2
[rebalance]
mode = "observe"
threshold = 0.03
window_secs = 1
[feed]
source = "sim"
sim_rate_hz = 60
sim_swing = 0.12
speed = 5
stale_secs = 0
[ledger]
path = "{ledger}"
[metrics]
port = {port}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fast_rules(tmp: Path) -> Path:
    rules = yaml.safe_load(RULES_YML.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "KeelObserveDrift":
                rule["for"] = "3s"
    path = tmp / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


async def next_status(received: asyncio.Queue[dict[str, Any]], status: str) -> dict[str, Any]:
    while True:
        payload = await received.get()
        for alert in payload["alerts"]:
            if alert["labels"]["alertname"] == "KeelObserveDrift" and alert["status"] == status:
                return alert


@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_observe_drift_alert_fires_and_resolves(tmp_path: Path) -> None:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    webhook, webhook_port = await start_webhook(received)
    port = free_port()
    config = loads_config(CONFIG.format(ledger=tmp_path / "keel.sqlite", port=port), base_dir=tmp_path)
    service = Service(config, sensor=PrometheusSensor(), state_dir=tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await asyncio.wait_for(service.ready.wait(), timeout=30)
        with (
            alertmanager(f"http://127.0.0.1:{webhook_port}/alerts") as am,
            prometheus([f"127.0.0.1:{port}"], [fast_rules(tmp_path)], am.url, interval="1s"),
        ):
            fired = await asyncio.wait_for(next_status(received, "firing"), timeout=120)
            assert fired["labels"]["portfolio"] == "watch"
            assert fired["labels"]["severity"] == "warning"
            resolved = await asyncio.wait_for(next_status(received, "resolved"), timeout=120)
            assert resolved["labels"]["portfolio"] == "watch"
        assert any(i.observe and i.reason is not Reason.START for i in service.recent_intents), \
            "observe mode still plans intents"
        assert len(service.recent_fills) == 0, "observe mode never trades"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        await webhook.cleanup()
