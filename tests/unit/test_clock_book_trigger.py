"""The replay clock, the price book and the trigger state machine on their own."""
from __future__ import annotations

import math

import pytest

from engine.book import PriceBook
from engine.clock import ReplayClock, TimeWentBackwards
from engine.trigger import Action, Trigger, TriggerState
from engine.types import Tick


def test_timers_fire_in_time_order_then_insertion_order():
    clock = ReplayClock(0)
    fired = []
    clock.call_at(20, lambda ts: fired.append(("b", ts, clock.now_ns())))
    clock.call_at(10, lambda ts: fired.append(("a", ts, clock.now_ns())))
    clock.call_at(20, lambda ts: fired.append(("c", ts, clock.now_ns())))
    clock.advance_to(25)
    assert fired == [("a", 10, 10), ("b", 20, 20), ("c", 20, 20)]
    assert clock.now_ns() == 25


def test_a_timer_scheduled_by_a_timer_fires_in_the_same_advance_when_due():
    clock = ReplayClock(0)
    fired = []
    clock.call_at(5, lambda ts: clock.call_at(7, lambda t: fired.append(t)))
    clock.advance_to(10)
    assert fired == [7]


def test_cancelled_timers_do_not_fire_and_the_clock_refuses_to_go_back():
    clock = ReplayClock(100)
    fired = []
    h = clock.call_at(150, fired.append)
    h.cancel()
    clock.advance_to(200)
    assert fired == []
    assert clock.next_deadline() is None
    with pytest.raises(TimeWentBackwards):
        clock.advance_to(199)


def tick(sym, bid, ask, ts):
    return Tick(sym, bid, ask, ts, ts)


def test_book_rejects_bad_ticks_and_counts_them():
    book = PriceBook(["BTC-USDT"])
    assert book.apply(tick("ETH-USDT", 1, 1, 1)) == -1
    assert book.apply(tick("BTC-USDT", math.nan, 1, 1)) == -1
    assert book.apply(tick("BTC-USDT", math.inf, math.inf, 1)) == -1
    assert book.apply(tick("BTC-USDT", 0.0, 1, 1)) == -1
    assert book.apply(tick("BTC-USDT", -1, 1, 1)) == -1
    assert book.apply(tick("BTC-USDT", 2, 1, 1)) == -1
    assert book.apply(tick("BTC-USDT", 100, 101, 10)) == 0
    assert book.apply(tick("BTC-USDT", 100, 101, 9)) == -1
    assert book.rejected == {"unknown_symbol": 1, "nan": 2, "non_positive": 2, "crossed": 1, "backwards": 1}
    assert book.mid[0] == 100.5


def test_outlier_is_held_until_a_second_tick_confirms_it():
    book = PriceBook(["BTC-USDT"], outlier_fraction=0.1)
    book.apply(tick("BTC-USDT", 100, 100, 1))
    assert book.apply(tick("BTC-USDT", 200, 200, 2)) == -1  # held
    assert book.mid[0] == 100
    assert book.apply(tick("BTC-USDT", 101, 101, 3)) == 0  # back to normal: the spike was an outlier
    assert book.rejected == {"outlier": 1}
    assert book.apply(tick("BTC-USDT", 150, 150, 4)) == -1  # held
    assert book.apply(tick("BTC-USDT", 152, 152, 5)) == 0  # confirmed: the move is real
    assert book.mid[0] == 152
    assert book.rejected == {"outlier": 1}


def test_trigger_fires_at_once_without_debounce_and_then_cools_down():
    t = Trigger(debounce_ns=0, window_ns=300)
    assert t.on_check(10, False) is Action.NONE
    assert t.on_check(11, True) is Action.FIRE
    t.fired(11)
    assert t.state is TriggerState.COOLDOWN and t.until_ns == 311
    assert t.on_check(12, True) is Action.NONE
    assert t.remaining_secs(111) == pytest.approx(200e-9)
    assert t.on_window_end(311)
    assert t.state is TriggerState.IDLE


def test_a_breach_that_heals_inside_the_debounce_never_fires():
    t = Trigger(debounce_ns=60, window_ns=300)
    assert t.on_check(100, True) is Action.ARM
    assert t.deadline_ns == 160
    assert t.on_check(130, False) is Action.HEALED
    assert t.on_debounce_timer(160, True, since=100) is Action.NONE
    assert t.state is TriggerState.IDLE


def test_a_breach_that_persists_through_the_debounce_fires_on_the_timer():
    t = Trigger(debounce_ns=60, window_ns=300)
    assert t.on_check(100, True) is Action.ARM
    assert t.on_check(130, True) is Action.NONE
    assert t.on_debounce_timer(160, True, since=100) is Action.FIRE


def test_negative_durations_are_refused():
    with pytest.raises(ValueError):
        Trigger(-1, 0)
