"""Fixtures shared by the integration tests (a test module's own fixture of the same name wins)."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from ops.ledger import Ledger
from tests.integration.actor_kit import WatchedLedger, open_ledger
from tests.integration.mqtt_kit import ACL, USERS, Broker, Clock, broker_dir


@pytest_asyncio.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[WatchedLedger]:
    """A fresh ledger file that counts its commits (the execution actor's tests)."""
    book = await open_ledger(tmp_path / "keel.sqlite")
    yield book
    await book.close()


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A started mosquitto with the MQTT tests' users and ACL, which the test may stop and start again."""
    with broker_dir() as workdir:
        b = Broker(workdir, USERS, ACL)
        b.start()
        try:
            yield b
        finally:
            b.stop()


@pytest_asyncio.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Ledger]:
    """The real ledger (SQLite) as the MQTT bridge's outbox."""
    ledger = await Ledger.open(tmp_path / "l.sqlite")
    try:
        yield ledger
    finally:
        await ledger.close()


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves, for `clocked_outbox`."""
    return Clock()


@pytest_asyncio.fixture
async def clocked_outbox(tmp_path: Path, clock: Clock) -> AsyncIterator[Ledger]:
    """The real ledger (SQLite) as the bridge's outbox, its times taken from `clock`."""
    ledger = await Ledger.open(tmp_path / "keel.sqlite", clock_ns=clock)
    try:
        yield ledger
    finally:
        await ledger.close()
