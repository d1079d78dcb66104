"""A short soak (about 40 s): the service at 5,000 ticks/s under random feed faults stays up, its memory
stays flat, and the paper venue's journal reconciles with the ledger with zero differences."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import differences, soak

pytestmark = pytest.mark.slow


@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_short_soak_survives_random_faults_and_reconciles(tmp_path: Path) -> None:
    result = await soak(40 / 60, rate=5000, seed=7, workdir=tmp_path, warmup_secs=10, fault_every=(1.0, 3.0))
    print(f"\nshort soak: {result}")
    assert result.alive and result.exit_code == 0 and result.halted is None
    assert sum(result.faults_injected.values()) >= 5
    assert result.faults_survived == sum(result.faults_injected.values()) and result.faults_not_survived == 0
    assert result.ticks_per_sec > 2000, "the feed kept flowing at a useful rate"
    assert result.intents >= 3 and result.fills >= 3, "the soak traded"
    assert result.differences == 0 == differences(result.reconciliation), result.reconciliation
    assert result.reconciliation["venue_fills"] == result.reconciliation["ledger_fills"] == result.fills
    assert result.rss_ratio < 1.3, f"RSS grew from {result.rss_start_kb} to {result.rss_end_kb} KiB"
