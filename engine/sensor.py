"""The metrics interface the core reports through; the default does nothing (faust's sensor pattern)."""
from __future__ import annotations

from engine.types import Fill, Intent


class Sensor:
    """Receives the core's events. Subclass and override what you record; every method is a no-op here.

    Hot-path methods (`on_tick`, `on_bad_tick`) must stay O(1): cache labelled children.
    Gauges that can be read from state (weights, drift, value) belong in a scrape-time collector instead.
    """

    __slots__ = ()

    def on_tick(self, symbol: str, ts_recv_ns: int) -> None:
        """A tick was applied to the book."""

    def on_bad_tick(self, symbol: str, reason: str) -> None:
        """A tick was rejected (reason: nan, non_positive, crossed, backwards, unknown_symbol, outlier)."""

    def on_trigger_state(self, portfolio: str, state: str) -> None:
        """The trigger moved to `idle`, `armed`, `cooldown` or `paused`."""

    def on_intent(self, intent: Intent, latency_ns: int) -> None:
        """An intent was emitted; latency is from the receive time of the tick that caused it."""

    def on_order(self, portfolio: str, symbol: str, side: str, status: str) -> None:
        """An order changed status (sent, filled, partially_filled, rejected, expired, canceled, unknown)."""

    def on_fill(self, portfolio: str, fill: Fill, fee_quote: float, latency_ns: int) -> None:
        """A fill was committed to the ledger; latency is from its intent."""

    def on_execution_error(self, portfolio: str, kind: str) -> None:
        """A venue or ledger error of a given kind."""

    def on_rebalance_done(self, portfolio: str, intent_id: str, outcome: str) -> None:
        """An intent finished: complete, partial, failed or parked."""

    def on_ledger_commit(self, rows: int, seconds: float) -> None:
        """A ledger transaction committed `rows` rows."""

    def on_reconnect(self, exchange: str) -> None:
        """A feed reconnected."""

    def on_stale(self, symbol: str, stale: bool) -> None:
        """A symbol's feed went stale or fresh again."""


NULL_SENSOR = Sensor()
