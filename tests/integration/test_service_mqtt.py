"""The whole service with MQTT on, against a real mosquitto with passwords and an ACL: fill events
arrive exactly as the ledger recorded them, state is retained, and a command pauses the portfolio."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from ops.config import loads_config
from ops.service import Service
from tests.integration.mqtt_kit import SERVICE_CONFIG, SERVICE_VIEWER_PASSWORD, service_broker
from tests.service_kit import by_threshold, count_done

pytestmark = pytest.mark.services


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_fills_state_and_commands_over_a_real_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with service_broker(monkeypatch) as broker:
        config = loads_config(SERVICE_CONFIG.format(ledger=tmp_path / "keel.sqlite", port=broker.port),
                              base_dir=tmp_path)
        service = Service(config, state_dir=tmp_path)
        stop = asyncio.Event()
        _, enough = count_done(service, 2, by_threshold)
        fills: list[dict] = []
        results: asyncio.Queue[dict] = asyncio.Queue()
        state_seen = asyncio.Event()
        async with aiomqtt.Client("127.0.0.1", broker.port, username="viewer", password=SERVICE_VIEWER_PASSWORD,
                                  identifier="viewer") as viewer:
            await viewer.subscribe("keel/#", qos=1)

            async def listen() -> None:
                async for m in viewer.messages:
                    topic = str(m.topic)
                    if topic == "keel/mq/fill":
                        fills.append(json.loads(m.payload))
                    elif topic == "keel/mq/state":
                        state_seen.set()
                    elif topic == "keel/mq/cmd/result":
                        await results.put(json.loads(m.payload))

            listener = asyncio.create_task(listen())
            task = asyncio.create_task(service.run(stop))
            try:
                await asyncio.wait_for(enough.wait(), 60)
                await asyncio.wait_for(state_seen.wait(), 30)
                await viewer.publish("keel/mq/cmd", json.dumps({"id": "p1", "cmd": "pause"}), qos=1)
                result = await asyncio.wait_for(results.get(), 30)
                assert result["id"] == "p1" and result["ok"] is True
                assert service.engine is not None and service.engine.snapshot("mq").paused
                await viewer.publish("keel/mq/cmd", b'{"id": "bad", "cmd": "explode"}', qos=1)
                bad = await asyncio.wait_for(results.get(), 30)
                assert bad["ok"] is False
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
            # every fill in the ledger was published (at least once), and nothing else
            from ops.ledger import Ledger

            ledger = await Ledger.open(tmp_path / "keel.sqlite", read_only=True)
            try:
                recorded = {(r.fill.symbol, r.fill.trade_id) for r in await ledger.fills("mq")}
            finally:
                await ledger.close()
            async with asyncio.timeout(20):
                while {(f["symbol"], f["trade_id"]) for f in fills} != recorded:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # events may still be on their way: poll the condition
            listener.cancel()
    assert len(recorded) >= 6
