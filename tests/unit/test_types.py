"""The shared types' fast constructors build the very objects their dataclass constructors build."""
from __future__ import annotations

from dataclasses import FrozenInstanceError
from decimal import Decimal

import orjson
import pytest

from engine.types import Leg, Side, Tick, new_leg, new_tick


def test_the_fast_constructors_build_the_same_frozen_objects() -> None:
    tick = new_tick("BTC-USDT", 100.5, 100.7, 1, 2)
    assert tick == Tick("BTC-USDT", 100.5, 100.7, 1, 2) and hash(tick) == hash(Tick("BTC-USDT", 100.5, 100.7, 1, 2))
    assert orjson.dumps(tick) == orjson.dumps(Tick("BTC-USDT", 100.5, 100.7, 1, 2)) and tick.mid == 100.6
    assert new_tick("BTC-USDT", 1.0, 1.0, 1, 2) != tick
    leg = new_leg("ETH-USDT", Side.SELL, Decimal("0.5"), Decimal("2000"), Decimal("1000.0"))
    assert leg == Leg("ETH-USDT", Side.SELL, Decimal("0.5"), Decimal("2000"), Decimal("1000.0"))
    assert repr(leg) == repr(Leg("ETH-USDT", Side.SELL, Decimal("0.5"), Decimal("2000"), Decimal("1000.0")))
    with pytest.raises(FrozenInstanceError):
        tick.bid = 1.0  # type: ignore[misc]


def test_the_engine_builds_intents_positionally_in_this_field_order() -> None:
    from dataclasses import fields

    from engine.types import Intent

    assert [f.name for f in fields(Intent)] == [  # engine.Engine._fire passes them in this order
        "id", "portfolio", "ts_ns", "reason", "drift", "prices", "weights", "legs", "expected_residual_drift",
        "observe", "quote_reserve"]


def test_paper_fills_pass_the_fill_fields_in_this_order() -> None:
    from dataclasses import fields

    from engine.types import Fill

    assert [f.name for f in fields(Fill)] == [  # engine.paper.paper_fill passes them in this order
        "trade_id", "client_order_id", "symbol", "side", "quantity", "price", "fee", "fee_asset", "ts_ns", "order_id"]
