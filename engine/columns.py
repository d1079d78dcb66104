"""Ticks as columns (numpy arrays): the form replay and benchmarks work in."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.types import Tick

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TickColumns:
    """Ticks sorted by `ts_ns` (the engine's time: the receive time); `sym` indexes `symbols`."""

    symbols: tuple[str, ...]
    ts_ns: I64
    ts_event_ns: I64
    sym: I32
    bid: F64
    ask: F64

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])

    def __post_init__(self) -> None:
        n = self.ts_ns.shape[0]
        for name in ("ts_event_ns", "sym", "bid", "ask"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"TickColumns.{name} has {getattr(self, name).shape[0]} rows, ts_ns has {n}")
        if n > 1 and bool(np.any(self.ts_ns[1:] < self.ts_ns[:-1])):
            raise ValueError("TickColumns.ts_ns must be non-decreasing")

    @property
    def mid(self) -> F64:
        """Mid prices (bid + ask) / 2, computed exactly as `Tick.mid` does."""
        return (self.bid + self.ask) * 0.5

    def ticks(self) -> Iterator[Tick]:
        """The rows as `Tick` objects (slow; for the per-tick path and tests)."""
        syms = self.symbols
        for ts, te, s, b, a in zip(
            self.ts_ns.tolist(), self.ts_event_ns.tolist(), self.sym.tolist(),
            self.bid.tolist(), self.ask.tolist(), strict=True,
        ):
            yield Tick(syms[s], b, a, te, ts)

    @staticmethod
    def from_ticks(ticks: Sequence[Tick]) -> TickColumns:
        """Columns from tick objects (stable-sorted by receive time)."""
        symbols: dict[str, int] = {}
        for t in ticks:
            symbols.setdefault(t.symbol, len(symbols))
        ts = np.fromiter((t.ts_recv_ns for t in ticks), dtype=np.int64, count=len(ticks))
        order = np.argsort(ts, kind="stable")
        te = np.fromiter((t.ts_event_ns for t in ticks), dtype=np.int64, count=len(ticks))
        sym = np.fromiter((symbols[t.symbol] for t in ticks), dtype=np.int32, count=len(ticks))
        bid = np.fromiter((t.bid for t in ticks), dtype=np.float64, count=len(ticks))
        ask = np.fromiter((t.ask for t in ticks), dtype=np.float64, count=len(ticks))
        return TickColumns(tuple(symbols), ts[order], te[order], sym[order], bid[order], ask[order])

    @staticmethod
    def merge(parts: Sequence[TickColumns]) -> TickColumns:
        """Several column sets in one, stable-sorted by time (ties keep part order)."""
        symbols: dict[str, int] = {}
        syms = []
        for p in parts:
            remap = np.array([symbols.setdefault(s, len(symbols)) for s in p.symbols] or [0], dtype=np.int32)
            syms.append(remap[p.sym] if len(p) else p.sym)
        ts = np.concatenate([p.ts_ns for p in parts]) if parts else np.zeros(0, np.int64)
        order = np.argsort(ts, kind="stable")
        return TickColumns(
            tuple(symbols),
            ts[order],
            np.concatenate([p.ts_event_ns for p in parts])[order],
            np.concatenate(syms)[order].astype(np.int32),
            np.concatenate([p.bid for p in parts])[order],
            np.concatenate([p.ask for p in parts])[order],
        )
