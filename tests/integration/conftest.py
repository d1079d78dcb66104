"""Fixtures shared by the integration tests (a test module's own fixture of the same name wins)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.integration.actor_kit import WatchedLedger, open_ledger


@pytest_asyncio.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[WatchedLedger]:
    """A fresh ledger file that counts its commits (the execution actor's tests)."""
    book = await open_ledger(tmp_path / "keel.sqlite")
    yield book
    await book.close()
