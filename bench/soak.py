"""Soak: keel's service (in-process, paper venue) against its simulator at 5,000 ticks/s while faults are
injected at random (feed drops, silences, garbage frames, price spikes, crossed books); at the end the
paper venue's journal is reconciled with the ledger.

Prints one JSON line: ticks, intents, fills, faults injected and survived, RSS at start (after a warm-up),
every minute and at the end with the end/start ratio, and the reconciliation (every count of differences
must be 0).
Usage: python bench/soak.py [--minutes 30] [--rate 5000] [--seed 1] [--dir DIR]
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ops.feed  # noqa: E402
from feeds.simulator import ExchangeSimulator  # noqa: E402
from ops.config import loads_config  # noqa: E402
from ops.metrics import PrometheusSensor  # noqa: E402
from ops.service import Service  # noqa: E402

log = logging.getLogger("keel.soak")

SYMBOLS = ("BTC-USDT", "ETH-USDT", "SOL-USDT", "BNB-USDT")
FAULT_KINDS = ("drop", "silence", "garbage", "spike", "cross")
SURVIVE_TICKS = 50
SURVIVE_SECS = 60.0
OPEN_STATUSES = ("pending", "new", "partially_filled", "unknown")
RSS_SAMPLE_SECS = 60.0

CONFIG = """
[portfolio]
name = "soak"
capital = 100000
[portfolio.targets]
BTC = 0.3
ETH = 0.25
SOL = 0.15
BNB = 0.1
USDT = 0.2
[rebalance]
threshold = 0.02
debounce_secs = 0.2
window_secs = 2
[venue]
kind = "paper"
fee_rate = 0.001
latency_ms = 20
[feed]
source = "sim"
sim_rate_hz = {rate_hz}
sim_swing = 0.12
sim_seed = {seed}
speed = 8
stale_secs = 3
outlier_fraction = 0.2
reconnect_max_secs = 2
[ledger]
path = "{ledger}"
[metrics]
port = 0
"""


# reconciliation -------------------------------------------------------------------------------------


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _add(h: dict[str, Decimal], asset: str, delta: Decimal) -> None:
    h[asset] = h.get(asset, Decimal(0)) + delta


def _apply_fill(h: dict[str, Decimal], symbol: str, side: str, qty: Decimal, price: Decimal, fee: Decimal,
                fee_asset: str) -> None:
    base, quote = symbol.split("-")
    sign = 1 if side == "buy" else -1
    _add(h, base, sign * qty)
    _add(h, quote, -sign * qty * price)
    _add(h, fee_asset, -fee)


def reconcile(ledger: Path, journal: Path) -> dict[str, Any]:
    """The paper venue's journal against the ledger, computed here from the raw rows (not with keel's code).

    Counts of: venue fills missing from the ledger, ledger fills the venue never made, fills that differ,
    fills recorded twice, venue orders unknown to the ledger, ledger orders still open, per-asset holdings
    that differ (transfers + venue fills vs transfers + ledger fills), and negative holdings.
    """
    Key = tuple[str, str, str, Decimal, Decimal, Decimal, str]
    venue: dict[str, Key] = {}
    venue_dupes = 0
    venue_orders: set[str] = set()
    for cid, report in _rows(journal, "SELECT client_order_id, report FROM orders") if journal.exists() else []:
        venue_orders.add(cid)
        r = orjson.loads(report)
        for f in r["fills"]:
            if f["trade_id"] in venue:
                venue_dupes += 1
            venue[f["trade_id"]] = (cid, r["symbol"], f["side"], Decimal(f["quantity"]), Decimal(f["price"]),
                                    Decimal(f["fee"]), f["fee_asset"])
    led: dict[str, Key] = {}
    ledger_dupes = 0
    portfolio_of: dict[str, str] = {}
    for trade_id, cid, portfolio, symbol, side, qty, price, fee, fee_asset in _rows(
            ledger, "SELECT trade_id, client_order_id, portfolio, symbol, side, quantity, price, fee, fee_asset FROM fills"):
        if trade_id in led:
            ledger_dupes += 1
        led[trade_id] = (cid, symbol, side, Decimal(qty), Decimal(price), Decimal(fee), fee_asset)
        portfolio_of[cid] = portfolio
    ledger_orders = {cid: p for cid, p in _rows(ledger, "SELECT client_order_id, portfolio FROM orders")}
    open_orders = _rows(ledger, "SELECT count(*) FROM orders WHERE status IN ("
                        + ", ".join(f"'{s}'" for s in OPEN_STATUSES) + ")")[0][0]
    missing = sorted(set(venue) - set(led))
    extra = sorted(set(led) - set(venue))
    different = sorted(t for t in set(venue) & set(led) if venue[t] != led[t])

    by_venue: dict[str, dict[str, Decimal]] = {}
    by_ledger: dict[str, dict[str, Decimal]] = {}
    for portfolio, asset, amount in _rows(ledger, "SELECT portfolio, asset, amount FROM transfers"):
        for h in (by_venue, by_ledger):
            _add(h.setdefault(portfolio, {}), asset, Decimal(amount))
    for fills, holdings in ((venue, by_venue), (led, by_ledger)):
        for cid, symbol, side, qty, price, fee, fee_asset in fills.values():
            p = ledger_orders.get(cid) or portfolio_of.get(cid) or "?"
            _apply_fill(holdings.setdefault(p, {}), symbol, side, qty, price, fee, fee_asset)
    holding_diffs = {
        f"{p}:{a}": str(by_venue.get(p, {}).get(a, Decimal(0)) - by_ledger.get(p, {}).get(a, Decimal(0)))
        for p in set(by_venue) | set(by_ledger)
        for a in set(by_venue.get(p, {})) | set(by_ledger.get(p, {}))
        if by_venue.get(p, {}).get(a, Decimal(0)) != by_ledger.get(p, {}).get(a, Decimal(0))
    }
    negative = {f"{p}:{a}": str(q) for p, h in by_ledger.items() for a, q in h.items() if q < 0}
    return {
        "venue_fills": len(venue), "ledger_fills": len(led), "venue_orders": len(venue_orders),
        "missing_in_ledger": len(missing), "unknown_to_venue": len(extra), "different": len(different),
        "duplicate_fills": venue_dupes + ledger_dupes,
        "venue_orders_unknown_to_ledger": len(venue_orders - set(ledger_orders)),
        "open_orders": open_orders, "holding_differences": len(holding_diffs), "negative_holdings": len(negative),
        "details": {"missing": missing[:5], "extra": extra[:5], "different": different[:5],
                    "holdings": holding_diffs, "negative": negative},
        "holdings": {p: {a: str(q) for a, q in sorted(h.items()) if q} for p, h in by_ledger.items()},
    }


def differences(report: dict[str, Any]) -> int:
    """The total count of differences in a `reconcile` report (0 when the ledger and the venue agree)."""
    keys = ("missing_in_ledger", "unknown_to_venue", "different", "duplicate_fills",
            "venue_orders_unknown_to_ledger", "open_orders", "holding_differences", "negative_holdings")
    return sum(int(report[k]) for k in keys)


# the soak -------------------------------------------------------------------------------------------


def rss_kb() -> int:
    """This process's resident set size in KiB (from /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _sqlite_memory_kb() -> int:
    """Bytes SQLite holds (page caches and the rest), in KiB; 0 where libsqlite3 cannot be loaded by name."""
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")
    except OSError:
        return 0
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return int(lib.sqlite3_memory_used()) >> 10


def _accounts() -> tuple[int, int, int]:
    """(SQLite KiB, Python allocated blocks, float-to-Decimal cache entries) now."""
    from engine import planner

    return _sqlite_memory_kb(), sys.getallocatedblocks(), len(planner._DEC_CACHE)


class SoakSensor(PrometheusSensor):
    """The Prometheus sensor, counting ticks and intents, with a future for "N more ticks"."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks = 0
        self.intents = 0
        self._target = 0
        self._waiter: asyncio.Future[None] | None = None

    def on_tick(self, symbol: str, ts_recv_ns: int) -> None:
        super().on_tick(symbol, ts_recv_ns)
        self.ticks += 1
        if self._waiter is not None and self.ticks >= self._target and not self._waiter.done():
            self._waiter.set_result(None)

    def on_intent(self, intent: Any, latency_ns: int) -> None:
        super().on_intent(intent, latency_ns)
        self.intents += 1

    async def more_ticks(self, n: int, within_secs: float) -> bool:
        """True once `n` more ticks arrived, False after `within_secs` seconds."""
        self._target = self.ticks + n
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._waiter, within_secs)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiter = None


@dataclass
class SoakResult:
    """What one soak run measured."""

    seconds: float = 0.0
    ticks: int = 0
    ticks_per_sec: float = 0.0
    intents: int = 0
    fills: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)
    faults_survived: int = 0
    faults_not_survived: int = 0
    rss_start_kb: int = 0
    rss_end_kb: int = 0
    rss_ratio: float = 0.0
    rss_samples_kb: list[int] = field(default_factory=list)
    # where RSS can go besides leaks, at start and end: SQLite's page caches (bounded by cache_size per
    # connection, 2 MB by default), Python's allocated blocks, the planner's float-to-Decimal cache
    sqlite_kb: tuple[int, int] = (0, 0)
    python_blocks: tuple[int, int] = (0, 0)
    dec_cache: tuple[int, int] = (0, 0)
    alive: bool = False
    halted: str | None = None
    exit_code: int | None = None
    reconciliation: dict[str, Any] = field(default_factory=dict)
    differences: int = -1


async def _sample_rss(samples: list[int], every_secs: float) -> None:
    """Append this process's RSS every `every_secs` until cancelled."""
    while True:
        samples.append(rss_kb())
        await asyncio.sleep(every_secs)


async def _inject(sim: ExchangeSimulator, kind: str, rng: random.Random) -> None:
    if kind == "drop":
        sim.drop_connections()
    elif kind == "silence":
        sim.go_silent(True)
        await asyncio.sleep(rng.uniform(0.5, 2.5))
        sim.go_silent(False)
    elif kind == "garbage":
        sim.send_garbage(rng.randint(1, 20))
    elif kind == "spike":
        sim.spike(rng.choice(SYMBOLS), rng.choice((rng.uniform(0.2, 0.6), rng.uniform(1.6, 5.0))))
    else:
        sim.cross(rng.choice(SYMBOLS))


async def soak(minutes: float, *, rate: float = 5000.0, seed: int = 1, workdir: Path,
               warmup_secs: float | None = None, fault_every: tuple[float, float] = (2.0, 6.0)) -> SoakResult:
    """Run the service for `minutes` with random faults; stop it cleanly, then reconcile venue and ledger."""
    rng = random.Random(seed)
    ledger = workdir / "soak.sqlite"
    config = loads_config(CONFIG.format(rate_hz=rate / len(SYMBOLS), seed=seed, ledger=ledger), base_dir=workdir)
    sensor = SoakSensor()
    service = Service(config, sensor=sensor, state_dir=workdir)
    sims: list[ExchangeSimulator] = []
    real = ops.feed.make_simulator

    def tapped(*args: Any, **kwargs: Any) -> ExchangeSimulator | None:
        sim = real(*args, **kwargs)
        if sim is not None:
            sims.append(sim)
        return sim

    ops.feed.make_simulator = tapped  # type: ignore[assignment]
    result = SoakResult()
    tasks: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(service.run(stop), name="keel-service")
    try:
        ready = asyncio.create_task(service.ready.wait())
        await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task.done() or not ready.done():
            ready.cancel()
            raise RuntimeError("the service did not start")
        total = minutes * 60.0
        warmup = warmup_secs if warmup_secs is not None else min(60.0, max(5.0, total * 0.1))
        await asyncio.sleep(warmup)
        result.rss_start_kb = rss_kb()
        accounts = _accounts()
        sampler = asyncio.create_task(_sample_rss(result.rss_samples_kb, RSS_SAMPLE_SECS), name="rss-sampler")
        tasks.append(sampler)
        injected: Counter[str] = Counter()
        deadline = started + total
        while time.monotonic() < deadline and not task.done():
            await asyncio.sleep(min(rng.uniform(*fault_every), max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= deadline or task.done():
                break
            kind = rng.choice(FAULT_KINDS)
            await _inject(sims[-1], kind, rng)
            injected[kind] += 1
            if await sensor.more_ticks(SURVIVE_TICKS, SURVIVE_SECS) and not task.done():
                result.faults_survived += 1
            else:
                result.faults_not_survived += 1
                log.error("soak: no ticks after a %s fault", kind)
        result.faults_injected = dict(injected)
        sampler.cancel()
        result.rss_end_kb = rss_kb()
        end = _accounts()
        result.sqlite_kb = (accounts[0], end[0])
        result.python_blocks = (accounts[1], end[1])
        result.dec_cache = (accounts[2], end[2])
        result.alive = not task.done()
        result.halted = service.halted
    finally:
        for t in tasks:
            t.cancel()
        ops.feed.make_simulator = real  # type: ignore[assignment]
        stop.set()
        try:
            result.exit_code = await asyncio.wait_for(task, 60)
        except Exception:  # the run's outcome is reported, not raised: the figures still print
            log.exception("soak: the service failed")
    result.seconds = round(time.monotonic() - started, 1)
    result.ticks = sensor.ticks
    result.ticks_per_sec = round(sensor.ticks / max(result.seconds, 1e-9), 1)
    result.intents = sensor.intents
    result.rss_ratio = round(result.rss_end_kb / result.rss_start_kb, 3) if result.rss_start_kb else 0.0
    report = reconcile(ledger, ledger.with_suffix(".paper-venue.sqlite"))
    result.fills = report["ledger_fills"]
    result.reconciliation = {k: v for k, v in report.items() if k not in ("details", "holdings")}
    if differences(report):
        result.reconciliation["details"] = report["details"]
    result.differences = differences(report)
    return result


def main() -> None:
    """Parse arguments, run the soak on uvloop, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="ticks per second from the simulator")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="keep the ledger and journal here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("feedhandler").setLevel(logging.ERROR)  # cryptofeed logs a traceback per dropped socket
    import uvloop

    with tempfile.TemporaryDirectory(prefix="keel-soak-") as tmp:
        workdir = args.dir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = uvloop.run(soak(args.minutes, rate=args.rate, seed=args.seed, workdir=workdir))
    print(json.dumps(asdict(result), sort_keys=True))


if __name__ == "__main__":
    main()
