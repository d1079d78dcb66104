"""Golden test: the service runs live against the simulator through cryptofeed and records what it
saw; `keel backtest` of that recording decides exactly the same intents."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from feeds.files import read_ticks
from ops.backtest import intent_record, run_backtest
from ops.config import loads_config
from ops.ledger_read import ledger_intents
from ops.service import Service
from tests.service_kit import (
    LEDGER_TOML,
    METRICS_OFF_TOML,
    completed,
    count_done,
    portfolio_toml,
    sim_feed_toml,
)

CONFIG = (portfolio_toml("gold", threshold=0.02, window_secs=1) + '[venue]\nkind = "paper"\nfee_rate = 0.001\n'
          + sim_feed_toml(sim_rate_hz=150, sim_swing=0.12, speed=40, stale_secs=0, outlier_fraction=0.2)
          + LEDGER_TOML + METRICS_OFF_TOML)


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_a_recorded_live_run_replays_to_the_same_intents(tmp_path: Path) -> None:
    config = loads_config(CONFIG.format(ledger=tmp_path / "keel.sqlite"), base_dir=tmp_path)
    record = tmp_path / "ticks.jsonl"
    service = Service(config, record=record, state_dir=tmp_path)
    stop = asyncio.Event()
    done, enough = count_done(service, 5, completed)
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
