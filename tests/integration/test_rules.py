"""Alert rules: promtool checks and unit tests, and one real scrape -> rule -> Alertmanager -> webhook loop."""
from __future__ import annotations

import asyncio
import re
import subprocess
from typing import Any

import pytest
import yaml
from aiohttp import web

from ops.http import MetricsServer
from ops.metrics import KeelCollector, PrometheusSensor
from tests.integration.services import (
    ALERTMANAGER_YML,
    PROMETHEUS_YML,
    RULES_TEST_YML,
    RULES_YML,
    alertmanager,
    find_binary,
    prometheus,
)

pytestmark = pytest.mark.services

SEVERITIES = {"warning", "critical"}


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES_YML.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules_accepts_every_rule() -> None:
    result = run(find_binary("promtool"), "check", "rules", str(RULES_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = run(find_binary("promtool"), "test", "rules", str(RULES_TEST_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\s*SUCCESS\s*$", result.stdout + result.stderr, re.MULTILINE), result.stdout


def test_shared_prometheus_and_alertmanager_configs_are_valid() -> None:
    prom = run(find_binary("promtool"), "check", "config", str(PROMETHEUS_YML))
    assert prom.returncode == 0, prom.stdout + prom.stderr
    am = run(find_binary("amtool"), "check-config", str(ALERTMANAGER_YML))
    assert am.returncode == 0, am.stdout + am.stderr


def test_every_rule_is_labelled_annotated_and_unit_tested_both_ways() -> None:
    expected = {
        "KeelDriftStuck", "KeelObserveDrift", "KeelFeedStale", "KeelExecutionErrors", "KeelRebalanceIncomplete",
        "KeelDown", "KeelLedgerErrors", "KeelValueBelowFloor", "KeelHalted", "KeelMqttDisconnected", "KeelMqttBacklog",
    }
    rules = alert_rules()
    assert {r["alert"] for r in rules} == expected
    cases = [case for test in yaml.safe_load(RULES_TEST_YML.read_text())["tests"] for case in test["alert_rule_test"]]
    for rule in rules:
        name, labels = rule["alert"], rule["labels"]
        assert labels["severity"] in SEVERITIES, name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        assert "$labels" in rule["annotations"]["description"], name
        fired = [
            alert["exp_labels"] for case in cases if case["alertname"] == name
            for alert in case.get("exp_alerts") or []
        ]
        assert any(all(f.get(k) == v for k, v in labels.items()) for f in fired), f"{name} {labels}: no firing test"
        assert any(case["alertname"] == name and not case.get("exp_alerts") for case in cases), f"{name}: no quiet test"


async def start_webhook(received: asyncio.Queue[dict[str, Any]]) -> tuple[web.AppRunner, int]:
    async def alerts(request: web.Request) -> web.Response:
        received.put_nowait(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/alerts", alerts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_a_halted_keel_reaches_the_webhook_through_prometheus_and_alertmanager() -> None:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    webhook, webhook_port = await start_webhook(received)
    sensor = PrometheusSensor()
    halted = [False]
    sensor.registry.register(KeelCollector(list, dict, lambda: 0, lambda: halted[0]))
    server = MetricsServer(sensor.registry, port=0)
    port = await server.start()
    try:
        with (
            alertmanager(f"http://127.0.0.1:{webhook_port}/alerts") as am,
            prometheus([f"127.0.0.1:{port}"], [RULES_YML], am.url, interval="1s"),
        ):
            halted[0] = True
            async with asyncio.timeout(60):
                while True:
                    payload = await received.get()
                    firing = [a for a in payload["alerts"] if a["status"] == "firing"]
                    names = {a["labels"]["alertname"] for a in firing}
                    assert names <= {"KeelHalted"}, f"unexpected alerts: {names}"
                    if names:
                        break
            (alert,) = firing
            assert alert["labels"]["severity"] == "critical"
            assert alert["labels"]["job"] == "keel"
            assert alert["labels"]["instance"] == f"127.0.0.1:{port}"
            assert alert["annotations"]["summary"] == f"keel has halted trading (127.0.0.1:{port})"
    finally:
        await server.stop()
        await webhook.cleanup()

