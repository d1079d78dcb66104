"""A slow broker: every byte between keel and a real mosquitto is delayed 300 ms by a relay. The engine and
the execution actor never wait on MQTT (rebalances go on at full speed) and every ledger fill still arrives
as an event, late but complete."""
from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import aiomqtt
import pytest

from ops.config import loads_config
from ops.service import Service
from tests.integration.mqtt_kit import SERVICE_CONFIG, SERVICE_VIEWER_PASSWORD, service_broker
from tests.service_kit import by_threshold, count_done

pytestmark = [pytest.mark.services, pytest.mark.slow]
DELAY_SECS = 0.3


class SlowRelay:
    """A TCP relay that holds every chunk for DELAY_SECS in each direction."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> SlowRelay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in self._writers:
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    await asyncio.sleep(DELAY_SECS)  # the fault itself: a slow link, not a synchronisation
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        for coro in (pipe(reader, up_writer), pipe(up_reader, writer)):
            task = asyncio.create_task(coro)
            self._tasks.add(task)


@pytest.mark.asyncio
@pytest.mark.timeout(150)
async def test_a_slow_broker_never_slows_trading_and_loses_no_event(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with service_broker(monkeypatch) as broker:
        async with SlowRelay(broker.port) as relay:
            config = loads_config(SERVICE_CONFIG.format(ledger=tmp_path / "keel.sqlite", port=relay.port),
                                  base_dir=tmp_path)
            service = Service(config, state_dir=tmp_path)
            _, enough = count_done(service, 4, by_threshold)
            fills: set[tuple[str, str]] = set()
            async with aiomqtt.Client("127.0.0.1", broker.port, username="viewer",
                                      password=SERVICE_VIEWER_PASSWORD) as viewer:
                await viewer.subscribe("keel/mq/fill", qos=1)
                got_all = asyncio.Event()
                recorded: set[tuple[str, str]] = set()

                async def listen() -> None:
                    async for m in viewer.messages:
                        f = json.loads(m.payload)
                        fills.add((f["symbol"], f["trade_id"]))
                        if recorded and fills >= recorded:
                            got_all.set()

                listener = asyncio.create_task(listen())
                stop = asyncio.Event()
                task = asyncio.create_task(service.run(stop))
                try:
                    # four rebalances within 60 s while each MQTT round trip takes 0.6 s: trading does not wait
                    await asyncio.wait_for(enough.wait(), 60)
                    assert service.driver is not None and service.driver.ticks > 100
                finally:
                    stop.set()
                    assert await asyncio.wait_for(task, 60) == 0
                from ops.ledger import Ledger

                ledger = await Ledger.open(tmp_path / "keel.sqlite", read_only=True)
                try:
                    recorded |= {(r.fill.symbol, r.fill.trade_id) for r in await ledger.fills("mq")}
                    pending = await ledger.outbox_pending(1000)
                finally:
                    await ledger.close()
                if fills >= recorded:
                    got_all.set()
                # what was acknowledged before the stop arrived; what was not is still in the outbox
                delivered = recorded - {(json.loads(e.payload)["symbol"], json.loads(e.payload)["trade_id"])
                                        for e in pending if e.topic.endswith("/fill")}
                assert fills >= delivered
                assert len(recorded) >= 8
                listener.cancel()
