"""`keel run`: engine, feed, execution actor, ledger, metrics and MQTT in one asyncio TaskGroup (start-up
steps in ops/service_start.py).

Start-up is recovery: open orders are reconciled with the venue, holdings are rebuilt from the
ledger, and only then do ticks reach the engine. A crashed task stops the service (non-zero exit);
SIGINT/SIGTERM park the intent in flight and close the ledger cleanly. A ledger that cannot write (disk
full, read-only) halts trading instead: no intent reaches the venue, /readyz says why, `keel_halted` is 1,
and the engine, feed and metrics keep running until an operator restarts keel.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.engine import Engine
from engine.paper import paper_fill
from engine.planner import DEFAULT_RULES
from engine.sensor import NULL_SENSOR, Sensor
from engine.types import Fill, Intent, PortfolioSnapshot, Reason, Tick
from ops.actor import ExecutionActor
from ops.actor_messages import ExecuteIntent, MailboxFull, Reconcile, Stop
from ops.config import Config
from ops.ledger import Ledger, LedgerError
from ops.live import LiveClock, LiveDriver
from ops.service_start import Halt, build_venue, record_start, restore
from ops.specs import portfolio_specs

__all__ = ["Halt", "Service", "install_signal_handlers", "run_service"]

log = logging.getLogger(__name__)
SEC = 1_000_000_000


class Service:
    """One keel process."""

    def __init__(self, config: Config, *, record: Path | None = None, sensor: Sensor | None = None,
                 state_dir: Path | None = None) -> None:
        self.config = config
        self.record_path = record
        self.state_dir = state_dir or Path(config.ledger.path).parent
        self.sensor = sensor if sensor is not None else NULL_SENSOR
        self.engine: Engine | None = None
        self.clock: LiveClock | None = None
        self.ledger: Ledger | None = None
        self.actor: ExecutionActor | None = None
        self.driver: LiveDriver | None = None
        self.health: Any = None
        self.recent_intents: deque[Intent] = deque(maxlen=8)
        self.recent_fills: deque[tuple[str, Fill]] = deque(maxlen=8)
        self.events: deque[str] = deque(maxlen=6)
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()
        self.halted: str | None = None
        self.intents_dropped = 0
        self.restored = False
        self.metrics_port: int | None = None
        self.mqtt_bridge: Any = None  # ops.mqtt.MqttBridge while MQTT is on (imported only then)
        self.recovery: Any = None
        self.quotes: dict[str, dict[str, tuple[float, float]]] = {}
        self.quiet_checks: dict[str, tuple[Reason, int]] = {}  # checks that found nothing to trade, not yet recorded
        self._quiet_checked = asyncio.Event()

    # state for views -----------------------------------------------------------------------------

    def snapshots(self) -> list[PortfolioSnapshot]:
        """Every portfolio now (metrics, MQTT, the terminal view)."""
        if self.engine is None:
            return []
        return [self.engine.snapshot(n) for n in self.engine.runtimes]

    def readiness(self) -> tuple[bool, str]:
        """/readyz: feeds fresh, ledger writable, not halted."""
        if self.check_halt():
            return False, f"halted: {self.halted}"
        if not self.ready.is_set():
            return False, "starting"
        if self.ledger is None or not self.ledger.healthy:
            return False, "ledger not writable"
        if self.health is not None:
            stale = [s for s, h in self.health.status().items() if h.stale]
            if stale:
                return False, f"stale feed: {', '.join(stale)}"
        return True, "ok"

    # start-up ------------------------------------------------------------------------------------

    async def _open_ledger(self) -> Ledger:
        path = Path(self.config.ledger.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return await Ledger.open(path, sensor=self.sensor, outbox=self.config.mqtt.enabled)

    # intents and fills ---------------------------------------------------------------------------

    def dispatch(self, intents: list[Intent], cause_ns: int) -> None:
        """Hand the engine's intents to the actor (observe-mode start-ins are filled virtually); none once halted."""
        assert self.actor is not None and self.engine is not None
        if self.check_halt():
            self._drop_while_halted(intents)
            return
        now = time.time_ns()
        book = self.engine.book
        for intent in intents:
            self.quotes[intent.id] = {s: (book.bid[book.index(s)], book.ask[book.index(s)]) for s in intent.prices}
            self.recent_intents.append(intent)
            self.sensor.on_intent(intent, max(0, now - cause_ns))
            if intent.observe and intent.reason is Reason.START:
                self._virtual_start(intent)
                continue
            self.actor.tell(ExecuteIntent(intent))

    def _virtual_start(self, intent: Intent) -> None:
        """Observe mode from quote: a shadow basket bought at the mid, no fee, nothing sent or recorded."""
        engine = self.engine
        assert engine is not None
        rt = engine.runtimes[intent.portfolio]
        from engine.execution import buy_orders

        for order in buy_orders(intent, rt.portfolio.holdings, rt.spec.quote, Decimal(0), rt.spec.rules):
            i = engine.book.index(order.symbol)
            fill = paper_fill(order, engine.book.mid[i], engine.book.mid[i], quote=rt.spec.quote, fee_rate=Decimal(0),
                              slippage_bps=Decimal(0), rules=rt.spec.rules.get(order.symbol, DEFAULT_RULES),
                              trade_id=f"virtual-{order.client_order_id}", ts_ns=intent.ts_ns)
            if fill is not None:
                engine.apply_fill(intent.portfolio, fill)
        engine.intent_done(intent.portfolio, intent)

    def on_quiet_check(self, portfolio: str, reason: Reason, ts_ns: int) -> None:
        """The engine checked and found nothing to trade: its window started, so the ledger must learn of it."""
        self.quiet_checks[portfolio] = (reason, ts_ns)
        self._quiet_checked.set()

    async def _record_quiet_checks(self) -> None:
        """Hand the quiet checks to the ledger as they come (each wake-up one request, in its group commit)."""
        while True:
            await self._quiet_checked.wait()
            self._quiet_checked.clear()
            await self._flush_quiet_checks()

    async def _flush_quiet_checks(self) -> None:
        checks, self.quiet_checks = self.quiet_checks, {}
        if not checks or self.ledger is None or not self.ledger.healthy:
            return
        try:
            await self.ledger.record_quiet_checks((name, reason, ts) for name, (reason, ts) in checks.items())
        except LedgerError as exc:  # the ledger cannot write: trading halts (a restart may re-check at once)
            log.error("quiet checks of %s not recorded: %s", ", ".join(checks), exc)
            self.check_halt()

    def check_halt(self) -> str | None:
        """Halt trading (once) when the actor halted or the ledger cannot write; the reason, or None."""
        if self.halted is None:
            if self.ledger is not None and not self.ledger.healthy:
                self._halt("ledger not writable")
            elif self.actor is not None and self.actor.halted:
                self._halt("execution halted")
        return self.halted

    def _halt(self, reason: str) -> None:
        self.halted = reason
        self.events.append(f"HALTED: {reason}")
        log.critical("trading halted (%s): no intent goes to the venue any more; engine, feed and metrics keep "
                     "running; fix the cause and restart keel (start-up reconciles with the venue)", reason)

    def _drop_while_halted(self, intents: list[Intent]) -> None:
        """Intents decided while halted: counted, never executed (their portfolio stays busy, so no more come)."""
        if not intents:
            return
        if self.intents_dropped == 0:
            log.error("halted (%s): dropping intents instead of trading, starting with %s", self.halted, intents[0].id)
        self.intents_dropped += len(intents)

    def on_fill(self, portfolio: str, fill: Fill) -> None:
        """A fill committed by the actor: apply it to the engine's holdings.

        Fills settled by the start-up recovery are not applied: holdings are rebuilt from the ledger (which
        has them) right after, and applying a recovered sell to the holdings before that would go negative.
        """
        assert self.engine is not None
        if self.restored:
            self.engine.apply_fill(portfolio, fill)
        self.recent_fills.append((portfolio, fill))

    def on_done(self, intent: Intent, outcome: str) -> None:
        """An intent finished executing; a partial one has its open orders reconciled at once."""
        assert self.engine is not None and self.actor is not None
        if outcome == "partial" and not self.check_halt():
            self.actor.tell(Reconcile())
        self.quotes.pop(intent.id, None)
        self.engine.intent_done(intent.portfolio, intent)
        self.events.append(f"{intent.portfolio}: {intent.reason.value} rebalance {outcome}")
        self.check_halt()

    # the run -------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, extra: list[Callable[[], Any]] | None = None) -> int:
        """Run until `stop` is set; returns the exit code."""
        loop = asyncio.get_running_loop()
        config = self.config
        self.clock = clock = LiveClock(loop)
        engine = self.engine = Engine(clock, portfolio_specs(config), sensor=self.sensor,
                                      outlier_fraction=config.feed.outlier_fraction,
                                      stale_ns=int(config.feed.stale_secs * SEC), on_quiet_check=self.on_quiet_check)
        ledger = self.ledger = await self._open_ledger()
        venue = build_venue(self.config, engine, self.quotes)
        try:
            await record_start(ledger, engine)
            actor = self.actor = ExecutionActor(
                venue, ledger,
                holdings_of=lambda p: engine.runtimes[p].portfolio.holdings,
                on_fill=lambda p, f: self.on_fill(p, f),
                on_done=lambda i, o: self.on_done(i, o),
                quote_of=lambda p: engine.runtimes[p].spec.quote,
                fee_rate_of=lambda p: engine.runtimes[p].spec.fee_rate,
                rules_of=lambda p: engine.runtimes[p].spec.rules,
                sensor=self.sensor,
                fill_timeout_secs=config.venue.fill_timeout_secs,
            )
            self.recovery = await actor.recover()
            await restore(ledger, engine)
            self.restored = True
            return await self._run_tasks(stop, extra or [])
        finally:
            clock.close()
            await self._flush_quiet_checks()
            with contextlib.suppress(Exception):
                await venue.close()
            await ledger.close()

    async def _run_tasks(self, stop: asyncio.Event, extra: list[Callable[[], Any]]) -> int:
        from feeds.health import FeedHealth
        from feeds.recorder import TickRecorder
        from ops.feed import feed_source

        config = self.config
        engine, clock, actor = self.engine, self.clock, self.actor
        assert engine is not None and clock is not None and actor is not None
        symbols = list(engine.book.symbols)
        recorder = TickRecorder(self.record_path, mode="w") if self.record_path is not None else None
        self.health = FeedHealth(symbols, config.feed.stale_secs or 3600.0, time.time_ns,
                                 lambda s, stale: self._on_stale(s, stale))
        health = self.health
        self.driver = driver = LiveDriver(engine, clock, self.dispatch, recorder.write if recorder else None)

        def on_tick(tick: Tick) -> None:
            health.seen(tick.symbol, tick.ts_recv_ns)
            driver.on_tick(tick)

        server = None
        try:
            if config.metrics.enabled:
                server = await self._start_metrics()
            async with feed_source(config, symbols, cert_dir=self.state_dir / "sim-certs", sensor=self.sensor) as source:
                async with asyncio.TaskGroup() as tg:
                    actor_task = tg.create_task(actor.run(), name="execution-actor")
                    feed_task = tg.create_task(source.run(on_tick), name="feed")
                    health_task = tg.create_task(health.run(), name="feed-health")
                    quiet_task = tg.create_task(self._record_quiet_checks(), name="quiet-checks")
                    extra = [*extra, self._reconcile_loop]
                    others = [tg.create_task(fn(), name=getattr(fn, "__name__", "task")) for fn in extra]
                    mqtt = self._mqtt_task(tg)
                    self.ready.set()
                    gc.freeze()  # start-up objects (modules, config, recovered state) leave the collector's scans
                    log.info("keel running: %d portfolios, %d symbols", len(engine.runtimes), len(symbols))
                    stop_wait = tg.create_task(stop.wait(), name="stop")
                    await asyncio.wait([stop_wait, actor_task, feed_task], return_when=asyncio.FIRST_COMPLETED)
                    self.stopping.set()
                    feed_task.cancel()
                    actor.tell(Stop(park=True))
                    await actor_task
                    for t in [health_task, quiet_task, stop_wait, *others, *([mqtt] if mqtt else [])]:
                        t.cancel()
        finally:
            if server is not None:
                await server.stop()
            if recorder is not None:
                recorder.close()
        return 0

    async def _reconcile_loop(self) -> None:
        """Every 30 s, orders left open or unknown are looked up at the venue (a lost answer settles late)."""
        while True:
            await asyncio.sleep(30.0)
            if self.actor is not None and not self.check_halt():
                with contextlib.suppress(MailboxFull):
                    self.actor.tell(Reconcile())

    def _on_stale(self, symbol: str, stale: bool) -> None:
        self.sensor.on_stale(symbol, stale)
        self.events.append(f"feed {symbol} {'stale' if stale else 'fresh again'}")

    async def _start_metrics(self) -> Any:
        from ops.http import MetricsServer
        from ops.metrics import KeelCollector, PrometheusSensor, SymbolHealthView

        sensor = self.sensor
        if not isinstance(sensor, PrometheusSensor):
            return None

        def symbol_health() -> dict[str, SymbolHealthView]:
            if self.health is None:
                return {}
            return {s: SymbolHealthView(h.last_tick_ns, h.stale, h.ticks) for s, h in self.health.status().items()}

        collector = KeelCollector(self.snapshots, symbol_health, lambda: self.actor.mailbox_depth if self.actor else 0,
                                  lambda: self.check_halt() is not None)
        sensor.registry.register(collector)
        m = self.config.metrics
        server = MetricsServer(sensor.registry, host=m.host, port=m.port, ready=self.readiness)
        self.metrics_port = await server.start()
        log.info("metrics on http://%s:%d/metrics", m.host, self.metrics_port)
        return server

    def _mqtt_task(self, tg: asyncio.TaskGroup) -> asyncio.Task[Any] | None:
        m = self.config.mqtt
        if not m.enabled:
            return None
        from ops.mqtt import MqttBridge
        from ops.service_commands import ServiceCommands

        assert self.engine is not None and self.ledger is not None
        bridge = MqttBridge(m, username=os.environ.get(m.username_env), password=os.environ.get(m.password_env),
                            portfolios=list(self.engine.runtimes), snapshots=self.snapshots, outbox=self.ledger,
                            commands=ServiceCommands(self))
        self.mqtt_bridge = bridge
        from ops.metrics import PrometheusSensor

        if self.config.metrics.enabled and isinstance(self.sensor, PrometheusSensor):
            from ops.metrics_mqtt import MqttCollector

            self.sensor.registry.register(MqttCollector(bridge))
        return tg.create_task(bridge.run(), name="mqtt")


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set `stop`."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def run_service(config: Config, **kwargs: Any) -> int:
    """Run the service on uvloop until a signal; the exit code."""
    import uvloop

    from ops.metrics import PrometheusSensor

    async def main() -> int:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        sensor = PrometheusSensor()
        service = Service(config, sensor=sensor, **kwargs)
        return await service.run(stop)

    return uvloop.run(main())
