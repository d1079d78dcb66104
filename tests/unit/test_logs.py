"""Logging off the loop: records reach the real handlers in order, and a blocked handler never blocks the caller."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from ops.logs import logging_off_the_loop


class Blocking(logging.Handler):
    """A handler that holds its first record until released (a stuck terminal or pipe)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.unblock = threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.unblock.wait(30)
        self.lines.append(self.format(record))


@pytest.fixture
def root_with(request: pytest.FixtureRequest) -> Iterator[Blocking]:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    handler = Blocking()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    yield handler
    root.handlers = saved
    root.setLevel(level)


def test_a_blocked_handler_does_not_block_the_logging_caller_and_nothing_is_lost(root_with: Blocking) -> None:
    log = logging.getLogger("keel.test")
    before = logging.getLogger().handlers[:]
    with logging_off_the_loop():
        log.info("intent %s", "a")
        assert root_with.entered.wait(30)  # the listener thread is inside the handler, stuck
        for k in range(100):
            log.info("fill %d", k)  # returns although the handler is still stuck
        assert root_with.lines == []
        root_with.unblock.set()
    assert root_with.lines == ["INFO intent a", *(f"INFO fill {k}" for k in range(100))]
    assert logging.getLogger().handlers == before  # the handlers are back as they were


def test_no_handlers_is_a_no_op() -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []
    try:
        with logging_off_the_loop():
            assert root.handlers == []
    finally:
        root.handlers = saved
