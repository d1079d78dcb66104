"""Golden test: the service runs live against the simulator through cryptofeed and records what it
saw; `keel backtest` of that recording decides exactly the same intents."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.types import Intent
from feeds.files import read_ticks
from ops.backtest import intent_record, run_backtest
from ops.config import loads_config
from ops.ledger_read import ledger_intents
from ops.service import Service

CONFIG = """
[portfolio]
name = "gold"
capital = 10000
[portfolio.targets]
BTC = 0.4
ETH = 0.3
SOL = 0.1
USDT = 0.2
[rebalance]
threshold = 0.02
window_secs = 1
[venue]
kind = "paper"
fee_rate = 0.001
[feed]
source = "sim"
sim_rate_hz = 150
sim_swing = 0.12
speed = 40
stale_secs = 0
outlier_fraction = 0.2
[ledger]
path = "{ledger}"
[metrics]
enabled = false
"""


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_a_recorded_live_run_replays_to_the_same_intents(tmp_path: Path) -> None:
    config = loads_config(CONFIG.format(ledger=tmp_path / "keel.sqlite"), base_dir=tmp_path)
    record = tmp_path / "ticks.jsonl"
    service = Service(config, record=record, state_dir=tmp_path)
    stop = asyncio.Event()
    done: list[Intent] = []
    enough = asyncio.Event()
    on_done = service.on_done

    def counting_done(intent: Intent, outcome: str) -> None:
        on_done(intent, outcome)
        if outcome == "complete":
            done.append(intent)
        if len(done) >= 5:
            enough.set()

    service.on_done = counting_done  # type: ignore[method-assign]
    task = asyncio.create_task(service.run(stop))
    await asyncio.wait_for(enough.wait(), timeout=90)
    stop.set()
    assert await task == 0

    live = [intent_record(i) for i in ledger_intents(service.config.ledger.path, None)]  # as recorded
    assert live[0]["reason"] == "start"
    cols, report = read_ticks(record)
    assert report.rows_kept == service.driver.ticks
    replay = [intent_record(i) for i in run_backtest(config, cols).intents]
    n = len(done)
    assert n >= 5
    assert replay[:n] == live[:n]
    print(f"\n{len(cols)} recorded ticks; {n} live intents reproduced exactly by the replay")
