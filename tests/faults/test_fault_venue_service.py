"""Venue faults through the whole service: `venue.kind = "ccxt"` (real ccxt 4.5) against the fake Binance on
127.0.0.1, the feed from the embedded simulator, faults injected one after another while it trades.

After each faulty intent (engine paused for the check): the ledger's holdings equal the exchange's
balances for the portfolio's assets and the engine's holdings, nothing is negative, every trade of the
exchange is in the ledger once, no order is left open, and no client order id was ever accepted twice.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.types import Intent
from ops.config import loads_config
from ops.service import Service
from ops.venues.binance_fake import BinanceFake, Fault
from tests.faults import Recorder, running
from tests.integration.binance_kit import ccxt_service_toml, keep_prices_in_line, service_fake
from tests.service_kit import METRICS_OFF_TOML

KEY = "keel-fault-key-3JqW8"
SECRET = "keel-fault-secret-Vn5Ry"
P = "cx"
ASSETS = ("BTC", "ETH", "USDT")
CONFIG = ccxt_service_toml(
    "cx", METRICS_OFF_TOML, exchange="binance", base_url="{base_url}", api_key_env="KEEL_FAULT_KEY",
    api_secret_env="KEEL_FAULT_SECRET", fee_rate=0.001, timeout_secs=1, fill_timeout_secs=1.5)

RESTED: list[Any] = []


def rest_next_order(fake: BinanceFake) -> None:
    """The next order rests on the book at the touch instead of filling (a slow market, an order left open)."""
    spot = fake.spot
    real = spot._match_new

    def resting(order: Any, market: Any, tweaks: Any, now_ms: int) -> None:
        spot._match_new = real  # type: ignore[method-assign]
        order.price = market.ask if order.side == "BUY" else market.bid
        spot._lock(order, market)
        RESTED.append(order)

    spot._match_new = resting  # type: ignore[method-assign]


class Checkpoints:
    """Pauses the portfolio after every finished intent so the test can compare ledger and exchange at rest."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.done: list[tuple[Intent, str]] = []
        self.held = asyncio.Event()
        real = service.on_done

        def on_done(intent: Intent, outcome: str) -> None:
            real(intent, outcome)
            self.done.append((intent, outcome))
            assert service.engine is not None
            service.engine.pause(P)
            self.held.set()

        service.on_done = on_done  # type: ignore[method-assign]

    async def next(self) -> tuple[Intent, str]:
        """Let the portfolio trade until its next intent finishes; it is paused again then."""
        engine = self.service.engine
        assert engine is not None
        self.held.clear()
        engine.resume(P)
        intents = engine.take_intents()
        if intents:
            self.service.dispatch(intents, time.time_ns())
        await asyncio.wait_for(self.held.wait(), 30)
        return self.done[-1]


async def assert_ledger_matches_exchange(service: Service, fake: BinanceFake, what: str) -> None:
    ledger, engine = service.ledger, service.engine
    assert ledger is not None and engine is not None
    held = {a: q for a, q in (await ledger.holdings(P)).items() if q}
    balances = {a: q for a, q in fake.balances.items() if a in ASSETS and q}
    assert held == balances, f"after {what}: ledger {held} != exchange {balances}"
    assert {a: q for a, q in engine.runtimes[P].portfolio.holdings.items() if q} == held
    assert all(q >= 0 for q in held.values())
    assert sorted(r.fill.trade_id for r in await ledger.fills(P)) == sorted(str(t.trade_id) for t in fake.trades)
    assert await ledger.open_orders() == [], f"after {what}: orders left open"
    assert all(len(fake.orders_for(cid)) <= 1 for cid in fake.orders_by_client_id), "a client order id placed twice"


FAULTS: list[tuple[str, Callable[[BinanceFake], None]]] = [
    ("429 with Retry-After", lambda f: f.inject(Fault.rate_limited(retry_after_secs=1))),
    ("a timeout after the order was placed", lambda f: f.inject(Fault.hang(hang_secs=5, processed=True))),
    ("a partial fill", lambda f: f.inject(Fault.partial_fill(Decimal("0.5")))),
    ("a fill arriving with the cancel", lambda f: (rest_next_order(f), f.inject(Fault.fill_on_cancel(Decimal(1))))),
    ("an answer that does not parse", lambda f: f.inject(Fault.broken_json())),
]


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_venue_faults_mid_run_keep_the_ledger_equal_to_the_exchange(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    RESTED.clear()
    fake = service_fake(KEY, SECRET)
    await fake.start()
    try:
        monkeypatch.setenv("KEEL_FAULT_KEY", KEY)
        monkeypatch.setenv("KEEL_FAULT_SECRET", SECRET)
        config = loads_config(CONFIG.format(base_url=fake.base_url, ledger=tmp_path / "keel.sqlite"), base_dir=tmp_path)
        rec = Recorder()
        service = Service(config, sensor=rec, state_dir=tmp_path)
        checkpoints = Checkpoints(service)
        keep_prices_in_line(service, fake)
        async with running(service) as task:
            await asyncio.wait_for(checkpoints.held.wait(), 30)  # the buy-in
            assert checkpoints.done[0][1] == "complete"
            await assert_ledger_matches_exchange(service, fake, "the buy-in")
            outcomes: dict[str, list[str]] = {}
            for what, inject in FAULTS:
                posts = sum(fake.orders_by_client_id.values())
                inject(fake)
                outcomes[what] = []
                while fake.faults.pending() or sum(fake.orders_by_client_id.values()) == posts:
                    _, outcome = await checkpoints.next()
                    outcomes[what].append(outcome)
                await assert_ledger_matches_exchange(service, fake, what)
            assert not task.done()
            [rested] = RESTED  # left open past fill_timeout_secs, canceled, filled as the cancel landed
            assert rested.status == "FILLED" and rested.trades
            record = await service.ledger.order(rested.client_order_id)
            assert record is not None and record.status == "filled"
        print(f"\noutcomes by fault: {outcomes}; errors: {sorted({k for _, k in rec.errors})}")
        resent = [cid for cid, n in fake.orders_by_client_id.items() if n > 1]
        assert len(resent) == 1 and len(fake.orders_for(resent[0])) == 1, "only the 429 was resent, once accepted"
        assert {"rate_limited", "unknown_state", "bad_answer"} <= {k for _, k in rec.errors}
        assert "partial" in outcomes["a partial fill"]
    finally:
        await fake.stop()
