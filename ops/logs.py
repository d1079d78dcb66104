"""Logging off the event loop: the loop only enqueues records; a thread formats and writes them.

A log line written to a terminal or a journald pipe is a system call, and one that can block when the
reader is slow. keel logs every intent and fill at INFO, on the event loop that also applies ticks, so
`keel run` and `keel demo` route the root logger through a queue (the logging cookbook's
QueueHandler/QueueListener): a record costs the loop its creation and a queue put; the handlers run in
the listener's thread. Leaving the context stops the thread after it has written every queued record.
"""
from __future__ import annotations

import contextlib
import logging
import queue
from collections.abc import Iterator
from logging.handlers import QueueHandler, QueueListener


@contextlib.contextmanager
def logging_off_the_loop() -> Iterator[None]:
    """Move the root logger's handlers behind a queue for the duration of the context."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    if not handlers:
        yield
        return
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = QueueListener(records, *handlers, respect_handler_level=True)
    front = QueueHandler(records)
    for h in handlers:
        root.removeHandler(h)
    root.addHandler(front)
    listener.start()
    try:
        yield
    finally:
        root.removeHandler(front)
        listener.stop()  # writes what is still queued, then ends the thread
        for h in handlers:
            root.addHandler(h)
