"""Shared pieces of the fault tests: a recording sensor, the service run in-process, the simulator it embeds."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

import ops.feed
from engine.types import Fill, Intent
from feeds.simulator import ExchangeSimulator
from ops.metrics import PrometheusSensor
from ops.service import Service

WAIT_SECS = 30.0


class Recorder(PrometheusSensor):
    """The Prometheus sensor plus a timeline of what happened, and a way to await a condition (no sleeping)."""

    def __init__(self) -> None:
        super().__init__()
        self.tick_times: dict[str, list[int]] = {}
        self.ticks = 0
        self.intents: list[Intent] = []
        self.orders: list[tuple[float, str, str, str, str]] = []
        self.fills: list[Fill] = []
        self.errors: list[tuple[float, str]] = []
        self.bad: Counter[str] = Counter()
        self.reconnects: list[float] = []
        self.stale: dict[str, bool] = {}
        self.outcomes: list[tuple[str, str]] = []
        self.on_sent: Callable[[str, str], None] | None = None
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def _changed(self) -> None:
        if not self._waiters:
            return
        for predicate, fut in list(self._waiters):
            if not fut.done() and predicate():
                fut.set_result(None)

    async def until(self, predicate: Callable[[], bool], within_secs: float = WAIT_SECS, what: str = "") -> None:
        """Return once `predicate()` holds (checked after every recorded event); fail after `within_secs`."""
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, within_secs)
        except TimeoutError:
            pytest.fail(f"timed out after {within_secs} s waiting for {what or predicate}")
        finally:
            self._waiters.remove(entry)

    async def more_ticks(self, n: int, within_secs: float = WAIT_SECS) -> None:
        """Wait for `n` more ticks to reach the book."""
        target = self.ticks + n
        await self.until(lambda: self.ticks >= target, within_secs, f"{n} more ticks")

    def sent_after(self, t: float) -> list[tuple[float, str, str, str, str]]:
        """Orders sent to the venue after monotonic time `t`."""
        return [o for o in self.orders if o[4] == "sent" and o[0] > t]

    def on_tick(self, symbol: str, ts_recv_ns: int) -> None:
        super().on_tick(symbol, ts_recv_ns)
        self.tick_times.setdefault(symbol, []).append(ts_recv_ns)
        self.ticks += 1
        self._changed()

    def on_bad_tick(self, symbol: str, reason: str) -> None:
        super().on_bad_tick(symbol, reason)
        self.bad[reason] += 1
        self._changed()

    def on_intent(self, intent: Intent, latency_ns: int) -> None:
        super().on_intent(intent, latency_ns)
        self.intents.append(intent)
        self._changed()

    def on_order(self, portfolio: str, symbol: str, side: str, status: str) -> None:
        super().on_order(portfolio, symbol, side, status)
        self.orders.append((time.monotonic(), portfolio, symbol, side, status))
        if status == "sent" and self.on_sent is not None:
            self.on_sent(symbol, side)
        self._changed()

    def on_fill(self, portfolio: str, fill: Fill, fee_quote: float, latency_ns: int) -> None:
        super().on_fill(portfolio, fill, fee_quote, latency_ns)
        self.fills.append(fill)
        self._changed()

    def on_execution_error(self, portfolio: str, kind: str) -> None:
        super().on_execution_error(portfolio, kind)
        self.errors.append((time.monotonic(), kind))
        self._changed()

    def on_rebalance_done(self, portfolio: str, intent_id: str, outcome: str) -> None:
        super().on_rebalance_done(portfolio, intent_id, outcome)
        self.outcomes.append((intent_id, outcome))
        self._changed()

    def completed(self) -> int:
        """Intents that finished complete."""
        return sum(1 for _, outcome in self.outcomes if outcome == "complete")

    def on_reconnect(self, exchange: str) -> None:
        super().on_reconnect(exchange)
        self.reconnects.append(time.monotonic())
        self._changed()

    def on_stale(self, symbol: str, stale: bool) -> None:
        super().on_stale(symbol, stale)
        self.stale[symbol] = stale
        self._changed()

    def all_stale(self, symbols: list[str]) -> bool:
        """Every symbol reported stale."""
        return all(self.stale.get(s, False) for s in symbols)

    def first_error(self, kind: str) -> float | None:
        """Monotonic time of the first execution error of `kind`."""
        return next((t for t, k in self.errors if k == kind), None)


class SimulatorTap:
    """Catches the simulator the service embeds (`ops.feed.make_simulator`); optionally silent from the start."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, silent: bool = False) -> None:
        self.sim: ExchangeSimulator | None = None
        real = ops.feed.make_simulator

        def tapped(*args: Any, **kwargs: Any) -> ExchangeSimulator | None:
            sim = real(*args, **kwargs)
            if sim is not None and silent:
                sim.go_silent(True)
            self.sim = sim
            return sim

        monkeypatch.setattr(ops.feed, "make_simulator", tapped)

    @property
    def simulator(self) -> ExchangeSimulator:
        """The simulator (once the service started its feed)."""
        assert self.sim is not None, "the service has not started its simulator"
        return self.sim


@contextlib.asynccontextmanager
async def running(service: Service, *, ready_secs: float = WAIT_SECS) -> AsyncIterator[asyncio.Task[int]]:
    """Run the service until the block ends; yields its task once it is ready (fails if it dies first)."""
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop), name="service")
    ready = asyncio.create_task(service.ready.wait())
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=ready_secs, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
            pytest.fail("the service stopped before it was ready")
        if ready not in done:
            pytest.fail(f"the service was not ready after {ready_secs} s")
        yield task
    finally:
        ready.cancel()
        stop.set()
        if not task.done():
            await asyncio.wait_for(asyncio.shield(task), WAIT_SECS)


async def http_get(port: int | None, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path: (status, body)."""
    assert port is not None, "metrics are not served"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.text()


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in Prometheus text format."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the scrape")
