"""Clock faults under the live driver: the wall clock jumps forward or back by an hour.

The engine runs on keel's `LiveClock` and `LiveDriver` inside a real event loop; `ops.live` reads the wall
clock through a `WallClock` the test moves, and ticks carry that clock's receive times (as cryptofeed
stamps them). Execution is instant and fills nothing, so the portfolio stays out of its band and the
trigger fires after every window whenever it may: any extra or duplicated intent would show.
"""
from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

import ops.live
from engine.engine import Engine
from engine.sensor import Sensor
from engine.types import Intent, Tick
from ops.config import loads_config
from ops.live import LiveClock, LiveDriver
from ops.specs import portfolio_specs
from tests.service_kit import HALVES, portfolio_toml

SEC = 1_000_000_000
HOUR = 3600 * SEC
T0 = 1_767_225_600 * SEC  # 2026-01-01T00:00:00Z
WINDOW_SECS = 60
DEBOUNCE_SECS = 0.2
STALE_SECS = 10
PRICES = {"BTC-USDT": 60_000.0, "ETH-USDT": 3_000.0}

CONFIG = (portfolio_toml("clock", targets=HALVES, threshold=0.05, debounce_secs=DEBOUNCE_SECS, window_secs=WINDOW_SECS)
          + f'[feed]\nstale_secs = {STALE_SECS}\n[ledger]\npath = "unused.sqlite"\n')


class WallClock:
    """The wall clock `ops.live` reads (`time.time_ns`), moved by the test."""

    def __init__(self, ns: int) -> None:
        self.ns = ns

    def time_ns(self) -> int:
        """Now, as the test set it."""
        return self.ns


class States(Sensor):
    """Counts trigger transitions and records the receive time of every tick the book applied."""

    def __init__(self) -> None:
        self.states: Counter[str] = Counter()
        self.applied: list[int] = []

    def on_trigger_state(self, portfolio: str, state: str) -> None:
        self.states[state] += 1

    def on_tick(self, symbol: str, ts_recv_ns: int) -> None:
        self.applied.append(ts_recv_ns)


@dataclass
class Rig:
    """An engine on a live clock driven by ticks stamped by the test's wall clock."""

    wall: WallClock
    clock: LiveClock
    engine: Engine
    driver: LiveDriver
    sensor: States
    intents: list[Intent] = field(default_factory=list)
    engine_times: list[int] = field(default_factory=list)
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    moves: Iterator[float] = field(default_factory=lambda: itertools.cycle((1.0, 1.001)))

    def dispatch(self, intents: list[Intent], cause_ns: int) -> None:
        """Instant execution with no fill: the intent is done at once."""
        for intent in intents:
            self.intents.append(intent)
            self.engine.intent_done(intent.portfolio, intent)
        self.decided.set()

    def ticks(self, n: int = 1, step_secs: float = 0.0) -> None:
        """`n` rounds of one tick per symbol at the wall clock's time, the wall clock moving `step_secs` each."""
        for _ in range(n):
            self.wall.ns += int(step_secs * SEC)
            move = next(self.moves)
            for symbol, price in PRICES.items():
                ts = self.wall.ns
                self.driver.on_tick(Tick(symbol, price * move, price * move * 1.0001, ts, ts))
                self.engine_times.append(self.clock.now_ns())

    async def next_intent(self) -> Intent:
        """Wait for the loop to wake the clock for a due timer and the engine to decide."""
        self.decided.clear()
        count = len(self.intents)
        await asyncio.wait_for(self.decided.wait(), 10)
        assert len(self.intents) == count + 1
        return self.intents[-1]


@pytest_asyncio.fixture
async def rig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Rig]:
    wall = WallClock(T0)
    monkeypatch.setattr(ops.live, "time", wall)
    config = loads_config(CONFIG, base_dir=tmp_path)
    sensor = States()
    clock = LiveClock(asyncio.get_running_loop())
    engine = Engine(clock, portfolio_specs(config), sensor=sensor, stale_ns=STALE_SECS * SEC)
    holder: list[Rig] = []
    driver = LiveDriver(engine, clock, lambda i, c: holder[0].dispatch(i, c))
    r = Rig(wall, clock, engine, driver, sensor)
    holder.append(r)
    yield r
    clock.close()


def assert_time_only_moves_forward(r: Rig) -> None:
    assert all(b >= a for a, b in itertools.pairwise(r.engine_times)), "engine time went backwards"
    assert all(b > a for a, b in itertools.pairwise(r.sensor.applied)), "two ticks applied at one instant or backwards"


def assert_windows_hold(r: Rig) -> None:
    ids = [i.id for i in r.intents]
    assert len(ids) == len(set(ids)), "an intent was decided twice"
    assert all(b.ts_ns - a.ts_ns >= WINDOW_SECS * SEC for a, b in itertools.pairwise(r.intents))


@pytest.mark.asyncio
async def test_a_forward_jump_fires_each_due_timer_once_and_decides_one_intent(rig: Rig) -> None:
    rig.ticks()
    [start] = rig.intents
    rig.ticks(5, step_secs=1.0)
    assert len(rig.intents) == 1 and rig.sensor.states["cooldown"] == 1
    rig.wall.ns += HOUR  # 60 windows pass at once
    rig.ticks()
    assert rig.clock.now_ns() == rig.wall.ns + 1  # the second symbol's tick, a nanosecond after the first
    assert rig.sensor.states["idle"] == 1, "the window end fired once, not once per missed window"
    assert len(rig.intents) == 1, "the window closed on stale prices: nothing decided until both ticked"
    assert rig.sensor.states["armed"] == 1
    intent = await rig.next_intent()  # the debounce timer, woken by the event loop
    assert intent.ts_ns == rig.wall.ns + 1 + int(DEBOUNCE_SECS * SEC)
    assert intent.ts_ns - start.ts_ns > HOUR
    rig.wall.ns = intent.ts_ns + SEC
    rig.ticks(3, step_secs=1.0)
    assert len(rig.intents) == 2 and rig.sensor.states["cooldown"] == 2 and rig.sensor.states["idle"] == 1
    assert_time_only_moves_forward(rig)
    assert_windows_hold(rig)


@pytest.mark.asyncio
async def test_a_backward_jump_never_moves_engine_time_back_nor_shortens_the_window(rig: Rig) -> None:
    rig.ticks()
    [start] = rig.intents
    before = rig.clock.now_ns()
    rig.wall.ns -= HOUR
    rig.ticks(20, step_secs=1.0)  # stamped an hour in the past: applied a nanosecond apart, time stands still
    assert rig.clock.now_ns() == before + 40
    assert rig.sensor.applied[-1] == before + 40
    assert len(rig.intents) == 1
    rig.wall.ns = start.ts_ns + (WINDOW_SECS - 1) * SEC  # back to normal, still inside the window
    rig.ticks(1)
    assert len(rig.intents) == 1 and rig.sensor.states["idle"] == 0
    rig.ticks(1, step_secs=1.0)  # the window closes on a tick, then the breach arms
    assert rig.sensor.states["idle"] == 1 and rig.sensor.states["armed"] == 1
    intent = await rig.next_intent()
    assert intent.ts_ns - start.ts_ns >= WINDOW_SECS * SEC
    assert_time_only_moves_forward(rig)
    assert_windows_hold(rig)
