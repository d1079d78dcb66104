"""Pieces shared by the tests that run the whole service: config TOML sections and a hook on finished intents."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from engine.types import Intent, Reason

if TYPE_CHECKING:
    from ops.service import Service

CORE_TARGETS = {"BTC": 0.4, "ETH": 0.3, "SOL": 0.1, "USDT": 0.2}
SPOT_TARGETS = {"BTC": 0.5, "ETH": 0.3, "USDT": 0.2}
HALVES = {"BTC": 0.5, "ETH": 0.5}
LEDGER_TOML = '[ledger]\npath = "{ledger}"\n'  # the caller formats `ledger=`
METRICS_OFF_TOML = "[metrics]\nenabled = false\n"


def toml_value(value: object) -> str:
    """A Python value as TOML writes it: `"text"`, `true`, `0.3`, `10000`."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value}"


def toml_keys(values: Mapping[str, object]) -> str:
    """One `key = value` line per item, in order."""
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items())


def portfolio_toml(name: str, *, targets: Mapping[str, float] = CORE_TARGETS, capital: int = 10000,
                   **rebalance: object) -> str:
    """The [portfolio] table with its [portfolio.targets] and the [rebalance] keys, in the order given."""
    return (f'\n[portfolio]\nname = "{name}"\ncapital = {capital}\n[portfolio.targets]\n{toml_keys(targets)}'
            f"[rebalance]\n{toml_keys(rebalance)}")


def sim_feed_toml(**feed: object) -> str:
    """The [feed] section of the embedded exchange simulator with these keys, in the order given."""
    return f'[feed]\nsource = "sim"\n{toml_keys(feed)}'


def count_done(service: Service, enough: int,
               counts: Callable[[Intent, str], bool]) -> tuple[list[Intent], asyncio.Event]:
    """Wrap `service.on_done`: the finished intents `counts(intent, outcome)` accepts, and an event set at `enough`."""
    done: list[Intent] = []
    reached = asyncio.Event()
    on_done = service.on_done

    def counting(intent: Intent, outcome: str) -> None:
        on_done(intent, outcome)
        if counts(intent, outcome):
            done.append(intent)
            if len(done) >= enough:
                reached.set()

    service.on_done = counting  # type: ignore[method-assign]
    return done, reached


def by_threshold(intent: Intent, outcome: str) -> bool:
    """An intent the threshold trigger decided, whatever its outcome."""
    return intent.reason is Reason.THRESHOLD


def completed(intent: Intent, outcome: str) -> bool:
    """An intent that finished complete, whatever decided it."""
    return outcome == "complete"
