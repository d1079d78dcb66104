"""Checks that find nothing to trade: the engine reports them (each starts a window), and a restore resumes
the window from the later of the last intent and the last such check."""
from __future__ import annotations

from decimal import Decimal

import pytest

from engine.spec import PortfolioSpec
from engine.trigger import TriggerState
from engine.types import Reason, SymbolRules
from tests.builders import SEC, T0, make_engine, make_spec, make_tick

WINDOW_NS = 300 * SEC
TINY = {"BTC-USDT": SymbolRules(min_notional=Decimal(1000)), "ETH-USDT": SymbolRules(min_notional=Decimal(1000))}


def held(btc: str, eth: str, *, rules: dict[str, SymbolRules] | None = None) -> PortfolioSpec:
    """A 50/50 basket adopted from holdings (started at once), bands of 5 points, a 300 s window."""
    return make_spec(start="holdings", holdings={"BTC": Decimal(btc), "ETH": Decimal(eth), "USDT": Decimal(0)},
                     window_ns=WINDOW_NS, rules=rules or {})


def test_a_start_with_nothing_to_buy_is_reported_and_starts_the_window() -> None:
    checks: list[tuple[str, Reason, int]] = []
    engine, _, sink, ex = make_engine(make_spec(capital=Decimal(10), window_ns=WINDOW_NS, rules=TINY),
                                          on_quiet_check=lambda *c: checks.append(c))
    ex.execute(engine.on_ticks([make_tick("BTC-USDT", 100, T0), make_tick("ETH-USDT", 100, T0)]))
    assert sink.intents == []  # every leg is under the minimum notional
    assert checks == [("core", Reason.START, T0)]
    rt = engine.runtimes["core"]
    assert rt.started and rt.trigger.state is TriggerState.COOLDOWN and rt.trigger.until_ns == T0 + WINDOW_NS


def test_a_threshold_check_with_nothing_to_trade_is_reported_an_intent_is_not() -> None:
    checks: list[tuple[str, Reason, int]] = []
    engine, clock, sink, ex = make_engine(held("1", "1", rules=TINY), on_quiet_check=lambda *c: checks.append(c))
    ex.execute(engine.on_ticks([make_tick("BTC-USDT", 100, T0), make_tick("ETH-USDT", 100, T0)]))
    clock.advance_to(T0 + SEC)
    ex.execute(engine.on_ticks([make_tick("BTC-USDT", 130, T0 + SEC)]))  # out of band; legs of ~15 USDT
    assert sink.intents == [] and checks == [("core", Reason.THRESHOLD, T0 + SEC)]

    checks.clear()  # the same basket without the minimum: a real rebalance, reported as an intent only
    engine, clock, sink, ex = make_engine(held("1", "1"), on_quiet_check=lambda *c: checks.append(c))
    ex.execute(engine.on_ticks([make_tick("BTC-USDT", 100, T0), make_tick("ETH-USDT", 100, T0)]))
    clock.advance_to(T0 + SEC)
    ex.execute(engine.on_ticks([make_tick("BTC-USDT", 130, T0 + SEC)]))
    assert [i.reason for i in sink.intents] == [Reason.THRESHOLD] and checks == []


@pytest.mark.parametrize(("last_intent_ns", "quiet_ns", "window_from"), [
    (None, T0 - 100 * SEC, T0 - 100 * SEC),  # only a quiet check
    (T0 - 250 * SEC, T0 - 100 * SEC, T0 - 100 * SEC),  # a quiet check after the last intent
    (T0 - 100 * SEC, T0 - 250 * SEC, T0 - 100 * SEC),  # the last intent after the quiet check
])
def test_restore_resumes_the_window_of_the_later_of_the_last_intent_and_quiet_check(
        last_intent_ns: int | None, quiet_ns: int, window_from: int) -> None:
    checks: list[tuple[str, Reason, int]] = []
    engine, clock, sink, ex = make_engine(held("1", "1"), on_quiet_check=lambda *c: checks.append(c))
    holdings = {"BTC": Decimal(1), "ETH": Decimal(1), "USDT": Decimal(0)}
    engine.restore("core", holdings, None, started=True, intents=1, last_intent_ns=last_intent_ns,
                   last_quiet_check_ns=quiet_ns)
    ex.execute(engine.on_ticks([make_tick("BTC-USDT", 130, T0), make_tick("ETH-USDT", 100, T0)]))  # out of band
    clock.advance_to(T0 + 10 * SEC)
    ex.execute(engine.on_ticks([make_tick("BTC-USDT", 131, T0 + 10 * SEC)]))
    assert sink.intents == [] and checks == []  # inside the window: no check at all
    assert engine.snapshot("core").trigger_state == "cooldown"
    end = window_from + WINDOW_NS
    clock.advance_to(end - 1)
    ex.execute(engine.take_intents())
    assert sink.intents == []
    clock.advance_to(end)  # the window closes with no tick: the re-check finds the breach
    ex.execute(engine.take_intents())
    [intent] = sink.intents
    assert intent.reason is Reason.THRESHOLD and intent.ts_ns == end


def test_restore_after_the_window_ended_checks_at_the_first_prices() -> None:
    engine, _, sink, ex = make_engine(held("1", "1"))
    engine.restore("core", {"BTC": Decimal(1), "ETH": Decimal(1), "USDT": Decimal(0)}, None, started=True,
                   intents=1, last_intent_ns=T0 - 400 * SEC, last_quiet_check_ns=T0 - WINDOW_NS)
    assert engine.runtimes["core"].trigger.state is TriggerState.IDLE
    ex.execute(engine.on_ticks([make_tick("BTC-USDT", 130, T0), make_tick("ETH-USDT", 100, T0)]))
    [intent] = sink.intents
    assert intent.reason is Reason.THRESHOLD and intent.ts_ns == T0
