"""Where the simulator's prices come from: a seeded synthetic market, a replay of tick columns, or tests' pushes."""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.columns import F64, TickColumns
from engine.types import split_symbol
from feeds.synth import synth_ticks

DEFAULT_SYMBOLS: tuple[str, ...] = ("BTC-USDT", "ETH-USDT", "SOL-USDT")
REPLAY_CHUNK_ROWS = 65_536
FAST_CHUNK_TICKS = 65_536
MAX_CHUNK_TICKS = 262_144


@dataclass(frozen=True, slots=True)
class Chunk:
    """A run of ticks and when each is due, in seconds after the stream started (non-decreasing)."""

    columns: TickColumns
    due_secs: F64


class TickSource(Protocol):
    """What the simulator plays: a fixed symbol universe and a (possibly endless) run of chunks."""

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every symbol the source can emit (`BTC-USDT`); the simulator lists exactly these."""
        ...

    def chunks(self) -> Iterator[Chunk]:
        """Successive chunks; `due_secs` continues across chunks."""
        ...


def _is_fast(rate: float) -> bool:
    """0 or infinity mean: as fast as possible."""
    return rate == 0.0 or math.isinf(rate)


class PushSource:
    """A market that only moves when a test calls `ExchangeSimulator.publish`."""

    def __init__(self, symbols: Sequence[str] = DEFAULT_SYMBOLS) -> None:
        for s in symbols:
            split_symbol(s)
        self._symbols = tuple(dict.fromkeys(symbols))

    @property
    def symbols(self) -> tuple[str, ...]:
        """The listed symbols."""
        return self._symbols

    def chunks(self) -> Iterator[Chunk]:
        """No chunks: nothing moves by itself."""
        return iter(())


class SyntheticSource:
    """An endless seeded synthetic market (`feeds.synth.synth_ticks`) sent at `rate_hz` frames/s in total."""

    def __init__(
        self,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        *,
        seed: int = 0,
        rate_hz: float = 10.0,
        swing: float = 0.0,
        swing_period_secs: float = 600.0,
    ) -> None:
        if not (rate_hz >= 0.0):
            raise ValueError(f"rate_hz must be >= 0 (0 or inf: as fast as possible), got {rate_hz}")
        if swing_period_secs <= 0.0:
            raise ValueError(f"swing_period_secs must be > 0, got {swing_period_secs}")
        self._by_quote: dict[str, list[str]] = {}
        for s in dict.fromkeys(symbols):
            base, quote = split_symbol(s)
            self._by_quote.setdefault(quote, []).append(base)
        if not self._by_quote:
            raise ValueError("a synthetic market needs at least one symbol")
        self._symbols = tuple(f"{b}-{q}" for q, bases in self._by_quote.items() for b in bases)
        self.seed = seed
        self.rate_hz = rate_hz
        self.swing = swing
        if _is_fast(rate_hz):
            self._step_ns, self._n = 1_000_000, FAST_CHUNK_TICKS
        else:
            self._step_ns = max(1, round(1e9 / rate_hz))
            self._n = int(min(max(rate_hz * swing_period_secs, 256), MAX_CHUNK_TICKS))

    @property
    def symbols(self) -> tuple[str, ...]:
        """The synthetic symbols, grouped by quote currency."""
        return self._symbols

    def chunks(self) -> Iterator[Chunk]:
        """Endless chunks; each starts at the previous chunk's last mid so prices never jump."""
        last_mid: dict[str, dict[str, float]] = {q: {} for q in self._by_quote}
        start_ns = 1_704_067_200_000_000_000
        sent = 0
        k = 0
        while True:
            parts = []
            for qi, (quote, bases) in enumerate(self._by_quote.items()):
                seed = int(np.random.SeedSequence([self.seed, k, qi]).generate_state(1)[0])
                cols = synth_ticks(
                    bases, quote=quote, n_ticks=self._n, seed=seed, start_ns=start_ns, step_ns=self._step_ns,
                    swing=self.swing, swing_period_ns=self._n * self._step_ns,
                    start_prices=last_mid[quote] or None,
                )
                mids = cols.mid
                for i, s in enumerate(cols.symbols):
                    rows = np.flatnonzero(cols.sym == i)
                    if rows.size:
                        last_mid[quote][split_symbol(s)[0]] = float(mids[rows[-1]])
                parts.append(cols)
            cols = parts[0] if len(parts) == 1 else TickColumns.merge(parts)
            n = len(cols)
            if _is_fast(self.rate_hz):
                due = np.zeros(n, dtype=np.float64)
            else:
                due = (sent + np.arange(n, dtype=np.float64)) / self.rate_hz
            yield Chunk(cols, due)
            sent += n
            start_ns += self._n * self._step_ns
            k += 1


class ReplaySource:
    """A replay of recorded tick columns at `speed` times real time (0 or inf: as fast as possible)."""

    def __init__(self, columns: TickColumns, *, speed: float = 1.0) -> None:
        if not (speed >= 0.0):
            raise ValueError(f"speed must be >= 0 (0 or inf: as fast as possible), got {speed}")
        self.columns = columns
        self.speed = speed

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols of the replayed columns."""
        return self.columns.symbols

    def chunks(self) -> Iterator[Chunk]:
        """The columns in slices, each row due at its original time offset divided by `speed`."""
        cols = self.columns
        n = len(cols)
        if n == 0:
            return
        t0 = int(cols.ts_ns[0])
        for i in range(0, n, REPLAY_CHUNK_ROWS):
            j = min(n, i + REPLAY_CHUNK_ROWS)
            part = TickColumns(
                cols.symbols, cols.ts_ns[i:j], cols.ts_event_ns[i:j], cols.sym[i:j], cols.bid[i:j], cols.ask[i:j],
            )
            if _is_fast(self.speed):
                due = np.zeros(j - i, dtype=np.float64)
            else:
                due = (part.ts_ns - t0).astype(np.float64) / 1e9 / self.speed
            yield Chunk(part, due)
