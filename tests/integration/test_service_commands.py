"""Lifecycle commands on the running service (what MQTT's cmd topics call): pause, resume,
rebalance now, deposit, withdraw, terminate; each changes engine and ledger consistently."""
from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from engine.types import Intent, Reason
from ops.config import loads_config
from ops.mqtt_commands import Deposit, Pause, Rebalance, Resume, Terminate, Withdraw
from ops.service import Service
from ops.service_commands import ServiceCommands
from tests.service_kit import LEDGER_TOML, METRICS_OFF_TOML, SPOT_TARGETS, portfolio_toml, sim_feed_toml

CONFIG = (portfolio_toml("life", targets=SPOT_TARGETS, threshold=0.05, window_secs=600) + "[venue]\nfee_rate = 0.001\n"
          + sim_feed_toml(sim_rate_hz=40, sim_swing=0.01, stale_secs=0) + LEDGER_TOML + METRICS_OFF_TOML)


async def until_done(service: Service, reason: Reason, within: float = 20) -> Intent:
    """Wait for the next intent of that reason to finish executing (an event from on_done)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Intent] = loop.create_future()
    on_done = service.on_done

    def hook(intent: Intent, outcome: str) -> None:
        on_done(intent, outcome)
        if intent.reason is reason and not fut.done():
            fut.set_result(intent)

    service.on_done = hook  # type: ignore[method-assign]
    try:
        return await asyncio.wait_for(fut, within)
    finally:
        service.on_done = on_done  # type: ignore[method-assign]


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_commands_change_the_portfolio_and_the_ledger(tmp_path: Path) -> None:
    config = loads_config(CONFIG.format(ledger=tmp_path / "keel.sqlite"), base_dir=tmp_path)
    service = Service(config, state_dir=tmp_path)
    stop = asyncio.Event()
    started = asyncio.ensure_future(until_done(service, Reason.START, 60))
    task = asyncio.create_task(service.run(stop))
    try:
        await started
        cmd = ServiceCommands(service)
        engine = service.engine
        assert engine is not None and service.ledger is not None

        assert (await cmd.handle("life", Pause(id="1"))).ok
        assert engine.snapshot("life").paused
        assert (await cmd.handle("life", Resume(id="2"))).ok
        assert not engine.snapshot("life").paused

        waiting = asyncio.ensure_future(until_done(service, Reason.MANUAL))
        r = await cmd.handle("life", Rebalance(id="3"))
        assert r.ok, r.message
        if "intent" in r.data:
            await waiting
        else:
            waiting.cancel()

        usdt = engine.runtimes["life"].portfolio.holdings["USDT"]
        waiting = asyncio.ensure_future(until_done(service, Reason.DEPOSIT))
        r = await cmd.handle("life", Deposit(id="4", asset="USDT", amount=Decimal("1000")))
        assert r.ok, r.message
        deposit = await waiting
        assert all(leg.side.value == "buy" for leg in deposit.legs), "a deposit buys underweight coins first"
        assert engine.runtimes["life"].portfolio.holdings["USDT"] < usdt + 1000

        free = engine.runtimes["life"].portfolio.holdings["USDT"]
        r = await cmd.handle("life", Withdraw(id="5", amount=free / 2))
        assert r.ok and "withdrew" in r.message
        assert engine.runtimes["life"].portfolio.holdings["USDT"] == free - free / 2

        r = await cmd.handle("life", Withdraw(id="6", amount=Decimal("10000000")))
        assert not r.ok and "worth less" in r.message
        assert (await cmd.handle("nope", Pause(id="7"))).ok is False

        waiting = asyncio.ensure_future(until_done(service, Reason.TERMINATE))
        r = await cmd.handle("life", Terminate(id="8", mode="sell"))
        assert r.ok, r.message
        await waiting
        h = engine.runtimes["life"].portfolio.holdings
        assert h["BTC"] * 50_000 < 1 and h["ETH"] * 3_000 < 1, h
        assert engine.snapshot("life").paused
        # the ledger agrees with the engine, exactly
        assert await service.ledger.rebuild_holdings("life") == {a: q for a, q in h.items()}
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
