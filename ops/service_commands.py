"""Commands from MQTT (or any other control channel) carried out on the running service."""
from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine.types import Intent, Reason, Transfer
from ops.mqtt_commands import (
    Command,
    CommandResult,
    Deposit,
    Pause,
    Rebalance,
    Resume,
    Terminate,
    Withdraw,
)

if TYPE_CHECKING:
    from ops.service import Service

log = logging.getLogger(__name__)


class ServiceCommands:
    """pause, resume, rebalance, terminate, deposit, withdraw: each changes the engine and the ledger, or nothing."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def handle(self, portfolio: str, command: Command) -> CommandResult:
        """Carry out one validated command."""
        engine = self.service.engine
        if engine is None or portfolio not in engine.runtimes:
            return CommandResult(False, f"unknown portfolio {portfolio!r}")
        halted = self.service.check_halt()
        if halted is not None and not isinstance(command, Pause):
            return CommandResult(False, f"keel has halted trading ({halted}); fix the cause and restart")
        if isinstance(command, Pause):
            engine.pause(portfolio)
            return CommandResult(True, "paused: the trigger will not fire; drift is still computed")
        if isinstance(command, Resume):
            engine.resume(portfolio)
            self._dispatch(engine.take_intents())
            return CommandResult(True, "resumed")
        if isinstance(command, Rebalance):
            return self._intent(portfolio, Reason.MANUAL)
        if isinstance(command, Terminate):
            engine.pause(portfolio)
            if command.mode == "return":
                holdings = {a: str(q) for a, q in engine.runtimes[portfolio].portfolio.holdings.items() if q}
                return CommandResult(True, "terminated: assets returned as they are; keel no longer trades them",
                                     {"holdings": holdings})
            result = self._intent(portfolio, Reason.TERMINATE)
            return CommandResult(result.ok, "terminating: selling every coin to the quote" if result.ok else result.message,
                                 result.data)
        if isinstance(command, Deposit):
            return await self._deposit(portfolio, command)
        if isinstance(command, Withdraw):
            return await self._withdraw(portfolio, command)
        return CommandResult(False, f"unsupported command {type(command).__name__}")

    def _dispatch(self, intents: list[Intent]) -> None:
        if intents:
            self.service.dispatch(intents, time.time_ns())

    def _intent(self, portfolio: str, reason: Reason, **kw: Any) -> CommandResult:
        engine = self.service.engine
        assert engine is not None
        why = engine.busy(portfolio)
        if why is not None:
            return CommandResult(False, f"cannot {reason.value} now: {why}")
        intent = engine.request_rebalance(portfolio, reason, **kw)
        self._dispatch(engine.take_intents())
        if intent is None:
            return CommandResult(True, "nothing to trade")
        return CommandResult(True, f"intent {intent.id} sent", {"intent": intent.id, "legs": len(intent.legs)})

    async def _deposit(self, portfolio: str, cmd: Deposit) -> CommandResult:
        service = self.service
        engine, ledger = service.engine, service.ledger
        assert engine is not None and ledger is not None
        rt = engine.runtimes[portfolio]
        if cmd.asset not in rt.portfolio.holdings:
            return CommandResult(False, f"{cmd.asset} is not an asset of {portfolio} ({', '.join(rt.portfolio.assets)})")
        await ledger.record_transfer(Transfer(f"{portfolio}-dep-{cmd.id}", portfolio, cmd.asset, cmd.amount,
                                              time.time_ns()), "deposit")
        engine.transfer(portfolio, cmd.asset, cmd.amount)
        result = self._intent(portfolio, Reason.DEPOSIT) if cmd.asset == rt.spec.quote else CommandResult(True, "")
        return CommandResult(True, f"deposited {cmd.amount} {cmd.asset}; {result.message}".rstrip("; "), result.data)

    async def _withdraw(self, portfolio: str, cmd: Withdraw) -> CommandResult:
        service = self.service
        engine, ledger = service.engine, service.ledger
        assert engine is not None and ledger is not None
        rt = engine.runtimes[portfolio]
        quote = rt.spec.quote
        free = rt.portfolio.holdings[quote]
        if cmd.amount > Decimal(repr(rt.portfolio.value())):
            return CommandResult(False, f"cannot withdraw {cmd.amount} {quote}: the portfolio is worth less")
        if free >= cmd.amount:
            await ledger.record_transfer(Transfer(f"{portfolio}-wd-{cmd.id}", portfolio, quote, -cmd.amount,
                                                  time.time_ns()), "withdraw")
            engine.transfer(portfolio, quote, -cmd.amount)
            return CommandResult(True, f"withdrew {cmd.amount} {quote}")
        result = self._intent(portfolio, Reason.WITHDRAW, withdraw=cmd.amount - free)
        if not result.ok:
            return result
        return CommandResult(True, f"selling pro rata to free {cmd.amount - free} {quote}; withdraw again once filled",
                             result.data)
