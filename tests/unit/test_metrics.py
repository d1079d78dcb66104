"""PrometheusSensor, KeelCollector and MetricsServer: what a scrape shows."""
from __future__ import annotations

import math
from decimal import Decimal

import aiohttp
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine.types import Fill, Intent, PortfolioSnapshot, Reason, Side
from ops.http import MetricsServer
from ops.metrics import MAX_TRACKED_INTENTS, KeelCollector, PrometheusSensor, SymbolHealthView, band_usage

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """Every sample of a registry, parsed back from the text exposition."""
    out: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def make_intent(intent_id: str = "00000000000000a1", portfolio: str = "core", reason: Reason = Reason.THRESHOLD) -> Intent:
    return Intent(intent_id, portfolio, 1, reason, 0.06, {"BTC-USDT": 50_000.0}, {"BTC": 0.56}, ())


def make_fill(side: Side = Side.BUY, quantity: str = "0.01", price: str = "50000") -> Fill:
    return Fill("t1", "k00000000000000a10000", "BTC-USDT", side, Decimal(quantity), Decimal(price),
                Decimal("0.5"), "USDT", 2)


def make_snapshot(name: str = "core", **over: object) -> PortfolioSnapshot:
    fields: dict[str, object] = dict(
        name=name, mode="live", quote="USDT", value=11_000.0, hodl_value=10_000.0,
        weights={"BTC": 0.56, "ETH": 0.44}, targets={"BTC": 0.5, "ETH": 0.5},
        deviations={"BTC": 0.06, "ETH": -0.06}, thresholds={"BTC": 0.05, "ETH": 0.03},
        holdings={"BTC": Decimal("0.12"), "ETH": Decimal("1.5"), "USDT": Decimal("0")},
        drift=0.06, trigger_state="armed", window_remaining_secs=0.0, paused=False, stale=False,
        floor_value=9_000.0,
    )
    fields.update(over)
    return PortfolioSnapshot(**fields)  # type: ignore[arg-type]


def make_collector(
    registry: CollectorRegistry,
    snapshots: list[PortfolioSnapshot],
    health: dict[str, SymbolHealthView] | None = None,
    *,
    halted: bool = False,
    depth: int = 0,
    now_ns: int = 1_700_000_010_000_000_000,
) -> KeelCollector:
    collector = KeelCollector(
        lambda: snapshots, lambda: health or {}, lambda: depth, lambda: halted,
        now_ns=lambda: now_ns, version="9.9.9",
    )
    registry.register(collector)
    return collector


def test_ticks_and_bad_ticks_are_counted_per_symbol() -> None:
    sensor = PrometheusSensor()
    for _ in range(3):
        sensor.on_tick("BTC-USDT", 1)
    sensor.on_tick("ETH-USDT", 2)
    sensor.on_bad_tick("ETH-USDT", "crossed")
    sensor.on_bad_tick("ETH-USDT", "crossed")
    s = scrape(sensor.registry)
    assert value(s, "keel_ticks_total", symbol="BTC-USDT") == 3
    assert value(s, "keel_ticks_total", symbol="ETH-USDT") == 1
    assert value(s, "keel_bad_ticks_total", symbol="ETH-USDT", reason="crossed") == 2


def test_prepare_creates_zero_series_for_known_labels() -> None:
    sensor = PrometheusSensor()
    sensor.prepare(["core"], ["BTC-USDT"], ["binance"])
    s = scrape(sensor.registry)
    for reason in Reason:
        assert value(s, "keel_intents_total", portfolio="core", reason=reason.value) == 0
        assert value(s, "keel_rebalances_total", portfolio="core", reason=reason.value) == 0
    assert value(s, "keel_rebalance_outcomes_total", portfolio="core", outcome="partial") == 0
    assert value(s, "keel_execution_errors_total", portfolio="core", kind="ledger") == 0
    assert value(s, "keel_orders_total", portfolio="core", symbol="BTC-USDT", side="sell", status="rejected") == 0
    assert value(s, "keel_fills_total", portfolio="core", symbol="BTC-USDT", side="buy") == 0
    assert value(s, "keel_ticks_total", symbol="BTC-USDT") == 0
    assert value(s, "keel_bad_ticks_total", symbol="BTC-USDT", reason="outlier") == 0
    assert value(s, "keel_feed_reconnects_total", exchange="binance") == 0
    assert value(s, "keel_fees_quote_total", portfolio="core") == 0


def test_rebalances_are_counted_by_the_reason_of_their_intent() -> None:
    sensor = PrometheusSensor()
    sensor.on_intent(make_intent("a1", reason=Reason.CALENDAR), latency_ns=2_000_000)
    sensor.on_intent(make_intent("a2", reason=Reason.THRESHOLD), latency_ns=3_000_000)
    sensor.on_intent(make_intent("a3", reason=Reason.MANUAL), latency_ns=1_000)
    sensor.on_rebalance_done("core", "a1", "complete")
    sensor.on_rebalance_done("core", "a2", "partial")
    sensor.on_rebalance_done("core", "a3", "failed")
    sensor.on_rebalance_done("core", "never-seen", "complete")
    s = scrape(sensor.registry)
    assert value(s, "keel_intents_total", portfolio="core", reason="calendar") == 1
    assert value(s, "keel_rebalances_total", portfolio="core", reason="calendar") == 1
    assert value(s, "keel_rebalances_total", portfolio="core", reason="threshold") == 1
    assert ("keel_rebalances_total", frozenset({("portfolio", "core"), ("reason", "manual")})) not in s
    assert value(s, "keel_rebalances_total", portfolio="core", reason="unknown") == 1
    assert value(s, "keel_rebalance_outcomes_total", portfolio="core", outcome="failed") == 1
    assert value(s, "keel_rebalance_outcomes_total", portfolio="core", outcome="complete") == 2
    assert value(s, "keel_tick_to_intent_seconds_count") == 3
    assert value(s, "keel_tick_to_intent_seconds_sum") == pytest.approx(0.005001)
    assert value(s, "keel_tick_to_intent_seconds_bucket", le="0.0025") == 2


def test_intents_that_never_finish_do_not_grow_memory_without_bound() -> None:
    sensor = PrometheusSensor()
    for i in range(MAX_TRACKED_INTENTS + 10):
        sensor.on_intent(make_intent(f"{i:016x}"), latency_ns=0)
    sensor.on_rebalance_done("core", f"{MAX_TRACKED_INTENTS + 9:016x}", "complete")
    sensor.on_rebalance_done("core", f"{0:016x}", "complete")
    s = scrape(sensor.registry)
    assert value(s, "keel_rebalances_total", portfolio="core", reason="threshold") == 1
    assert value(s, "keel_rebalances_total", portfolio="core", reason="unknown") == 1


def test_fills_fees_turnover_and_orders() -> None:
    sensor = PrometheusSensor()
    sensor.on_order("core", "BTC-USDT", Side.SELL, "sent")  # type: ignore[arg-type]
    sensor.on_order("core", "BTC-USDT", "sell", "filled")
    sensor.on_fill("core", make_fill(Side.BUY, "0.01", "50000"), fee_quote=0.5, latency_ns=250_000_000)
    sensor.on_fill("core", make_fill(Side.SELL, "2", "3000"), fee_quote=6.0, latency_ns=500_000_000)
    s = scrape(sensor.registry)
    assert value(s, "keel_orders_total", portfolio="core", symbol="BTC-USDT", side="sell", status="sent") == 1
    assert value(s, "keel_orders_total", portfolio="core", symbol="BTC-USDT", side="sell", status="filled") == 1
    assert value(s, "keel_fills_total", portfolio="core", symbol="BTC-USDT", side="buy") == 1
    assert value(s, "keel_fills_total", portfolio="core", symbol="BTC-USDT", side="sell") == 1
    assert value(s, "keel_fees_quote_total", portfolio="core") == pytest.approx(6.5)
    assert value(s, "keel_turnover_quote_total", portfolio="core") == pytest.approx(6500.0)
    assert value(s, "keel_intent_to_fill_seconds_count") == 2
    assert value(s, "keel_intent_to_fill_seconds_bucket", le="0.25") == 1


def test_ledger_errors_are_execution_errors_whose_kind_starts_with_ledger() -> None:
    sensor = PrometheusSensor()
    sensor.on_execution_error("core", "rate_limited")
    sensor.on_execution_error("core", "ledger_write")
    sensor.on_ledger_commit(rows=3, seconds=0.002)
    sensor.on_reconnect("binance")
    s = scrape(sensor.registry)
    assert value(s, "keel_execution_errors_total", portfolio="core", kind="rate_limited") == 1
    assert value(s, "keel_execution_errors_total", portfolio="core", kind="ledger_write") == 1
    assert value(s, "keel_ledger_errors_total") == 1
    assert value(s, "keel_ledger_commits_total") == 1
    assert value(s, "keel_ledger_rows_total") == 3
    assert value(s, "keel_ledger_commit_seconds_bucket", le="0.001") == 0
    assert value(s, "keel_ledger_commit_seconds_bucket", le="0.0025") == 1
    assert value(s, "keel_feed_reconnects_total", exchange="binance") == 1


def test_each_sensor_has_its_own_registry() -> None:
    first, second = PrometheusSensor(), PrometheusSensor()
    first.on_tick("BTC-USDT", 1)
    assert value(scrape(first.registry), "keel_ticks_total", symbol="BTC-USDT") == 1
    assert ("keel_ticks_total", frozenset({("symbol", "BTC-USDT")})) not in scrape(second.registry)
    assert not any(n.startswith("keel_") for n in names(scrape(REGISTRY)))


def test_collector_exports_portfolio_state() -> None:
    registry = CollectorRegistry()
    make_collector(registry, [make_snapshot(), make_snapshot("watch", mode="observe", paused=True,
                                                                 trigger_state="paused", hodl_value=0.0)])
    s = scrape(registry)
    assert value(s, "keel_portfolio_value_quote", portfolio="core") == 11_000
    assert value(s, "keel_portfolio_hodl_value_quote", portfolio="core") == 10_000
    assert value(s, "keel_portfolio_premium_ratio", portfolio="core") == pytest.approx(0.1)
    assert ("keel_portfolio_premium_ratio", frozenset({("portfolio", "watch")})) not in s
    assert value(s, "keel_portfolio_weight_ratio", portfolio="core", coin="BTC") == 0.56
    assert value(s, "keel_portfolio_target_weight_ratio", portfolio="core", coin="ETH") == 0.5
    assert value(s, "keel_portfolio_deviation_ratio", portfolio="core", coin="ETH") == -0.06
    assert value(s, "keel_portfolio_drift_ratio", portfolio="core") == 0.06
    assert value(s, "keel_portfolio_band_ratio", portfolio="core") == 0.05
    assert value(s, "keel_portfolio_coin_band_ratio", portfolio="core", coin="ETH") == 0.03
    assert value(s, "keel_portfolio_band_usage_ratio", portfolio="core") == pytest.approx(2.0)  # ETH: 0.06 / 0.03
    assert value(s, "keel_portfolio_holdings", portfolio="core", asset="ETH") == 1.5
    assert value(s, "keel_portfolio_floor_value_quote", portfolio="core") == 9_000
    assert value(s, "keel_portfolio_window_remaining_seconds", portfolio="core") == 0
    assert {st: value(s, "keel_portfolio_trigger_state", portfolio="core", state=st)
            for st in ("idle", "armed", "cooldown", "paused")} == {"idle": 0, "armed": 1, "cooldown": 0, "paused": 0}
    assert value(s, "keel_portfolio_trigger_state", portfolio="watch", state="paused") == 1
    assert value(s, "keel_portfolio_observe_mode", portfolio="core") == 0
    assert value(s, "keel_portfolio_observe_mode", portfolio="watch") == 1
    assert value(s, "keel_portfolio_paused", portfolio="watch") == 1
    assert value(s, "keel_portfolio_stale", portfolio="core") == 0


def test_collector_exports_feed_health_and_service_state() -> None:
    registry = CollectorRegistry()
    health = {
        "BTC-USDT": SymbolHealthView(last_tick_ts_ns=1_700_000_000_000_000_000, stale=False, ticks=10),
        "ETH-USDT": SymbolHealthView(last_tick_ts_ns=None, stale=True, ticks=0),
    }
    make_collector(registry, [], health, halted=True, depth=7, now_ns=1_700_000_002_500_000_000)
    s = scrape(registry)
    assert value(s, "keel_last_tick_timestamp_seconds", symbol="BTC-USDT") == pytest.approx(1_700_000_000.0)
    assert value(s, "keel_tick_age_seconds", symbol="BTC-USDT") == pytest.approx(2.5)
    assert ("keel_tick_age_seconds", frozenset({("symbol", "ETH-USDT")})) not in s
    assert value(s, "keel_feed_stale", symbol="BTC-USDT") == 0
    assert value(s, "keel_feed_stale", symbol="ETH-USDT") == 1
    assert value(s, "keel_mailbox_depth") == 7
    assert value(s, "keel_halted") == 1
    assert value(s, "keel_build_info", version="9.9.9") == 1


def test_collector_reads_state_at_each_scrape_and_an_unknown_state_is_still_shown() -> None:
    registry = CollectorRegistry()
    snapshots = [make_snapshot(trigger_state="idle")]
    make_collector(registry, snapshots)
    assert value(scrape(registry), "keel_portfolio_trigger_state", portfolio="core", state="idle") == 1
    snapshots[0] = make_snapshot(trigger_state="terminating", value=float("nan"))
    s = scrape(registry)
    assert value(s, "keel_portfolio_trigger_state", portfolio="core", state="idle") == 0
    assert value(s, "keel_portfolio_trigger_state", portfolio="core", state="terminating") == 1
    assert math.isnan(value(s, "keel_portfolio_value_quote", portfolio="core"))


def test_collector_names_clash_with_nothing_and_are_detected_twice() -> None:
    sensor = PrometheusSensor()
    make_collector(sensor.registry, [make_snapshot()])
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        make_collector(sensor.registry, [])


@pytest.mark.asyncio
async def test_server_serves_metrics_health_and_readiness() -> None:
    sensor = PrometheusSensor()
    sensor.on_tick("BTC-USDT", 1)
    readiness = [False, "waiting for the first tick of ETH-USDT"]
    server = MetricsServer(sensor.registry, port=0, ready=lambda: (bool(readiness[0]), str(readiness[1])))
    port = await server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/plain")
                text = await r.text()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            assert families["keel_ticks"].samples[0].value == 1
            async with http.get(f"{base}/healthz") as r:
                assert (r.status, await r.text()) == (200, "ok")
            async with http.get(f"{base}/readyz") as r:
                assert (r.status, await r.text()) == (503, "waiting for the first tick of ETH-USDT")
            readiness[:] = [True, "ready"]
            async with http.get(f"{base}/readyz") as r:
                assert (r.status, await r.text()) == (200, "ready")
    finally:
        await server.stop()
    await server.stop()


@pytest.mark.parametrize(
    ("deviations", "thresholds", "usage"),
    [
        # a per-coin override: ETH is outside its own 2% band although the drift (3%) is under the largest band (5%)
        ({"BTC": 0.03, "ETH": -0.03}, {"BTC": 0.05, "ETH": 0.02}, 1.5),
        # a relative band converted to weight units (10% of a 20% target = 0.02): inside
        ({"BTC": -0.01, "SOL": 0.01}, {"BTC": 0.08, "SOL": 0.02}, 0.5),
        # a coin without a band (the quote outside the targets) does not count
        ({"BTC": 0.04, "USDT": -0.04}, {"BTC": 0.05, "USDT": math.inf}, 0.8),
    ],
)
def test_band_usage_is_the_engines_own_check_per_coin(deviations: dict[str, float], thresholds: dict[str, float],
                                                       usage: float) -> None:
    snapshot = make_snapshot(deviations=deviations, thresholds=thresholds,
                             drift=max(abs(d) for d in deviations.values()))
    assert band_usage(snapshot) == pytest.approx(usage)
    assert (band_usage(snapshot) >= 1) == any(abs(d) >= thresholds[c] for c, d in deviations.items())
