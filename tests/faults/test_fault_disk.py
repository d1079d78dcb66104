"""Disk faults under the running service: the ledger's storage fills up or refuses writes while an order is
in flight.

keel must stop trading (no order is sent after the first failed write), stay up HALTED (/readyz 503,
`keel_halted 1`, ticks still reaching the engine) instead of crashing, and lose nothing it acknowledged:
once the disk recovers and keel restarts, the ledger holds every fill the paper venue made, exactly once,
and the holdings rebuilt from it equal the venue's.

Three ways to break the disk:
- `full`: the ledger lives on a 8 MiB tmpfs (linked from the state folder, so the paper venue's journal
  stays on the normal disk) that is filled to the last byte: SQLite gets ENOSPC (needs root and mount).
- `page_limit`: `PRAGMA max_page_count` lowered on the ledger's own writer connection (the limit is per
  connection, so it has to be that one): SQLITE_FULL as soon as a write needs a new page.
- `read_only`: `PRAGMA query_only` on the writer connection: every write fails as on read-only storage. (A
  real read-only remount is refused while SQLite holds the file open for writing, and root ignores chmod.)
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.soak import differences, reconcile
from ops.config import loads_config
from ops.ledger_ops import WriteContext
from ops.service import Service
from tests.faults import Recorder, http_get, metric, running
from tests.service_kit import LEDGER_TOML, portfolio_toml, sim_feed_toml

CONFIG = (portfolio_toml("disk", threshold=0.015, window_secs=0.3)
          + '[venue]\nkind = "paper"\nfee_rate = 0.001\nlatency_ms = 150\n'
          + sim_feed_toml(sim_rate_hz=100, sim_swing=0.15, speed=60, stale_secs=0) + LEDGER_TOML + "[metrics]\nport = 0\n")


@dataclass(frozen=True, slots=True)
class OnWriter:
    """A write op running one statement on the ledger's own writer connection, inside its transaction."""

    sql: str

    def apply(self, cur: sqlite3.Cursor, ctx: WriteContext) -> Any:
        return cur.execute(self.sql).fetchall()


class Disk:
    """Where the ledger lives and how its storage breaks and recovers."""

    def __init__(self, kind: str, state: Path, mount: Path | None = None) -> None:
        self.kind = kind
        self.ledger = state / "keel.sqlite"
        self.mount = mount
        self.pending: list[asyncio.Task[Any]] = []
        if mount is not None:
            self.ledger.symlink_to(mount / "keel.sqlite")

    def fail(self, service: Service) -> None:
        """Break the storage now (called synchronously, just before an order goes to the venue)."""
        ledger = service.ledger
        assert ledger is not None
        if self.kind == "full":
            assert self.mount is not None
            with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(self.ledger, timeout=5)) as con:
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the next commit must grow the WAL file
            fd = os.open(self.mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
            block = b"\0" * (1 << 16)
            try:
                while os.write(fd, block):
                    pass
            except OSError:  # ENOSPC: the disk is full
                pass
            finally:
                os.close(fd)
            assert os.statvfs(self.mount).f_bavail == 0
        else:
            sql = "PRAGMA max_page_count = 1" if self.kind == "page_limit" else "PRAGMA query_only = 1"
            self.pending.append(asyncio.get_running_loop().create_task(ledger.submit([OnWriter(sql)])))

    def recover(self) -> None:
        """The operator frees the disk (a restart opens a fresh writer connection without the pragmas)."""
        if self.mount is not None:
            (self.mount / "filler").unlink()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs mounted at `path` (skips the test when this process may not mount)."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.mark.asyncio
@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", ["full", "page_limit", "read_only"])
async def test_a_ledger_that_cannot_write_halts_trading_and_loses_nothing(tmp_path: Path, kind: str) -> None:
    with contextlib.ExitStack() as stack:
        mount = stack.enter_context(tmpfs(tmp_path / "disk", "8m")) if kind == "full" else None
        disk = Disk(kind, tmp_path, mount)
        config = loads_config(CONFIG.format(ledger=disk.ledger), base_dir=tmp_path)
        journal = disk.ledger.with_suffix(".paper-venue.sqlite")
        rec = Recorder()
        service = Service(config, sensor=rec, state_dir=tmp_path)
        async with running(service) as task:
            await rec.until(lambda: rec.completed() >= 2, what="the buy-in and a rebalance")
            assert service.readiness() == (True, "ok")

            def break_disk(symbol: str, side: str) -> None:
                rec.on_sent = None
                disk.fail(service)

            rec.on_sent = break_disk
            await rec.until(lambda: service.check_halt() is not None, what="the halt")
            failed_at = rec.first_error("ledger")
            assert failed_at is not None
            assert service.halted == "ledger not writable"
            await rec.more_ticks(100)  # the feed and the engine keep running while halted
            assert not task.done()
            assert rec.sent_after(failed_at) == [], "no order goes to the venue after the failed write"
            status, body = await http_get(service.metrics_port, "/readyz")
            assert (status, body) == (503, "halted: ledger not writable")
            _, scrape = await http_get(service.metrics_port, "/metrics")
            assert metric(scrape, "keel_halted") == 1.0
        assert task.result() == 0
        await asyncio.gather(*disk.pending, return_exceptions=True)

        before = reconcile(disk.ledger, journal)
        if kind != "page_limit":  # SQLITE_FULL from a page limit waits for a write that needs a new page
            assert before["missing_in_ledger"] >= 1, "the venue filled an order whose report could not be written"

        disk.recover()
        rec2 = Recorder()
        restarted = Service(config, sensor=rec2, state_dir=tmp_path)
        async with running(restarted):
            assert restarted.recovery.fills_recorded == before["missing_in_ledger"]
            assert restarted.check_halt() is None and restarted.readiness() == (True, "ok")
            assert restarted.ledger is not None and restarted.engine is not None
            rebuilt = await restarted.ledger.rebuild_holdings("disk")
            engine_holdings = restarted.engine.runtimes["disk"].portfolio.holdings
            assert {a: q for a, q in engine_holdings.items() if q} == {a: q for a, q in rebuilt.items() if q}
        after = reconcile(disk.ledger, journal)
        print(f"\n{kind}: venue fills {before['venue_fills']}, missing from the ledger at the halt "
              f"{before['missing_in_ledger']}, recovered at restart {restarted.recovery.fills_recorded}; "
              f"after: {after['venue_fills']} venue fills, {differences(after)} differences")
        assert differences(after) == 0, after["details"]
        assert after["venue_fills"] >= before["venue_fills"] > 0
