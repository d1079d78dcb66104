"""Price faults the simulator can inject into its next frames: spikes and crossed books."""
from __future__ import annotations

from collections import Counter


class PriceFaults:
    """Pending one-shot price faults per symbol, and how many faults of each kind were injected."""

    __slots__ = ("_crosses", "_spikes", "injected")

    def __init__(self) -> None:
        self._spikes: dict[str, float] = {}
        self._crosses: set[str] = set()
        self.injected: Counter[str] = Counter()

    @property
    def armed(self) -> bool:
        """True while some symbol has a fault waiting for its next frame."""
        return bool(self._spikes) or bool(self._crosses)

    def armed_symbols(self) -> set[str]:
        """The symbols whose next frame carries a fault."""
        return set(self._spikes) | self._crosses

    def spike(self, symbol: str, factor: float) -> None:
        """Multiply the next frame's prices of `symbol` by `factor`."""
        if not factor > 0.0:
            raise ValueError(f"spike factor must be > 0, got {factor}")
        self._spikes[symbol] = factor

    def cross(self, symbol: str) -> None:
        """Send the next frame of `symbol` with bid > ask."""
        self._crosses.add(symbol)

    def count(self, kind: str, n: int = 1) -> None:
        """Record `n` faults of `kind` (drop, silent, garbage, spike, cross)."""
        self.injected[kind] += n

    def apply(self, symbol: str, bid: float, ask: float) -> tuple[float, float]:
        """The prices to send for `symbol` (faults consumed), given the true bid and ask."""
        factor = self._spikes.pop(symbol, None)
        if factor is not None:
            bid, ask = bid * factor, ask * factor
            self.injected["spike"] += 1
        if symbol in self._crosses:
            self._crosses.discard(symbol)
            if bid < ask:
                bid, ask = ask, bid
            if bid <= ask:
                bid = ask * 1.001
            self.injected["cross"] += 1
        return bid, ask
