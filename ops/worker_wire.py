"""What fleet workers say on NATS: subjects, stream and bucket names, partitions, and message bodies.

Ticks travel on core NATS, one subject per symbol (`keel.ticks.BTC-USDT`), body `[n, bid, ask, ts_ns]`
where `n` is the publisher's sequence number (workers restore the publisher's order with it). The
feed side's clock beats on `keel.clock` (`[n, ts_ns]`) so that windows close with no tick. Intents
go to JetStream `keel.intents.<partition>`; fills, done markers and quiet-check markers (a check that
found nothing to trade, which starts a window all the same) to `keel.fills.<partition>`, each with
`Nats-Msg-Id` set to its own id (intent id, trade id, `done-<intent id>`, `check-<portfolio>-<ts>`),
so a retried publish is dropped by the server as a duplicate.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from engine.fleet_load import FleetPortfolio
from engine.types import Fill, Intent, Leg, Reason, Side

TICKS = "keel.ticks"
CLOCK = "keel.clock"
INTENTS = "keel.intents"
FILLS = "keel.fills"
INTENT_STREAM = "KEEL_INTENTS"
FILL_STREAM = "KEEL_FILLS"
LAST_TICK_STREAM = "KEEL_LAST_TICKS"
LEASE_BUCKET = "keel-leases"
WORKER_BUCKET = "keel-workers"
MSG_ID = "Nats-Msg-Id"
SEC = 1_000_000_000


def partition_of(portfolio: str, partitions: int) -> int:
    """A portfolio's partition: blake2b of its name (stable across processes and machines)."""
    digest = hashlib.blake2b(portfolio.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def lease_key(partition: int) -> str:
    """The lease bucket's key of a partition."""
    return f"p{partition:05d}"


def tick_body(n: int, bid: float, ask: float, ts_ns: int) -> bytes:
    """A tick's body: `[n, bid, ask, ts_ns]`."""
    return orjson.dumps([n, bid, ask, ts_ns])


def clock_body(n: int, ts_ns: int) -> bytes:
    """A clock beat's body: `[n, ts_ns]`."""
    return orjson.dumps([n, ts_ns])


def _default(obj: object) -> object:
    if isinstance(obj, Decimal):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def intent_body(intent: Intent) -> bytes:
    """An intent as JSON (decimals as strings)."""
    return orjson.dumps(asdict(intent), default=_default)


def parse_intent(data: bytes) -> Intent:
    """The inverse of `intent_body`."""
    d = orjson.loads(data)
    legs = tuple(Leg(x["symbol"], Side(x["side"]), Decimal(x["quantity"]), Decimal(x["expected_price"]),
                     Decimal(x["notional"])) for x in d["legs"])
    return Intent(d["id"], d["portfolio"], d["ts_ns"], Reason(d["reason"]), d["drift"], d["prices"], d["weights"],
                  legs, d["expected_residual_drift"], d["observe"], Decimal(d["quote_reserve"]))


def fill_body(portfolio: str, intent_id: str, fill: Fill) -> bytes:
    """A fill record: `{"kind": "fill", "portfolio", "intent", "fill": {...}}`."""
    return orjson.dumps({"kind": "fill", "portfolio": portfolio, "intent": intent_id, "fill": asdict(fill)},
                        default=_default)


def done_body(portfolio: str, intent_id: str) -> bytes:
    """The marker that an intent finished executing."""
    return orjson.dumps({"kind": "done", "portfolio": portfolio, "intent": intent_id})


def check_body(portfolio: str, ts_ns: int) -> bytes:
    """The marker of a check that found nothing to trade: it started a post-rebalance window all the same."""
    return orjson.dumps({"kind": "check", "portfolio": portfolio, "ts_ns": ts_ns})


def parse_fill(d: Mapping[str, Any]) -> Fill:
    """A `Fill` from the `fill` member of a fill record."""
    return Fill(d["trade_id"], d["client_order_id"], d["symbol"], Side(d["side"]), Decimal(d["quantity"]),
                Decimal(d["price"]), Decimal(d["fee"]), d["fee_asset"], d["ts_ns"], d["order_id"])


def read_portfolios(path: Path) -> list[FleetPortfolio]:
    """Portfolios from a JSON-lines file: `{"name", "targets", "thresholds", "holdings", "window_secs", "quote"}`."""
    out = []
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = orjson.loads(line)
                out.append(FleetPortfolio(
                    name=str(d["name"]), targets={k: float(v) for k, v in d["targets"].items()},
                    thresholds={k: float(v) for k, v in d["thresholds"].items()},
                    holdings={k: float(v) for k, v in d.get("holdings", {}).items()},
                    window_ns=round(float(d.get("window_secs", 300)) * SEC), quote=str(d.get("quote", "USDT")),
                ))
            except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
                raise ValueError(f"{path}:{number}: bad portfolio line: {exc}") from None
    return out


def write_portfolios(path: Path, portfolios: Iterable[FleetPortfolio]) -> None:
    """Write portfolios as JSON lines (the format `read_portfolios` reads)."""
    with path.open("wb") as f:
        for p in portfolios:
            f.write(orjson.dumps({"name": p.name, "targets": dict(p.targets), "thresholds": dict(p.thresholds),
                                  "holdings": dict(p.holdings), "window_secs": p.window_ns / SEC,
                                  "quote": p.quote}) + b"\n")
