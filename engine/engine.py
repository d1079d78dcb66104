"""The engine: ticks in, intents out. Synchronous, deterministic, driven by an injected clock.

Replay is `clock.advance_to(ts); engine.on_ticks(group)`; live calls the same `on_ticks`. Ticks
that share a timestamp are applied together and evaluated once. Intents raised by timers (the
debounce deadline, the end of the post-rebalance window, a calendar boundary) wait in the outbox
until `take_intents()`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from functools import partial

from engine.book import PriceBook
from engine.clock import Clock, TimerHandle
from engine.execution import fill_deltas, intent_id
from engine.planner import plan_rebalance
from engine.portfolio import Portfolio, drift_of
from engine.sensor import NULL_SENSOR, Sensor
from engine.spec import PortfolioSpec
from engine.trigger import Action, Trigger, TriggerState
from engine.types import Fill, Intent, PortfolioSnapshot, Reason, Tick, new_intent, split_symbol

log = logging.getLogger(__name__)


class PortfolioRuntime:
    """A portfolio with its trigger, timers and running totals."""

    __slots__ = (
        "calendar_timer", "coin_of_symbol", "debounce_timer", "fees_paid", "hodl", "inflight", "intents",
        "last_intent_ns", "order", "paused", "portfolio", "rebalances", "spec", "started", "trigger", "turnover", "window_timer",
    )

    def __init__(self, spec: PortfolioSpec, book: PriceBook, order: int = 0) -> None:
        self.spec = spec
        self.order = order
        index = {s: book.index(s) for s in spec.symbols}
        self.portfolio = Portfolio(spec.name, spec.quote, spec.targets, spec.thresholds, index, book.mid)
        self.coin_of_symbol = {book.index(s): k for k, s in enumerate(spec.symbols)}
        self.trigger = Trigger(spec.debounce_ns, spec.window_ns)
        self.paused = False
        self.started = False
        self.inflight: str | None = None
        self.hodl: dict[str, Decimal] = {}
        self.intents = 0
        self.rebalances = 0
        self.fees_paid = Decimal(0)
        self.turnover = Decimal(0)
        self.last_intent_ns = -1
        self.debounce_timer: TimerHandle | None = None
        self.window_timer: TimerHandle | None = None
        self.calendar_timer: TimerHandle | None = None


class Engine:
    """Price book, portfolios and triggers; `on_ticks` returns the intents they decide."""

    def __init__(
        self,
        clock: Clock,
        specs: Sequence[PortfolioSpec],
        *,
        sensor: Sensor = NULL_SENSOR,
        outlier_fraction: float = 0.0,
        stale_ns: int = 0,
        extra_symbols: Iterable[str] = (),
        on_quiet_check: Callable[[str, Reason, int], None] | None = None,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"portfolio names must be unique: {names}")
        symbols: dict[str, None] = {}
        for spec in specs:
            for s in spec.symbols:
                symbols.setdefault(s, None)
        for s in extra_symbols:
            split_symbol(s)
            symbols.setdefault(s, None)
        self.clock = clock
        self.sensor = sensor
        self.on_quiet_check = on_quiet_check  # (portfolio, reason, ts_ns) of each check that found nothing to trade
        self.stale_ns = stale_ns
        self.book = PriceBook(list(symbols), outlier_fraction=outlier_fraction, sensor=sensor)
        self.runtimes: dict[str, PortfolioRuntime] = {}
        self.by_symbol: list[list[PortfolioRuntime]] = [[] for _ in self.book.symbols]
        self._outbox: list[Intent] = []
        for n, spec in enumerate(specs):
            rt = PortfolioRuntime(spec, self.book, n)
            self.runtimes[spec.name] = rt
            for s in spec.symbols:
                self.by_symbol[self.book.index(s)].append(rt)
            if spec.start == "holdings":
                for asset, qty in spec.holdings.items():
                    rt.portfolio.set_holding(asset, qty)
                rt.hodl = dict(rt.portfolio.holdings)
                rt.started = True
            else:
                rt.portfolio.set_holding(spec.quote, spec.capital)
            if spec.schedule is not None:
                self._schedule_calendar(rt, clock.now_ns())
            if spec.target_policy is not None and spec.recompute_ns > 0:
                clock.call_at(clock.now_ns() + spec.recompute_ns, partial(self._on_recompute, rt))

    # ticks ----------------------------------------------------------------------------------------

    def on_tick(self, tick: Tick) -> list[Intent]:
        """Apply one tick (a group of one) and return the intents decided (the live hot path)."""
        i = self.book.apply(tick)
        if i >= 0:
            mid = self.book.mid[i]
            now = -1
            for rt in self.by_symbol[i]:
                k = rt.coin_of_symbol[i]
                p = rt.portfolio
                p.on_price(k, mid)
                if rt.started:
                    state = rt.trigger.state
                    if state is TriggerState.COOLDOWN or (  # nothing to check inside the window
                            state is TriggerState.IDLE and p.box_lo[k] <= mid <= p.box_hi[k]):
                        continue
                if now < 0:
                    now = self.clock.now_ns()
                self.evaluate(rt, now)
        if not self._outbox:
            return []
        return self.take_intents()

    def on_ticks(self, ticks: Sequence[Tick]) -> list[Intent]:
        """Apply ticks that share a timestamp, evaluate once, return the intents decided."""
        changed = []
        for tick in ticks:
            i = self.book.apply(tick)
            if i >= 0:
                changed.append(i)
        if changed:
            self._evaluate_symbols(changed)
        return self.take_intents()

    def take_intents(self) -> list[Intent]:
        """Intents decided since the last call (including those raised by timers)."""
        out, self._outbox = self._outbox, []
        return out

    def _evaluate_symbols(self, changed: Iterable[int]) -> None:
        touched: dict[str, tuple[PortfolioRuntime, list[int]]] = {}
        mids = self.book.mid
        for i in changed:
            for rt in self.by_symbol[i]:
                k = rt.coin_of_symbol[i]
                rt.portfolio.on_price(k, mids[i])
                entry = touched.get(rt.spec.name)
                if entry is None:
                    touched[rt.spec.name] = (rt, [k])
                else:
                    entry[1].append(k)
        now = self.clock.now_ns()
        entries = list(touched.values())
        if len(entries) > 1:
            entries.sort(key=lambda e: e[0].order)
        for rt, coins in entries:
            p = rt.portfolio
            if rt.started and rt.trigger.state is TriggerState.IDLE:
                if all(p.inside_box(k, mids[p.sym[k]]) for k in coins):
                    continue
            self.evaluate(rt, now)

    def evaluate(self, rt: PortfolioRuntime, now_ns: int) -> None:
        """The full check of one portfolio at a group end (the columnar replay calls it too)."""
        spec = rt.spec
        if not rt.started:
            if rt.portfolio.priced() and not self._stale(rt, now_ns):
                if spec.target_policy is not None and spec.thresholds_for is not None:
                    self._recompute_targets(rt)
                self._fire(rt, Reason.START, now_ns)
            return
        if rt.paused or not spec.threshold_active or rt.trigger.state is TriggerState.COOLDOWN:
            return
        if rt.inflight is not None or not rt.portfolio.priced():
            return
        breached = self.breached(rt, now_ns)
        action = rt.trigger.on_check(now_ns, breached)
        if action is Action.NONE:
            if not breached and rt.trigger.state is TriggerState.IDLE:
                rt.portfolio.compute_box()
        elif action is Action.FIRE:
            self._fire(rt, Reason.THRESHOLD, now_ns)
        elif action is Action.ARM:
            since = rt.trigger.since_ns
            log.info("%s: armed (drift %.4f)", spec.name, rt.portfolio.drift(spec.relative_drift))
            self.sensor.on_trigger_state(spec.name, "armed")
            rt.debounce_timer = self.clock.call_at(
                rt.trigger.deadline_ns, partial(self._on_debounce, rt, since=since))
        elif action is Action.HEALED:
            log.info("%s: healed inside the debounce", spec.name)
            self.sensor.on_trigger_state(spec.name, "idle")
            if rt.debounce_timer is not None:
                rt.debounce_timer.cancel()
                rt.debounce_timer = None
            rt.portfolio.compute_box()

    def breached(self, rt: PortfolioRuntime, now_ns: int) -> bool:
        """The band check, false while any of the portfolio's prices is stale."""
        return rt.portfolio.breached() and not self._stale(rt, now_ns)

    def _stale(self, rt: PortfolioRuntime, now_ns: int) -> bool:
        if self.stale_ns <= 0:
            return False
        limit, last = now_ns - self.stale_ns, self.book.last_ts
        return any(last[s] < limit for s in rt.portfolio.sym if s >= 0)

    # timers -----------------------------------------------------------------------------------------

    def _on_debounce(self, rt: PortfolioRuntime, ts: int, *, since: int) -> None:
        rt.debounce_timer = None
        if rt.paused:
            return
        action = rt.trigger.on_debounce_timer(ts, self.breached(rt, ts), since)
        if action is Action.FIRE:
            self._fire(rt, Reason.THRESHOLD, ts)
        elif action is Action.HEALED:
            self.sensor.on_trigger_state(rt.spec.name, "idle")
            rt.portfolio.compute_box()

    def _on_window_end(self, rt: PortfolioRuntime, ts: int) -> None:
        rt.window_timer = None
        if rt.trigger.on_window_end(ts):
            log.info("%s: post-rebalance window closed", rt.spec.name)
            self.sensor.on_trigger_state(rt.spec.name, "idle")
            rt.portfolio.compute_box()
            if rt.spec.window_ns > 0:
                self.evaluate(rt, ts)

    def _schedule_calendar(self, rt: PortfolioRuntime, now_ns: int) -> None:
        assert rt.spec.schedule is not None
        nxt = rt.spec.schedule(now_ns)
        rt.calendar_timer = self.clock.call_at(nxt, partial(self._on_boundary, rt))

    def _on_boundary(self, rt: PortfolioRuntime, ts: int) -> None:
        self._schedule_calendar(rt, ts)
        if not rt.started or rt.paused or rt.inflight is not None or rt.trigger.in_window(ts):
            return
        if not rt.portfolio.priced() or self._stale(rt, ts):
            return
        drift = max((abs(d) for d in rt.portfolio.deviations().values()), default=0.0)
        if drift >= rt.spec.min_deviation:
            self._fire(rt, Reason.CALENDAR, ts)

    def _on_recompute(self, rt: PortfolioRuntime, ts: int) -> None:
        spec = rt.spec
        assert spec.target_policy is not None and spec.thresholds_for is not None
        self.clock.call_at(ts + spec.recompute_ns, partial(self._on_recompute, rt))
        if rt.portfolio.priced():
            self._recompute_targets(rt)

    def _recompute_targets(self, rt: PortfolioRuntime) -> None:
        spec = rt.spec
        assert spec.target_policy is not None and spec.thresholds_for is not None
        prices = {c: self.book.mid[self.book.index(f"{c}-{spec.quote}")] for c in spec.targets if c != spec.quote}
        targets = spec.target_policy(prices)
        rt.portfolio.set_targets(targets, spec.thresholds_for(targets))
        log.info("%s: targets recomputed: %s", spec.name, targets)

    # intents ----------------------------------------------------------------------------------------

    def request_rebalance(self, name: str, reason: Reason = Reason.MANUAL, *, withdraw: Decimal | None = None
                          ) -> Intent | None:
        """Rebalance now (manual, deposit, withdraw, terminate), whatever the trigger's state; the intent, or
        None when there is nothing to trade or the portfolio cannot trade now (not started, unpriced, busy)."""
        rt = self.runtimes[name]
        if not rt.started or not rt.portfolio.priced() or rt.inflight is not None:
            return None
        return self._fire(rt, reason, self.clock.now_ns(), withdraw=withdraw)

    def busy(self, name: str) -> str | None:
        """Why the portfolio cannot take a command now, or None."""
        rt = self.runtimes[name]
        if not rt.started:
            return "not started yet (waiting for prices)"
        if not rt.portfolio.priced():
            return "no price yet for every coin"
        if rt.inflight is not None:
            return f"intent {rt.inflight} is still executing"
        return None

    def _fire(self, rt: PortfolioRuntime, reason: Reason, now_ns: int, *, withdraw: Decimal | None = None
              ) -> Intent | None:
        spec = rt.spec
        p = rt.portfolio
        book = self.book
        mids = book.mid
        prices = {c: mids[s] for c, s in zip(p.assets, p.sym, strict=True) if s >= 0}
        weights = dict(zip(p.assets, p.canonical_weights(), strict=True))
        targets = {p.assets[k]: p.targets[k] for k in p.members}
        desired = None
        if spec.rebalance_to is not None and reason in (Reason.THRESHOLD, Reason.CALENDAR):
            thresholds = {p.assets[k]: p.thresholds[k] for k in p.members}
            desired = spec.rebalance_to({a: weights[a] for a in targets}, targets, thresholds)
        if reason is Reason.TERMINATE:
            desired = {spec.quote: 1.0}
        elif reason is Reason.WITHDRAW and withdraw is not None:
            value = p.value()
            f = min(1.0, float(withdraw) / value) if value > 0 else 0.0
            desired = {a: w * (1.0 - f) for a, w in weights.items() if a != spec.quote}
            desired[spec.quote] = 1.0 - sum(desired.values())
        plan = plan_rebalance(p.holdings, prices, targets, spec.quote, desired=desired, rules=spec.rules,
                              fee_rate=spec.fee_rate, sells=reason is not Reason.DEPOSIT)
        if rt.debounce_timer is not None:
            rt.debounce_timer.cancel()
            rt.debounce_timer = None
        rt.trigger.fired(now_ns)
        if rt.window_timer is not None:
            rt.window_timer.cancel()
        rt.window_timer = self.clock.call_at(rt.trigger.until_ns, partial(self._on_window_end, rt))
        self.sensor.on_trigger_state(spec.name, "cooldown")
        if reason is Reason.START:
            rt.started = True
        if not plan.legs:
            log.info("%s: %s check found nothing to trade", spec.name, reason.value)
            if reason is Reason.START:
                rt.hodl = dict(p.holdings)
            if self.on_quiet_check is not None:  # its window must outlive a restart too
                self.on_quiet_check(spec.name, reason, now_ns)
            return None
        rt.intents += 1
        drift = drift_of(weights, targets, spec.relative_drift)
        intent: Intent = new_intent(  # Intent(...) with every field, in order, minus the per-field setattr
            intent_id(spec.name, rt.intents, now_ns),  # id
            spec.name,  # portfolio
            now_ns,  # ts_ns
            reason,
            drift,
            {f"{c}-{spec.quote}": px for c, px in prices.items()},  # prices
            weights,
            plan.legs,
            plan.residual_drift,  # expected_residual_drift
            spec.mode == "observe",  # observe
            plan.quote_reserve,
        )
        rt.last_intent_ns = now_ns
        if not intent.observe:
            rt.inflight = intent.id
        log.info("%s: intent %s (%s, drift %.4f, %d legs)", spec.name, intent.id, reason.value, drift, len(plan.legs))
        self._outbox.append(intent)
        return intent

    # fills, transfers, lifecycle --------------------------------------------------------------------

    def apply_fill(self, name: str, fill: Fill) -> None:
        """Apply a committed fill to holdings (call once per new fill)."""
        rt = self.runtimes[name]
        p = rt.portfolio
        for asset, delta in fill_deltas(fill, p.quote).items():
            p.add_holding(asset, delta)
        fee_quote = fill.fee if fill.fee_asset == p.quote else fill.fee * fill.price
        rt.fees_paid += fee_quote
        rt.turnover += fill.quantity * fill.price

    def intent_done(self, name: str, intent: Intent) -> None:
        """An intent finished executing: the start buy-in fixes the HODL basket."""
        rt = self.runtimes[name]
        if rt.inflight == intent.id:
            rt.inflight = None
        if intent.reason is Reason.START:
            rt.hodl = dict(rt.portfolio.holdings)
        elif intent.reason in (Reason.THRESHOLD, Reason.CALENDAR, Reason.MANUAL):
            rt.rebalances += 1
        rt.portfolio.compute_box()

    def transfer(self, name: str, asset: str, amount: Decimal) -> None:
        """A deposit (positive) or withdrawal (negative) of an asset."""
        rt = self.runtimes[name]
        rt.portfolio.add_holding(asset, amount)
        if rt.hodl:
            rt.hodl[asset] = rt.hodl.get(asset, Decimal(0)) + amount

    def restore(self, name: str, holdings: dict[str, Decimal], hodl: dict[str, Decimal] | None, *, started: bool,
                intents: int, last_intent_ns: int | None, last_quiet_check_ns: int | None = None) -> None:
        """Start-up from the ledger: holdings, HODL basket, intent count and the window still running (from the
        later of the last intent and the last check that found nothing to trade)."""
        rt = self.runtimes[name]
        p = rt.portfolio
        for asset in p.assets:
            p.set_holding(asset, holdings.get(asset, Decimal(0)))
        rt.started = started
        rt.hodl = dict(hodl) if hodl else (dict(p.holdings) if started else {})
        rt.intents = intents
        rt.last_intent_ns = max(rt.last_intent_ns, -1 if last_intent_ns is None else last_intent_ns)
        since = max(rt.last_intent_ns, -1 if last_quiet_check_ns is None else last_quiet_check_ns)
        if since >= 0 and since + rt.spec.window_ns > self.clock.now_ns():
            rt.trigger.fired(since)
            rt.window_timer = self.clock.call_at(since + rt.spec.window_ns, partial(self._on_window_end, rt))

    def pause(self, name: str) -> None:
        """Stop the trigger firing; drift keeps being computed."""
        rt = self.runtimes[name]
        rt.paused = True
        self.sensor.on_trigger_state(name, "paused")

    def resume(self, name: str) -> None:
        """Let the trigger fire again, re-checking at once."""
        rt = self.runtimes[name]
        rt.paused = False
        self.sensor.on_trigger_state(name, rt.trigger.state.value)
        if rt.trigger.state is TriggerState.ARMED:
            rt.trigger.state = TriggerState.IDLE
        rt.portfolio.compute_box()
        self.evaluate(rt, self.clock.now_ns())

    def snapshot(self, name: str) -> PortfolioSnapshot:
        """A read-only view of one portfolio now."""
        rt = self.runtimes[name]
        p = rt.portfolio
        now = self.clock.now_ns()
        value = p.value()
        members = [p.assets[k] for k in p.members]
        weights = dict(zip(p.assets, p.canonical_weights(), strict=True))
        return PortfolioSnapshot(
            name=name,
            mode=rt.spec.mode,
            quote=p.quote,
            value=value,
            hodl_value=self.hodl_value(name),
            weights={a: weights[a] for a in members},
            targets={p.assets[k]: p.targets[k] for k in p.members},
            deviations=p.deviations(),
            thresholds={p.assets[k]: p.thresholds[k] for k in p.members},
            holdings=dict(p.holdings),
            drift=p.drift(rt.spec.relative_drift),
            trigger_state="paused" if rt.paused else rt.trigger.state.value,
            window_remaining_secs=rt.trigger.remaining_secs(now),
            paused=rt.paused,
            stale=self._stale(rt, now),
            floor_value=rt.spec.floor_value,
        )

    def hodl_value(self, name: str) -> float:
        """The value of simply holding the starting basket, at current prices."""
        rt = self.runtimes[name]
        if not rt.hodl:
            return rt.portfolio.value()
        total = 0.0
        for asset, qty in rt.hodl.items():
            if asset == rt.spec.quote:
                total += float(qty)
            else:
                total += float(qty) * self.book.mid[self.book.index(f"{asset}-{rt.spec.quote}")]
        return total
