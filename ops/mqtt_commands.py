"""Commands that arrive over MQTT: strict parsing into frozen messages, the handler protocol, answers.

A command is a JSON object on `<prefix><portfolio>/cmd`, for example
`{"id": "c-17", "cmd": "deposit", "asset": "USDT", "amount": "250.5"}`; the answer goes to
`<prefix><portfolio>/cmd/result` as `{"id": "c-17", "cmd": "deposit", "ok": true, "message": "...", "data": {}}`.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol

import msgspec
import orjson

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 4096
COMMAND_QUEUE = 64
MAX_ANSWERS = 1000
COMMAND_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
ASSET_PATTERN = r"^[A-Z0-9]{1,20}$"
AMOUNT_PATTERN = r"^[0-9]{1,30}(\.[0-9]{1,30})?$"

CommandId = Annotated[str, msgspec.Meta(pattern=COMMAND_ID_PATTERN)]
AssetCode = Annotated[str, msgspec.Meta(pattern=ASSET_PATTERN)]
AmountText = Annotated[str, msgspec.Meta(pattern=AMOUNT_PATTERN)]


@dataclass(frozen=True, slots=True)
class Pause:
    """Stop the portfolio's trigger from firing; drift and metrics keep flowing."""

    id: str


@dataclass(frozen=True, slots=True)
class Resume:
    """Let the trigger fire again."""

    id: str


@dataclass(frozen=True, slots=True)
class Rebalance:
    """Rebalance now (a manual intent)."""

    id: str


@dataclass(frozen=True, slots=True)
class Terminate:
    """End the portfolio: `sell` everything to the quote, or `return` the coins as they are."""

    id: str
    mode: Literal["sell", "return"]


@dataclass(frozen=True, slots=True)
class Deposit:
    """Add `amount` (> 0) of `asset` to the portfolio."""

    id: str
    asset: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Take `amount` (> 0, in the quote currency) out of the portfolio, selling pro rata."""

    id: str
    amount: Decimal


Command = Pause | Resume | Rebalance | Terminate | Deposit | Withdraw


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What the handler answers: success, a human message and optional details."""

    ok: bool
    message: str
    data: dict[str, Any] = field(default_factory=dict)


class CommandHandler(Protocol):
    """Carries out a validated command for one portfolio (implemented by the service)."""

    async def handle(self, portfolio: str, command: Command) -> CommandResult:
        """Do it and say how it went."""
        ...


class CommandRejected(ValueError):
    """A command that failed validation; `command_id` is echoed in the answer when it was readable."""

    def __init__(self, message: str, command_id: str | None = None) -> None:
        super().__init__(message)
        self.command_id = command_id


class _Wire(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="cmd"):
    id: CommandId


class _PauseWire(_Wire, frozen=True, tag="pause"):
    pass


class _ResumeWire(_Wire, frozen=True, tag="resume"):
    pass


class _RebalanceWire(_Wire, frozen=True, tag="rebalance"):
    pass


class _TerminateWire(_Wire, frozen=True, tag="terminate"):
    mode: Literal["sell", "return"]


class _DepositWire(_Wire, frozen=True, tag="deposit"):
    asset: AssetCode
    amount: AmountText


class _WithdrawWire(_Wire, frozen=True, tag="withdraw"):
    amount: AmountText


_WireCommand = _PauseWire | _ResumeWire | _RebalanceWire | _TerminateWire | _DepositWire | _WithdrawWire


def _positive(text: str, command_id: str) -> Decimal:
    amount = Decimal(text)
    if amount <= 0:
        raise CommandRejected(f"amount {text!r} must be positive", command_id)
    return amount


def _readable_id(obj: object) -> str | None:
    """The command's id when it is a well-formed string, so an error answer can name it."""
    if isinstance(obj, dict):
        cid = obj.get("id")
        if isinstance(cid, str) and len(cid) <= 64:
            try:
                return msgspec.convert(cid, CommandId)
            except msgspec.ValidationError:
                return None
    return None


def _one_line(text: str, limit: int = 300) -> str:
    """A reason safe to log and echo: control characters escaped, length capped."""
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


def parse_command(payload: bytes) -> Command:
    """Validate one command payload strictly; raises CommandRejected with a one-line reason."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandRejected(f"command is {len(payload)} bytes; the limit is {MAX_COMMAND_BYTES}")
    try:
        obj = msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise CommandRejected(_one_line(f"invalid JSON: {e}")) from None
    command_id = _readable_id(obj)
    try:
        wire = msgspec.convert(obj, _WireCommand)
    except msgspec.ValidationError as e:
        raise CommandRejected(_one_line(f"invalid command: {e}"), command_id) from None
    match wire:
        case _PauseWire():
            return Pause(wire.id)
        case _ResumeWire():
            return Resume(wire.id)
        case _RebalanceWire():
            return Rebalance(wire.id)
        case _TerminateWire():
            return Terminate(wire.id, wire.mode)
        case _DepositWire():
            return Deposit(wire.id, wire.asset, _positive(wire.amount, wire.id))
        case _WithdrawWire():
            return Withdraw(wire.id, _positive(wire.amount, wire.id))
    raise CommandRejected(f"unsupported command {wire!r}", command_id)  # unreachable: the union is closed


COMMAND_NAMES: dict[type, str] = {
    Pause: "pause", Resume: "resume", Rebalance: "rebalance", Terminate: "terminate", Deposit: "deposit",
    Withdraw: "withdraw",
}


def command_name(command: Command) -> str:
    """The wire name of a command (`pause`, `deposit`, ...)."""
    return COMMAND_NAMES[type(command)]


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def answer_payload(command_id: str | None, cmd: str | None, result: CommandResult) -> bytes:
    """The JSON answer published on `<portfolio>/cmd/result`."""
    body = {"id": command_id, "cmd": cmd, "ok": result.ok, "message": result.message, "data": result.data}
    return orjson.dumps(body, default=_json_default)


class CommandCounters(Protocol):
    """Where the desk counts (the bridge's MqttCounters)."""

    commands_ok: int
    commands_error: int
    answers_dropped: int


class CommandDesk:
    """Takes commands off the connection, runs them one at a time for the bridge's lifetime, keeps the answers.

    Commands run outside any connection, so a lost connection never cancels one half-way; answers wait here
    (at most MAX_ANSWERS, oldest dropped first) until a connection publishes them.
    """

    def __init__(self, prefix: str, portfolios: Collection[str], handler: CommandHandler, counters: CommandCounters,
                 notify: Callable[[], None]) -> None:
        self._prefix = prefix
        self._portfolios = frozenset(portfolios)
        self._handler = handler
        self._counters = counters
        self._notify = notify
        self._inbox: asyncio.Queue[tuple[str, Command | CommandRejected]] = asyncio.Queue(COMMAND_QUEUE)
        self._answers: collections.deque[tuple[str, bytes]] = collections.deque()
        self._answer_ready = asyncio.Event()

    def take(self, topic: str, payload: bytes, retained: bool) -> None:
        """Validate a message from `<prefix><portfolio>/cmd` and queue it (or an error answer) for `run`."""
        if not (topic.startswith(self._prefix) and topic.endswith("/cmd")):
            return
        portfolio = topic[len(self._prefix):-len("/cmd")]
        item: Command | CommandRejected
        try:
            item = parse_command(payload)
        except CommandRejected as rejected:
            item = rejected
        if not isinstance(item, CommandRejected):
            if retained:
                item = CommandRejected("retained commands are not executed; publish with retain=false", item.id)
            elif portfolio not in self._portfolios:
                item = CommandRejected(f"unknown portfolio {portfolio!r}", item.id)
        try:
            self._inbox.put_nowait((portfolio, item))
        except asyncio.QueueFull:
            command_id = item.command_id if isinstance(item, CommandRejected) else item.id
            self._counters.commands_error += 1
            log.warning("MQTT command queue full; command %s for %s refused", command_id, portfolio)
            self._answer(portfolio, answer_payload(command_id, None, CommandResult(False, "busy; try again")))

    async def run(self) -> None:
        """Execute queued commands in arrival order, until cancelled."""
        while True:
            portfolio, item = await self._inbox.get()
            if isinstance(item, CommandRejected):
                self._counters.commands_error += 1
                log.warning("MQTT command for %s rejected: %s", portfolio, item)
                self._answer(portfolio, answer_payload(item.command_id, None, CommandResult(False, str(item))))
                self._notify()
                continue
            name = command_name(item)
            try:
                result = await self._handler.handle(portfolio, item)
            except Exception as e:  # command boundary: one failing command must not stop the others
                log.exception("MQTT command %s %s for %s failed", name, item.id, portfolio)
                result = CommandResult(False, f"{name} failed: {type(e).__name__}: {e}")
            if result.ok:
                self._counters.commands_ok += 1
            else:
                self._counters.commands_error += 1
            log.info("MQTT command %s %s for %s: ok=%s %s", name, item.id, portfolio, result.ok, result.message)
            self._answer(portfolio, answer_payload(item.id, name, result))
            self._notify()

    async def publish_answers(self, publish: Callable[[str, bytes], Awaitable[None]]) -> None:
        """Publish answers as they come (one at a time; each is dropped only once `publish` returned)."""
        while True:
            self._answer_ready.clear()
            while self._answers:
                topic, payload = self._answers[0]
                await publish(topic, payload)
                self._answers.popleft()
            await self._answer_ready.wait()

    def _answer(self, portfolio: str, payload: bytes) -> None:
        if len(self._answers) >= MAX_ANSWERS:
            self._answers.popleft()
            self._counters.answers_dropped += 1
        self._answers.append((f"{self._prefix}{portfolio}/cmd/result", payload))
        self._answer_ready.set()
