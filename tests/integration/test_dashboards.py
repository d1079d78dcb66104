"""Grafana dashboards and provisioning: valid files, and every panel query answered by a real Prometheus
scraping the real metrics code (the MQTT panels: a real bridge on a real mosquitto and SQLite outbox)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from engine.types import Fill, Intent, PortfolioSnapshot, Reason, Side
from ops.config_schema import MqttConfig
from ops.http import MetricsServer
from ops.ledger import Ledger
from ops.metrics import (
    BAD_TICK_REASONS,
    EXECUTION_ERROR_KINDS,
    ORDER_STATUSES,
    OUTCOMES,
    KeelCollector,
    PrometheusSensor,
    SymbolHealthView,
)
from ops.metrics_mqtt import MqttCollector
from ops.mqtt import MqttBridge
from tests.integration.mqtt_kit import NoCommands
from tests.integration.services import (
    REPO,
    RULES_YML,
    RunningService,
    mosquitto,
    prometheus,
    prometheus_query,
    wait_for_series,
)

GRAFANA = REPO / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCE = {"type": "prometheus", "uid": "keel-prometheus"}
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
LABEL_VALUES = re.compile(r"^label_values\((?P<metric>[^,]+),\s*(?P<label>\w+)\)$")
SYMBOLS = ("BTC-USDT", "ETH-USDT", "SOL-USDT")
PORTFOLIOS = ("core", "watch")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in rows."""
    for p in panels:
        yield p
        yield from iter_panels(p.get("panels", []))


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and annotation query of a dashboard."""
    found = [
        (f"{dashboard['uid']} panel {p['title']!r} {t['refId']}", t["expr"])
        for p in iter_panels(dashboard["panels"]) for t in p.get("targets", [])
    ]
    found += [(f"{dashboard['uid']} annotation {a['name']!r}", a["expr"]) for a in dashboard["annotations"]["list"]]
    return found


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def substitute(expr: str, variables: dict[str, str]) -> str:
    """The query as Grafana would send it: macros and template variables replaced."""
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def test_there_are_the_three_dashboards() -> None:
    assert [p.name for p in DASHBOARDS] == ["execution.json", "feeds.json", "portfolio.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_plain_grafana_json_on_the_fixed_datasource(path: Path) -> None:
    dashboard = load(path)
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"].startswith("keel-")
    panels = list(iter_panels(dashboard["panels"]))
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for p in panels:
        x, w = p["gridPos"]["x"], p["gridPos"]["w"]
        assert 0 <= x and x + w <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == DATASOURCE, p["title"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t.get("datasource", DATASOURCE) == DATASOURCE, p["title"]
            assert t["expr"].strip(), p["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == DATASOURCE
        assert LABEL_VALUES.match(variable_query(variable)), variable["name"]
    for annotation in dashboard["annotations"]["list"]:
        assert annotation["datasource"] == DATASOURCE


def test_portfolio_dashboard_marks_rebalances_and_has_a_portfolio_variable() -> None:
    dashboard = load(GRAFANA / "dashboards" / "portfolio.json")
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["portfolio"]
    (annotation,) = dashboard["annotations"]["list"]
    assert annotation["expr"] == 'changes(keel_rebalances_total{portfolio=~"$portfolio"}[1m]) > 0'


def test_provisioning_names_the_datasource_uid_and_the_mounted_dashboards() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (ds,) = datasources["datasources"]
    assert (ds["uid"], ds["type"]) == ("keel-prometheus", "prometheus")
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "keel.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    grafana_volumes = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in grafana_volumes
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana_volumes
    assert "./grafana/prometheus:/etc/prometheus:ro" in compose["services"]["prometheus"]["volumes"]
    assert "./grafana/alertmanager:/etc/alertmanager:ro" in compose["services"]["alertmanager"]["volumes"]


def make_snapshot(name: str, mode: str, drift: float) -> PortfolioSnapshot:
    weights = {"BTC": 0.5 + drift, "ETH": 0.3 - drift, "SOL": 0.2}
    targets = {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2}
    return PortfolioSnapshot(
        name=name, mode=mode, quote="USDT", value=10_500.0, hodl_value=10_200.0, weights=weights,
        targets=targets, deviations={c: weights[c] - targets[c] for c in targets},
        thresholds={"BTC": 0.05, "ETH": 0.05, "SOL": 0.03},
        holdings={"BTC": Decimal("0.08"), "ETH": Decimal("0.9"), "SOL": Decimal("14"), "USDT": Decimal("12.5")},
        drift=drift, trigger_state="armed" if drift >= 0.05 else "cooldown", window_remaining_secs=120.0,
        paused=False, stale=False, floor_value=8_000.0,
    )


def feed_events(sensor: PrometheusSensor, round_no: int) -> None:
    """A realistic burst of the core's events: ticks, bad ticks, intents, orders, fills, errors, outcomes."""
    for i in range(50):
        for symbol in SYMBOLS:
            sensor.on_tick(symbol, i)
    for reason in BAD_TICK_REASONS:
        sensor.on_bad_tick("SOL-USDT", reason)
    sensor.on_reconnect("binance")
    for portfolio in PORTFOLIOS:
        sensor.on_trigger_state(portfolio, "armed")
        for n, reason in enumerate((Reason.THRESHOLD, Reason.CALENDAR)):
            intent_id = f"{round_no:08x}{n:04x}{len(portfolio):04x}"
            sensor.on_intent(Intent(intent_id, portfolio, 0, reason, 0.06, {}, {}, ()), latency_ns=300_000 * (n + 1))
            for status in ORDER_STATUSES:
                sensor.on_order(portfolio, "BTC-USDT", "sell", status)
            for side, symbol in ((Side.SELL, "BTC-USDT"), (Side.BUY, "ETH-USDT")):
                fill = Fill(f"t{intent_id}{side.value}", f"k{intent_id}00", symbol, side, Decimal("0.01"),
                            Decimal("50000"), Decimal("0.5"), "USDT", 0)
                sensor.on_fill(portfolio, fill, fee_quote=0.5, latency_ns=40_000_000)
            sensor.on_rebalance_done(portfolio, intent_id, "complete" if n == 0 else "partial")
        for outcome in OUTCOMES:
            sensor.on_rebalance_done(portfolio, "ffffffffffffffff", outcome)
        for kind in (*EXECUTION_ERROR_KINDS, "ledger_write"):
            sensor.on_execution_error(portfolio, kind)
        sensor.on_trigger_state(portfolio, "cooldown")
    sensor.on_ledger_commit(rows=4, seconds=0.003)
    sensor.on_ledger_commit(rows=1, seconds=0.0004)


async def publish_events(ledger: Ledger, bridge: MqttBridge, n: int) -> None:
    """Write n fill events to the outbox and wait until the bridge published them and measured the backlog."""
    target = bridge.counters.events_published + n
    for i in range(n):
        await ledger.enqueue_outbox("core/fill", f"fill-{target}-{i}".encode())
    await bridge.wait_until(lambda: bridge.counters.events_published == target and bridge.backlog is not None
                            and bridge.backlog.events == 0, 30)


async def variable_values(http: aiohttp.ClientSession, prom: RunningService, query: str) -> list[str]:
    match = LABEL_VALUES.match(query)
    assert match, query
    async with http.get(f"{prom.url}/api/v1/series", params={"match[]": match["metric"]}) as r:
        body = await r.json()
    return sorted({s[match["label"]] for s in body["data"] if match["label"] in s})


@pytest.mark.services
@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_every_panel_query_returns_series_from_a_real_prometheus(tmp_path: Path) -> None:
    sensor = PrometheusSensor()
    sensor.prepare(PORTFOLIOS, SYMBOLS, ["binance"])
    snapshots = [make_snapshot("core", "live", 0.06), make_snapshot("watch", "observe", 0.02)]
    health = {s: SymbolHealthView(last_tick_ts_ns=1_700_000_000_000_000_000, stale=s == "SOL-USDT", ticks=100)
              for s in SYMBOLS}
    sensor.registry.register(KeelCollector(lambda: snapshots, lambda: health, lambda: 3, lambda: False))
    feed_events(sensor, 1)
    server = MetricsServer(sensor.registry, port=0)
    port = await server.start()
    ledger = await Ledger.open(tmp_path / "keel.sqlite")
    try:
        with mosquitto() as broker, prometheus([f"127.0.0.1:{port}"], [RULES_YML], interval="1s") as prom:
            bridge = MqttBridge(MqttConfig(enabled=True, port=broker.port), username=None, password=None,
                                portfolios=PORTFOLIOS, snapshots=lambda: snapshots, outbox=ledger,
                                commands=NoCommands(), backlog_interval_secs=0.05)
            sensor.registry.register(MqttCollector(bridge))
            bridge_task = asyncio.create_task(bridge.run())
            try:
                await publish_events(ledger, bridge, 3)
                async with aiohttp.ClientSession() as http:
                    await wait_for_series(http, prom, 'up{job="keel"} == 1')
                    feed_events(sensor, 2)
                    await publish_events(ledger, bridge, 3)
                    # The second round is scraped: counters moved between two samples, so rate() and changes() see it.
                    await wait_for_series(http, prom, 'sum(keel_rebalances_total{reason="calendar"}) >= 4')
                    await wait_for_series(http, prom, 'keel_mqtt_outbox_events_total{outcome="published"} >= 6')
                    failures = []
                    for path in DASHBOARDS:
                        dashboard = load(path)
                        variables = {}
                        for variable in dashboard["templating"]["list"]:
                            values = await variable_values(http, prom, variable_query(variable))
                            assert values, f"{path.name}: variable {variable['name']} has no values"
                            variables[variable["name"]] = values[0]
                        for where, expr in queries(dashboard):
                            promql = substitute(expr, variables)
                            if not await prometheus_query(http, prom, promql):
                                failures.append(f"{where}: {promql}")
                    assert not failures, "queries with no series:\n" + "\n".join(failures)
                    assert variables  # the last dashboard (portfolio.json) has its variable resolved
            finally:
                bridge_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await bridge_task
    finally:
        await ledger.close()
        await server.stop()
