"""Live commands: run, demo, exchange-sim, record."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops.commands import CommandError, command, load
from ops.config_schema import LIVE_EXCHANGES

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the TOML config")
    p.add_argument("--record", metavar="FILE", help="also record every tick the engine saw (JSONL) for exact replay")
    p.add_argument("--tui", action="store_true", help="show the live terminal view")


@command("run", "Run the service: feed, engine, execution actor, ledger, metrics, MQTT.")(_run_args)
def run(args: argparse.Namespace) -> int:
    """keel run CONFIG."""
    config = load(args.config)
    # Under the terminal view only warnings are printed (above it); the view shows intents, fills and health.
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else (logging.WARNING if args.tui else logging.INFO))
    return _serve(config, record=Path(args.record) if args.record else None, tui=args.tui)


def _serve(config: Any, *, record: Path | None, tui: bool, report_dir: Path | None = None) -> int:
    import asyncio

    import uvloop

    from ops.metrics import PrometheusSensor
    from ops.service import Halt, Service, install_signal_handlers

    async def main() -> int:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        service = Service(config, sensor=PrometheusSensor(), record=record)
        sampler = EquitySampler(service) if report_dir is not None else None  # samples only for a report
        extra = [sampler.run] if sampler is not None else []
        if tui:
            extra.append(lambda: _view(service, stop))
        try:
            code = await service.run(stop, extra=extra)
        except Halt as e:
            raise CommandError(str(e), 1) from None
        if sampler is not None and report_dir is not None:
            sampler.write(report_dir)
        return code

    from ops.logs import logging_off_the_loop

    logging.getLogger("feedhandler").setLevel(logging.ERROR)
    with logging_off_the_loop():  # an intent's log line is a queue put on the loop, not a write
        return uvloop.run(main())


async def _view(service: Any, stop: asyncio.Event) -> None:
    try:
        from ops.tui import DemoView, ViewState
    except ImportError:
        return

    def state() -> Any:
        feed = service.health.status() if service.health is not None else {}
        engine = service.engine
        rts = engine.runtimes if engine is not None else {}
        return ViewState(
            now_ns=time.time_ns(), portfolios=service.snapshots(), feed=feed,
            recent_intents=list(service.recent_intents), recent_fills=list(service.recent_fills),
            rebalances={n: rt.rebalances for n, rt in rts.items()}, fees={n: rt.fees_paid for n, rt in rts.items()},
            events=list(service.events), speed=1.0)

    await service.ready.wait()
    port = service.metrics_port or service.config.metrics.port  # the bound port (a configured 0 picks one)
    view = DemoView("keel demo", f"http://{service.config.metrics.host}:{port}/metrics", service.config.ledger.path)
    await view.run(state, stop)


class EquitySampler:
    """Samples value, HODL, drift and weights once a second, for the report written at the end."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.started_ns = time.time_ns()  # the report covers this run (a reused ledger holds earlier ones too)
        self.rows: dict[str, list[tuple[int, float, float, float, dict[str, float]]]] = {}

    async def run(self) -> None:
        """Sample until cancelled."""
        import asyncio

        await self.service.ready.wait()
        while True:
            now = time.time_ns()
            for snap in self.service.snapshots():
                if snap.value > 0:
                    self.rows.setdefault(snap.name, []).append((now, snap.value, snap.hodl_value, snap.drift,
                                                                dict(snap.weights)))
            await asyncio.sleep(1.0)

    def write(self, out: Path) -> None:
        """summary.json, intents.jsonl, fills.csv, equity.csv and report.html of the live run."""
        import orjson

        from ops.backtest import intent_record, iso
        from ops.ledger_read import ledger_intents

        service = self.service
        engine = service.engine
        if engine is None:
            return
        for name, rt in engine.runtimes.items():
            rows = self.rows.get(name, [])
            if not rows:
                continue
            d = out if len(engine.runtimes) == 1 else out / name
            d.mkdir(parents=True, exist_ok=True)
            coins = sorted(rows[-1][4])
            with (d / "equity.csv").open("w") as f:
                f.write(",".join(["ts", "ts_ns", "value", "hodl_value", "drift", *(f"w_{c}" for c in coins)]) + "\n")
                for ts, value, hodl, drift, w in rows:
                    f.write(f"{iso(ts)},{ts},{value:.10g},{hodl:.10g},{drift:.10g}," +
                            ",".join(f"{w.get(c, 0.0):.10g}" for c in coins) + "\n")
            snap = engine.snapshot(name)
            values = [r[1] for r in rows]
            peak, dd = 0.0, 0.0
            for v in values:
                peak = max(peak, v)
                dd = max(dd, 1 - v / peak)
            summary = {
                "portfolio": name, "quote": rt.spec.quote, "config": service.config.path, "mode": rt.spec.mode,
                "final_value": snap.value, "hodl_value": snap.hodl_value,
                "premium": snap.value / snap.hodl_value - 1 if snap.hodl_value > 0 else 0.0,
                "rebalances": rt.rebalances, "fees_paid": float(rt.fees_paid),
                "turnover": float(rt.turnover) / (sum(values) / len(values)), "max_drawdown": dd,
                "ticks": service.driver.ticks if service.driver is not None else 0,
                "start": iso(rows[0][0]), "end": iso(rows[-1][0]),
                "holdings": {a: str(q) for a, q in snap.holdings.items()}, "targets": snap.targets,
                "thresholds": snap.thresholds, "capital": str(rt.spec.capital),
            }
            (d / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
            with (d / "intents.jsonl").open("wb") as f:
                for intent in ledger_intents(service.config.ledger.path, name, since_ns=self.started_ns):
                    f.write(orjson.dumps(intent_record(intent)) + b"\n")
            from ops.report import render_report

            render_report(d, title=f"keel live run: {name}")


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speed", type=float, default=1.0, help="market speed factor (default 1; 10 = ten times livelier)")
    p.add_argument("--seed", type=int, default=1, help="seed of the simulated market")
    p.add_argument("--config", help="use this config instead of the embedded demo portfolio")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="also publish to this MQTT broker (credentials from the env)")
    p.add_argument("--state", default="var/demo", help="folder for the ledger and the report (default var/demo)")
    p.add_argument("--port", type=int, default=9108, help="metrics port (default 9108; 0 = any free port)")
    p.add_argument("--no-tui", action="store_true", help="no terminal view (log lines instead)")


@command("demo", "A live paper portfolio on the embedded exchange simulator, with a terminal view.")(_demo_args)
def demo(args: argparse.Namespace) -> int:
    """keel demo."""
    import msgspec

    from ops.config import loads_config
    from ops.demo_config import demo_toml

    if args.speed <= 0:
        raise CommandError("--speed must be positive")
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    if args.config:
        config = load(args.config)
    else:
        text = demo_toml(seed=args.seed, speed=args.speed, ledger=str(state / "keel.sqlite"), metrics_port=args.port)
        (state / "demo.toml").write_text(text)
        config = loads_config(text, name=str(state / "demo.toml"), base_dir=state)
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":")
        if not host or not port.isdigit():
            raise CommandError(f"--mqtt takes HOST:PORT, got {args.mqtt!r}")
        config = msgspec.structs.replace(config, mqtt=msgspec.structs.replace(
            config.mqtt, enabled=True, host=host, port=int(port)))
    tui = not args.no_tui and sys.stdout.isatty()
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else (logging.WARNING if tui else logging.INFO))
    if not tui:
        where = f"http://127.0.0.1:{args.port}/metrics" if args.port else "a free port (logged below)"
        print(f"keel demo: paper portfolio on the embedded simulator; metrics on {where}; Ctrl-C stops", flush=True)
    code = _serve(config, record=None, tui=tui, report_dir=state / "report")
    print(f"keel demo: stopped. ledger: {config.ledger.path}; report: {state / 'report' / 'report.html'}")
    return code


def _sim_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9443)
    p.add_argument("--symbols", default="BTC-USDT,ETH-USDT,SOL-USDT", help="comma-separated BASE-QUOTE symbols")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=50.0, help="frames per second in total (0 = as fast as possible)")
    p.add_argument("--swing", type=float, default=0.05)
    p.add_argument("--file", help="replay this tick or candle file instead of a synthetic market")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed of --file")
    p.add_argument("--cert-dir", default="var/sim-certs")


@command("exchange-sim", "Run the TLS exchange simulator (Binance, Kraken and OKX wire formats) on 127.0.0.1.")(
    _sim_args)
def exchange_sim(args: argparse.Namespace) -> int:
    """keel exchange-sim."""
    import asyncio

    from feeds.simulator import run_exchange_sim

    logging.getLogger().setLevel(logging.INFO)
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]

    async def main() -> None:
        from ops.service import install_signal_handlers

        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_exchange_sim(host=args.host, port=args.port, seed=args.seed, symbols=symbols, rate_hz=args.rate,
                               speed=args.speed, file=Path(args.file) if args.file else None,
                               cert_dir=Path(args.cert_dir), swing=args.swing, stop=stop)

    try:
        asyncio.run(main())
    except (ValueError, FileNotFoundError) as e:
        raise CommandError(str(e)) from None
    return 0


def _record_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exchange", choices=LIVE_EXCHANGES, required=True)
    p.add_argument("--symbols", required=True, help="comma-separated BASE-QUOTE symbols, e.g. BTC-USDT,ETH-USDT")
    p.add_argument("--out", required=True, help="JSONL file to write")
    p.add_argument("--ws-url", help="websocket address (default: the exchange's); e.g. the simulator's wss://127.0.0.1:...")
    p.add_argument("--rest-url", help="exchange-info address matching --ws-url")
    p.add_argument("--cert-dir", default="var/sim-certs", help="trust the simulator's certificate from here")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0 = until Ctrl-C)")


@command("record", "Record what a live feed delivers (JSONL with receive times) for exact replay.")(_record_args)
def record(args: argparse.Namespace) -> int:
    """keel record --exchange binance --symbols BTC-USDT,ETH-USDT --out ticks.jsonl."""
    import asyncio
    import contextlib

    from feeds.cryptofeed_source import CryptofeedSource
    from feeds.recorder import TickRecorder

    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    ssl_context = None
    if args.ws_url:
        from feeds.simulator.certs import client_ssl_context

        ssl_context = client_ssl_context(Path(args.cert_dir))
    logging.getLogger("feedhandler").setLevel(logging.ERROR)
    count = 0

    async def main() -> None:
        nonlocal count
        from ops.service import install_signal_handlers

        stop = asyncio.Event()
        install_signal_handlers(stop)
        source = CryptofeedSource(args.exchange, symbols, ws_url=args.ws_url, rest_url=args.rest_url,
                                  ssl_context=ssl_context)
        with TickRecorder(Path(args.out), mode="w") as rec:
            def on_tick(tick: Any) -> None:
                nonlocal count
                rec.write(tick)
                count += 1

            task = asyncio.create_task(source.run(on_tick))
            waiter = asyncio.create_task(stop.wait())
            timeout = args.seconds if args.seconds > 0 else None
            await asyncio.wait([task, waiter], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            task.cancel()
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())
    print(f"recorded {count} ticks to {args.out}")
    return 0


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats", default="nats://127.0.0.1:4222", help="NATS server (JetStream enabled)")
    p.add_argument("--id", required=True, help="this worker's unique id")
    p.add_argument("--portfolios", required=True, help="JSON-lines portfolios file (ops.worker_wire)")
    p.add_argument("--ledger-dir", required=True, help="folder for the per-partition SQLite copies")
    p.add_argument("--partitions", type=int, default=1024)
    p.add_argument("--lease-secs", type=float, default=10.0)


@command("worker", "Run one scale-out worker: partition leases in NATS KV, ticks and intents over NATS.")(_worker_args)
def worker(args: argparse.Namespace) -> int:
    """keel worker --id W --portfolios FILE --ledger-dir DIR."""
    from ops.worker import main as worker_main

    if not Path(args.portfolios).is_file():
        raise CommandError(f"portfolios file {args.portfolios} not found")
    return worker_main(["--nats", args.nats, "--id", args.id, "--portfolios", args.portfolios, "--ledger-dir",
                        args.ledger_dir, "--partitions", str(args.partitions), "--lease-secs", str(args.lease_secs)])


def _fleet_feed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats", default="nats://127.0.0.1:4222", help="NATS server (JetStream enabled)")
    p.add_argument("--portfolios", required=True, help="JSON-lines portfolios file: its coins are the symbols")
    p.add_argument("--source", choices=("sim", *LIVE_EXCHANGES), default="sim",
                   help="sim: the embedded exchange simulator on 127.0.0.1 (default); binance/kraken/okx: live")
    p.add_argument("--sim-seed", type=int, default=1)
    p.add_argument("--sim-rate-hz", type=float, default=20.0, help="simulator ticks per second per symbol")
    p.add_argument("--sim-swing", type=float, default=0.05, help="simulator price swings (0.05 = 5%%)")
    p.add_argument("--beat-secs", type=float, default=1.0, help="clock beat period (windows close on beats)")


@command("fleet-feed", "Publish one market feed to the scale-out workers over NATS (ticks and clock beats).")(
    _fleet_feed_args)
def fleet_feed(args: argparse.Namespace) -> int:
    """keel fleet-feed --portfolios FILE."""
    import asyncio
    import tempfile

    from ops.fleet_feed import FeedPlan, fleet_symbols, run_fleet_feed
    from ops.service import install_signal_handlers

    if not Path(args.portfolios).is_file():
        raise CommandError(f"portfolios file {args.portfolios} not found")
    if not args.beat_secs > 0 or not args.sim_rate_hz > 0:
        raise CommandError("--beat-secs and --sim-rate-hz must be > 0")
    try:
        symbols = fleet_symbols(Path(args.portfolios))
    except ValueError as e:
        raise CommandError(str(e)) from None
    if not symbols:
        raise CommandError(f"{args.portfolios} holds no portfolio with a coin: nothing to publish")
    plan = FeedPlan(args.source, args.sim_seed, args.sim_rate_hz, args.sim_swing, args.beat_secs)
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    logging.getLogger("feedhandler").setLevel(logging.ERROR)

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        with tempfile.TemporaryDirectory(prefix="keel-sim-certs-") as certs:
            publisher = await run_fleet_feed(args.nats, symbols, plan, cert_dir=Path(certs), stop=stop)
        print(f"published {publisher.published} ticks and {publisher.beats} clock beats; dropped "
              f"{sum(publisher.dropped.values())}")

    asyncio.run(main())
    return 0
