"""Keys come only from the environment and never leave it: a run with a known fake API key and secret
(ccxt against the Binance-compatible fake) and MQTT credentials, then a grep of everything keel wrote:
every log record at DEBUG, /metrics, every MQTT message, the ledger and its WAL, the recording."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiomqtt
import pytest

from ops.config import loads_config
from ops.metrics import PrometheusSensor
from ops.service import Service
from tests.integration.binance_kit import ccxt_service_toml, keep_prices_in_line, service_fake
from tests.integration.services import free_port, mosquitto
from tests.service_kit import by_threshold, count_done

pytestmark = pytest.mark.services

KEY = "KEELFAKEKEY7f3a9c1e2d4b"
SECRET = "KEELFAKESECRETq8w7e6r5t4y3"
MQTT_PASSWORD = "KEELFAKEMQTTPASS55a1"
CONFIG = ccxt_service_toml(
    "sec", "[metrics]\nport = {metrics_port}\n[mqtt]\nenabled = true\nport = {mqtt_port}\n"
    'username_env = "KEEL_SEC_MQTT_USER"\npassword_env = "KEEL_SEC_MQTT_PASS"\n',
    base_url="{base_url}", api_key_env="KEEL_SEC_KEY", api_secret_env="KEEL_SEC_SECRET", timeout_secs=2)


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_keys_never_reach_logs_metrics_mqtt_or_the_ledger(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("KEEL_SEC_KEY", KEY)
    monkeypatch.setenv("KEEL_SEC_SECRET", SECRET)
    monkeypatch.setenv("KEEL_SEC_MQTT_USER", "keel")
    monkeypatch.setenv("KEEL_SEC_MQTT_PASS", MQTT_PASSWORD)
    fake = service_fake(KEY, SECRET)
    base_url = await fake.start()
    metrics_port = free_port()
    messages: list[bytes] = []
    try:
        with mosquitto(users={"keel": MQTT_PASSWORD, "viewer": "viewer-pass"},
                       acl="user keel\ntopic readwrite keel/#\nuser viewer\ntopic read keel/#\n") as broker:
            config = loads_config(CONFIG.format(base_url=base_url, ledger=tmp_path / "keel.sqlite",
                                                metrics_port=metrics_port, mqtt_port=broker.port), base_dir=tmp_path)
            service = Service(config, sensor=PrometheusSensor(), record=tmp_path / "ticks.jsonl", state_dir=tmp_path)
            keep_prices_in_line(service, fake)
            _, traded = count_done(service, 1, by_threshold)
            async with aiomqtt.Client("127.0.0.1", broker.port, username="viewer", password="viewer-pass") as viewer:
                await viewer.subscribe("keel/#")

                async def listen() -> None:
                    async for m in viewer.messages:
                        messages.append(bytes(m.payload) + str(m.topic).encode())

                listener = asyncio.create_task(listen())
                stop = asyncio.Event()
                task = asyncio.create_task(service.run(stop))
                try:
                    await asyncio.wait_for(traded.wait(), 60)
                    reader, writer = await asyncio.open_connection("127.0.0.1", metrics_port)
                    writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    metrics = await reader.read()
                    writer.close()
                finally:
                    stop.set()
                    assert await asyncio.wait_for(task, 30) == 0
                    listener.cancel()
    finally:
        await fake.stop()
    assert b"keel_portfolio_value_quote" in metrics and messages
    logs = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    files = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())  # noqa: ASYNC240 (after the service stopped)
    for secret in (KEY, SECRET, MQTT_PASSWORD):
        assert secret not in logs
        assert secret.encode() not in metrics
        assert all(secret.encode() not in m for m in messages)
        assert secret.encode() not in files
    print(f"\nchecked {len(caplog.records)} log records, {len(metrics)} bytes of metrics, {len(messages)} MQTT "
          f"messages and {len(files)} bytes of files: no key, secret or password")
