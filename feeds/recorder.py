"""Record live ticks as JSON lines, one tick a line, exactly re-readable.

    {"symbol":"BTC-USDT","bid":42001.45,"ask":42001.46,"ts_event_ns":1704067200000000000,"ts_recv_ns":1704067200000312000}

Floats are written by orjson as the shortest text that reads back to the same float, so a re-read is
bit-identical. `feeds/files.py` reads this format.
"""
from __future__ import annotations

import math
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

import orjson

from engine.types import Tick

DEFAULT_BUFFER_TICKS = 1024


class TickRecorder:
    """Buffered JSONL writer of ticks; appends to `path` unless `mode="w"`."""

    def __init__(self, path: Path, *, mode: Literal["a", "w"] = "a", buffer_ticks: int = DEFAULT_BUFFER_TICKS) -> None:
        if buffer_ticks < 1:
            raise ValueError(f"buffer_ticks must be >= 1, got {buffer_ticks}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] | None = open(self.path, mode + "b")
        self._buffer: list[bytes] = []
        self._buffer_ticks = buffer_ticks
        self.written = 0

    def write(self, tick: Tick) -> None:
        """Buffer one tick; the buffer goes to the file when full, on `flush` and on `close`."""
        if self._file is None:
            raise ValueError(f"tick recorder for {self.path} is closed")
        if not (math.isfinite(tick.bid) and math.isfinite(tick.ask)):
            raise ValueError(f"cannot record a non-finite price: {tick}")
        self._buffer.append(orjson.dumps(tick, option=orjson.OPT_APPEND_NEWLINE))
        if len(self._buffer) >= self._buffer_ticks:
            self.flush()

    def flush(self) -> None:
        """Write the buffered ticks to the file and flush it to the OS."""
        if self._file is None:
            return
        if self._buffer:
            self._file.write(b"".join(self._buffer))
            self.written += len(self._buffer)
            self._buffer.clear()
        self._file.flush()

    def close(self) -> None:
        """Flush and close; further writes raise."""
        if self._file is None:
            return
        try:
            self.flush()
        finally:
            self._file.close()
            self._file = None

    def __enter__(self) -> TickRecorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self.close()
