"""The live terminal view rendered to text: coins, bars against targets, the window countdown, vs HODL, stale feeds."""
from __future__ import annotations

import asyncio
import io
import re
from decimal import Decimal

import pytest
from rich.console import Console

from engine.types import PortfolioSnapshot, Reason
from feeds.health import SymbolHealth
from ops.tui import DemoView, ViewState, band_style, countdown, gauge, weight_bar
from tests.builders import SEC, T0, make_engine, make_spec, make_tick

METRICS = "http://127.0.0.1:9108/metrics"
LEDGER = "var/keel.sqlite"


def feed(engine, clock, executor, ts, *ticks):
    clock.advance_to(ts)
    executor.execute(engine.take_intents())
    executor.execute(engine.on_ticks(list(ticks)))


def live_state() -> ViewState:
    """A real engine: a start, a threshold rebalance at T0+400 s (5-minute window), then 30 s later."""
    core = make_spec({"BTC": 0.4, "ETH": 0.3, "SOL": 0.1, "USDT": 0.2}, name="core", threshold=0.03,
                     fee_rate="0.001", window_ns=300 * SEC)
    majors = make_spec({"BTC": 0.5, "ETH": 0.5}, name="majors", threshold=0.05)
    engine, clock, sink, ex = make_engine(core, majors)
    feed(engine, clock, ex, T0, make_tick("BTC-USDT", 43_000, T0), make_tick("ETH-USDT", 2_300, T0),
         make_tick("SOL-USDT", 100, T0))
    feed(engine, clock, ex, T0 + 400 * SEC, make_tick("SOL-USDT", 160, T0 + 400 * SEC))
    feed(engine, clock, ex, T0 + 430 * SEC, make_tick("BTC-USDT", 44_000, T0 + 430 * SEC))
    assert [i.reason for i in sink.intents if i.portfolio == "core"] == [Reason.START, Reason.THRESHOLD]
    now = clock.now_ns()
    health = {
        "BTC-USDT": SymbolHealth("BTC-USDT", now, 0.2, False, 100, 18.3),
        "ETH-USDT": SymbolHealth("ETH-USDT", now - 400 * SEC, 0.4, False, 100, 17.9),
        "SOL-USDT": SymbolHealth("SOL-USDT", now - 12 * SEC, 12.4, True, 100, 0.0),
    }
    return ViewState(
        now_ns=now, portfolios=[engine.snapshot("core"), engine.snapshot("majors")], feed=health,
        recent_intents=sink.intents[-8:], recent_fills=sink.fills[-8:],
        rebalances={n: rt.rebalances for n, rt in engine.runtimes.items()},
        fees={n: rt.fees_paid for n, rt in engine.runtimes.items()}, events=["feed reconnected (sim)"], speed=60.0,
    )


def render(state: ViewState, width: int = 100, height: int = 30, styles: bool = False) -> str:
    console = Console(record=True, width=width, height=height, file=io.StringIO(), force_terminal=styles,
                      color_system="standard" if styles else None)
    console.print(DemoView("keel demo", METRICS, LEDGER, console=console).render(state))
    return console.export_text(styles=styles)


def test_the_frame_fits_100x30_and_shows_what_a_rebalancing_bot_user_looks_for():
    state = live_state()
    text = render(state)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) <= 30 and max(len(line) for line in lines) <= 100
    for coin in ("BTC", "ETH", "SOL", "USDT"):
        assert re.search(rf"^│ {coin} +█+[▏▎▍▌▋▊▉]?[ ·]*\|", text, re.M), coin  # bar, then the target tick
    core = state.portfolios[0]
    assert core.trigger_state == "cooldown" and core.window_remaining_secs == pytest.approx(270)
    assert "window 04:30 left" in text
    premium = core.value / core.hodl_value - 1
    assert f"vs HODL {premium:+.2%}" in text
    assert "rebalances 1" in text and f"fees {state.fees['core']:,.2f}" in text
    assert "STALE SOL-USDT" in text and "SOL-USDT STALE 12s" in text
    assert "speed 60x" in text and "feed reconnected (sim)" in text
    assert f"metrics {METRICS} · ledger {LEDGER} · Ctrl-C to stop" in text
    assert re.search(r"core +threshold +\d+\.\d% sell", text)  # the last intent, newest first
    assert re.search(r"core +(BUY|SELL) +(BTC|ETH|SOL) [\d.]+ @", text)


def test_colours_premium_green_or_red_and_deviation_against_the_band():
    text = render(live_state(), styles=True)
    assert re.search(r"\x1b\[1;32m\+\d\.\d\d% \(\+", text) or re.search(r"\x1b\[1;31m-\d\.\d\d% \(-", text)
    assert band_style(1.0) == "bold red" and band_style(0.6) == "yellow" and band_style(0.1) == "green"


def test_a_rebalance_followed_by_a_further_fall_shows_a_red_premium_and_a_red_deviation():
    spec = make_spec({"BTC": 0.5, "ETH": 0.5}, name="p", threshold=0.05, window_ns=300 * SEC)
    engine, clock, _, ex = make_engine(spec)
    feed(engine, clock, ex, T0, make_tick("BTC-USDT", 100, T0), make_tick("ETH-USDT", 100, T0))
    feed(engine, clock, ex, T0 + 400 * SEC, make_tick("BTC-USDT", 80, T0 + 400 * SEC))  # rebalance: buys BTC
    feed(engine, clock, ex, T0 + 410 * SEC, make_tick("BTC-USDT", 40, T0 + 410 * SEC))  # and BTC halves again
    snap = engine.snapshot("p")
    assert snap.value < snap.hodl_value
    text = render(ViewState(now_ns=T0 + 410 * SEC, portfolios=[snap]), styles=True)
    premium = snap.value / snap.hodl_value - 1
    assert f"\x1b[1;31m{premium:+.2%} (" in text
    assert re.search(r"\x1b\[1;31m-\d+\.\dpp", text)  # BTC is beyond its band: its deviation is red
    assert "04:50" in text


def snap(**kw: object) -> PortfolioSnapshot:
    base: dict[str, object] = dict(
        name="p", mode="threshold", quote="USDT", value=1000.0, hodl_value=1000.0, weights={"BTC": 0.5, "ETH": 0.5},
        targets={"BTC": 0.5, "ETH": 0.5}, deviations={"BTC": 0.0, "ETH": 0.0}, thresholds={"BTC": 0.05, "ETH": 0.05},
        holdings={"BTC": Decimal(5), "ETH": Decimal(5)}, drift=0.0, trigger_state="idle", window_remaining_secs=0.0,
        paused=False, stale=False)
    base.update(kw)
    return PortfolioSnapshot(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "label"), [
    ({}, "watching"),
    ({"trigger_state": "armed", "weights": {"BTC": 0.56, "ETH": 0.44}, "deviations": {"BTC": 0.06, "ETH": -0.06}},
     "ARMED: breach held, debouncing"),
    ({"weights": {"BTC": 0.56, "ETH": 0.44}, "deviations": {"BTC": 0.06, "ETH": -0.06}}, "due"),
    ({"trigger_state": "paused", "paused": True}, "PAUSED"),
    ({"stale": True}, "STALE prices: trigger held"),
    ({"mode": "observe"}, "OBSERVE watching"),
    ({"weights": {"BTC": 0.53, "ETH": 0.47}, "deviations": {"BTC": 0.03, "ETH": -0.03}},
     "60%  watching  worst BTC +3.0pp of ±5.0"),
    ({"trigger_state": "cooldown", "window_remaining_secs": 3725.0}, "window 1:02:05 left"),
    ({"value": 800.0, "floor_value": 900.0}, "BELOW FLOOR 900.00"),
    ({"value": float("nan")}, "waiting for prices"),
])
def test_trigger_and_value_states_are_spelled_out(kw: dict[str, object], label: str):
    text = render(ViewState(now_ns=T0, portfolios=[snap(**kw)]))
    assert label in text


def test_narrow_and_short_terminals_keep_coins_countdown_and_stale_marks():
    state = live_state()
    for width, height in ((60, 20), (40, 15)):
        text = render(state, width, height)
        lines = text.rstrip("\n").split("\n")
        assert len(lines) <= height and max(len(line) for line in lines) <= width, (width, height)
        for coin in ("BTC", "ETH", "SOL", "USDT"):
            assert re.search(rf"^{coin} ", text, re.M), (coin, width)
        assert "window 04:30 left" in text and "STALE SOL-USDT" in text
        core = state.portfolios[0]
        assert f"vs HODL {core.value / core.hodl_value - 1:+.2%}" in text


def test_weight_bar_draws_the_weight_the_band_and_the_target_tick():
    assert weight_bar(0.275, 0.5, 0.05, 1.0, 20, "green").plain == "█████▌   ·|·        "
    assert weight_bar(0.5, 0.5, 0.05, 1.0, 20, "green").plain == "██████████|·        "
    over = weight_bar(0.7, 0.5, 0.05, 1.0, 20, "red")
    assert over.plain == "██████████|███      "
    [tick] = [span for span in over.spans if span.start == 10]
    assert "reverse" in str(tick.style)  # the target tick cut into the bar
    assert len(weight_bar(2.0, 0.5, 0.05, 1.0, 7, "red").plain) == 7
    assert gauge(0.5, 8).plain == "▕████░░░░▏" and gauge(3.0, 4).plain == "▕████▏"


def test_countdown_is_mm_ss_rounded_up():
    assert countdown(270) == "04:30" and countdown(0.2) == "00:01" and countdown(0) == "00:00"
    assert countdown(3725) == "1:02:05" and countdown(-5) == "00:00"


def test_an_engine_without_prices_yet_renders():
    engine, _, _, _ = make_engine(make_spec({"BTC": 0.5, "ETH": 0.5}, name="p"))
    text = render(ViewState(now_ns=T0, portfolios=[engine.snapshot("p")]))
    assert "BTC" in text and "Ctrl-C to stop" in text and "none yet" in text


@pytest.mark.asyncio
async def test_run_redraws_until_stopped_and_restores_the_cursor():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, height=30, color_system="standard")
    view = DemoView("keel demo", METRICS, LEDGER, console=console)
    state = live_state()
    stop = asyncio.Event()
    calls = 0

    def get_state() -> ViewState:
        nonlocal calls
        calls += 1
        if calls == 3:
            stop.set()
        return state

    await asyncio.wait_for(view.run(get_state, stop, refresh_hz=1000), 10)
    assert calls == 3
    written = out.getvalue()
    assert "window" in written and "04:30" in written
    assert written.rstrip().endswith("\x1b[?25h")  # the cursor is shown again


@pytest.mark.asyncio
async def test_run_draws_nothing_when_stdout_is_not_a_terminal_unless_forced():
    state = ViewState(now_ns=T0, portfolios=[], fees={"x": Decimal(0)})
    for force, expect_calls in ((False, 0), (True, 1)):
        out = io.StringIO()
        console = Console(file=out, width=100, height=30)
        view = DemoView("keel demo", None, LEDGER, console=console, force=force)
        stop = asyncio.Event()
        stop.set()
        calls: list[int] = []

        def get_state(calls: list[int] = calls) -> ViewState:
            calls.append(1)
            return state

        await asyncio.wait_for(view.run(get_state, stop), 10)
        assert len(calls) == expect_calls
        assert (out.getvalue() == "") is not force
        if force:
            assert "metrics off" in out.getvalue()
    with pytest.raises(ValueError, match="refresh_hz"):
        await view.run(lambda: state, stop, refresh_hz=0)
