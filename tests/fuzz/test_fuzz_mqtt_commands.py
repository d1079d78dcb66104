"""Fuzzed MQTT command payloads: malformed JSON, wrong types, oversized, unknown commands, extra keys.

`parse_command` must turn every bad payload into `CommandRejected` (never another exception, never a
command), and every valid one into exactly the command it says. Over a real mosquitto, the real
`MqttBridge` must answer every bad payload with `ok: false` and never call the handler.
"""
from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import aiomqtt
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.mqtt_commands import (
    MAX_COMMAND_BYTES,
    Command,
    CommandRejected,
    CommandResult,
    Deposit,
    Pause,
    Rebalance,
    Resume,
    Terminate,
    Withdraw,
    command_name,
    parse_command,
)
from tests.fuzz import family
from tests.integration.mqtt_kit import USERS, fast_bridge, mqtt_config, running
from tests.integration.services import HOST, mosquitto

ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
ids = st.text(ID_CHARS, min_size=1, max_size=64)
assets = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=20)
amounts = st.builds(lambda whole, frac: whole + ("." + frac if frac else ""), st.text("0123456789", min_size=1, max_size=12),
                    st.text("0123456789", max_size=12)).filter(lambda a: Decimal(a) > 0)
BAD_IDS = ("", "x" * 65, "a b", "ü", "a/b", "a\nb", "a+b", "#")
BAD_ASSETS = ("usdt", "", "A" * 21, "US-DT", "US DT")
BAD_AMOUNTS = ("0", "0.0", "-1", "1e5", "1,5", ".5", "5.", "1" * 31, "NaN", "Infinity", " 1", "+1", "0x10")
BAD_MODES = ("SELL", "sell ", "burn", "")
UNKNOWN_CMDS = ("PAUSE", "stop", "", "deposit ", "shutdown", "exec", "__class__")
NON_STRINGS: tuple[Any, ...] = (1, 1.5, True, None, [], {}, ["pause"])
SHAPES = {"pause": (), "resume": (), "rebalance": (), "terminate": ("mode",), "deposit": ("asset", "amount"),
          "withdraw": ("amount",)}
INVALID_UTF8_IN_A_STRING = b'{"\xff\xfe": "0", "cmd": "pause"}'


def _invalid_utf8_is_rejected() -> bool:
    """True once parse_command turns invalid UTF-8 inside a JSON string into CommandRejected (see the xfail test)."""
    try:
        parse_command(INVALID_UTF8_IN_A_STRING)
    except CommandRejected:
        return True
    except UnicodeDecodeError:
        return False
    return False


MUTATIONS = ("drop_key", "extra_key", "wrong_type", "bad_id", "unknown_cmd", "bad_amount", "bad_asset", "bad_mode",
             "not_object", "malformed_json", "oversized", "random_bytes",
             *(("not_utf8",) if _invalid_utf8_is_rejected() else ()))


@st.composite
def valid_commands(draw: st.DrawFn) -> tuple[dict[str, Any], Command]:
    """A valid wire object and the command it must parse to."""
    cmd = draw(st.sampled_from(sorted(SHAPES)))
    cid = draw(ids)
    obj: dict[str, Any] = {"id": cid, "cmd": cmd}
    if cmd == "terminate":
        obj["mode"] = draw(st.sampled_from(["sell", "return"]))
        return obj, Terminate(cid, obj["mode"])
    if cmd == "deposit":
        obj["asset"], obj["amount"] = draw(assets), draw(amounts)
        return obj, Deposit(cid, obj["asset"], Decimal(obj["amount"]))
    if cmd == "withdraw":
        obj["amount"] = draw(amounts)
        return obj, Withdraw(cid, Decimal(obj["amount"]))
    return obj, {"pause": Pause, "resume": Resume, "rebalance": Rebalance}[cmd](cid)


@st.composite
def bad_payloads(draw: st.DrawFn) -> tuple[str, bytes]:
    """A payload that is wrong in one way, named."""
    obj, _ = draw(valid_commands())
    kind = draw(st.sampled_from(MUTATIONS))
    keys = ["id", "cmd", *SHAPES[obj["cmd"]]]
    if kind == "drop_key":
        del obj[draw(st.sampled_from(keys))]
    elif kind == "extra_key":
        extra = draw(st.text(max_size=12).filter(lambda k: k not in obj))
        obj[extra] = draw(st.sampled_from(["x", 1, None, [1], {"a": 1}]))
    elif kind == "wrong_type":
        obj[draw(st.sampled_from(keys))] = draw(st.sampled_from(NON_STRINGS))
    elif kind == "bad_id":
        obj["id"] = draw(st.sampled_from(BAD_IDS))
    elif kind == "unknown_cmd":
        obj["cmd"] = draw(st.sampled_from(UNKNOWN_CMDS))
    elif kind == "bad_amount":
        obj["cmd"], obj["amount"] = draw(st.sampled_from(["deposit", "withdraw"])), draw(st.sampled_from(BAD_AMOUNTS))
        if obj["cmd"] == "deposit":
            obj["asset"] = "USDT"
        obj.pop("mode", None)
        if obj["cmd"] == "withdraw":
            obj.pop("asset", None)
    elif kind == "bad_asset":
        obj = {"id": obj["id"], "cmd": "deposit", "asset": draw(st.sampled_from(BAD_ASSETS)), "amount": "1"}
    elif kind == "bad_mode":
        obj = {"id": obj["id"], "cmd": "terminate", "mode": draw(st.sampled_from(BAD_MODES))}
    elif kind == "not_object":
        return kind, orjson.dumps(draw(st.sampled_from([[obj], "pause", 42, None, True, []])))
    elif kind == "malformed_json":
        text = json.dumps(obj)
        return kind, draw(st.sampled_from([text[:-1], text + "}", text.replace('"', "'"), text + " x", "", "{",
                                           text.replace("{", "{/* c */", 1), "NaN"])).encode()
    elif kind == "oversized":
        return kind, json.dumps(obj).encode() + b" " * (MAX_COMMAND_BYTES + 1)
    elif kind == "random_bytes":
        return kind, draw(st.binary(min_size=0, max_size=200).filter(lambda b: not b.strip().startswith(b"{")))
    elif kind == "not_utf8":
        return kind, json.dumps(obj).encode().replace(b'"id"', b'"\xff\xfe"', 1)
    return kind, json.dumps(obj, ensure_ascii=False).encode()


@settings(max_examples=1000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(bad=bad_payloads())
def test_every_bad_payload_is_rejected_with_a_reason(bad: tuple[str, bytes]) -> None:
    kind, payload = bad
    tally = family("mqtt")
    tally.tried += 1
    tally.bad += 1
    try:
        command = parse_command(payload)
    except CommandRejected as rejected:
        tally.answered += 1
        if "\n" in str(rejected):
            tally.note("reject messages with a line break (from the payload)", 1)
        assert str(rejected)
        return
    except Exception:
        tally.crashes += 1
        raise
    tally.bad_trades += 1
    pytest.fail(f"{kind} payload {payload[:120]!r} parsed as {command!r}")


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(good=valid_commands(), spaces=st.sampled_from(["", " ", "\n", "\t "]))
def test_every_valid_payload_is_the_command_it_says(good: tuple[dict[str, Any], Command], spaces: str) -> None:
    obj, expected = good
    tally = family("mqtt")
    tally.tried += 1
    tally.note("valid payloads parsed", 1)
    payload = (spaces + json.dumps(obj) + spaces).encode()
    assert parse_command(payload) == expected
    assert command_name(expected) == obj["cmd"]


def test_invalid_utf8_inside_a_string_is_rejected_not_raised() -> None:
    with pytest.raises(CommandRejected):
        parse_command(INVALID_UTF8_IN_A_STRING)


def test_reject_reasons_are_one_line_whatever_the_payload() -> None:
    with pytest.raises(CommandRejected) as rejected:
        parse_command(b'{"id": "c-1", "cmd": "pause", "x\\nFAKE LOG LINE": 1}')
    assert "\n" not in str(rejected.value)


def test_a_duplicated_key_takes_the_last_value() -> None:
    """Documented behaviour of the JSON decoder (RFC 8259 leaves it open): the last value wins."""
    assert parse_command(b'{"id": "c-1", "cmd": "pause", "cmd": "resume"}') == Resume("c-1")


class RecordingHandler:
    """Records every call; the fuzz must never get here with a bad payload."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Command]] = []

    async def handle(self, portfolio: str, command: Command) -> CommandResult:
        self.calls.append((portfolio, command))
        return CommandResult(True, "done")


class NoOutbox:
    """An outbox that never has anything to publish."""

    def __init__(self) -> None:
        self.outbox_event = asyncio.Event()

    async def outbox_pending(self, limit: int) -> list[tuple[int, str, bytes]]:
        return []

    async def mark_published(self, seqs: object) -> None:
        return None


BROKER_SAMPLE = [
    b"", b"{", b"null", b"[]", b'"pause"', b"\xff\xfe", b"{}", b'{"cmd": "pause"}', b'{"id": "a"}',
    b'{"id": "a", "cmd": "pause", "extra": 1}', b'{"id": "a", "cmd": "stop"}', b'{"id": "a b", "cmd": "pause"}',
    b'{"id": "a", "cmd": "deposit", "asset": "USDT", "amount": "-1"}',
    b'{"id": "a", "cmd": "deposit", "asset": "USDT", "amount": 5}',
    b'{"id": "a", "cmd": "withdraw", "amount": "0"}', b'{"id": "a", "cmd": "withdraw", "amount": "1e9"}',
    b'{"id": "a", "cmd": "terminate", "mode": "burn"}', b'{"id": "a", "cmd": "terminate"}',
    b'{"id": 7, "cmd": "pause"}', b'{"id": "a", "cmd": "pause"}' + b" " * MAX_COMMAND_BYTES,
    b'{"id": "a", "cmd": "rebalance", "portfolio": "other"}', b"{'id': 'a', 'cmd': 'pause'}",
]


@pytest.mark.services
@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_over_a_real_broker_bad_commands_are_answered_and_never_handled() -> None:
    good = b'{"id": "good-1", "cmd": "pause"}'
    with mosquitto(users=USERS) as broker:
        async with aiomqtt.Client(HOST, broker.port, username="operator", password=USERS["operator"]) as ops:
            # A retained command waits at the broker: the bridge gets it on subscribe and must refuse it.
            await ops.publish("keel/core/cmd", b'{"id": "retained-1", "cmd": "rebalance"}', qos=1, retain=True)
            await ops.subscribe("keel/+/cmd/result", qos=1)
            handler = RecordingHandler()
            bridge = fast_bridge(mqtt_config(broker.port, "fuzz"), portfolios=["core"], snapshots=list,
                                 outbox=NoOutbox(), commands=handler)
            async with running(bridge):
                await bridge.wait_until(lambda: bridge.connected, 10.0)
                for payload in BROKER_SAMPLE:
                    await ops.publish("keel/core/cmd", payload, qos=1)
                await ops.publish("keel/ghost/cmd", good, qos=1)  # a valid command for no known portfolio
                await ops.publish("keel/core/cmd", good, qos=1)
                answers: list[tuple[str, dict[str, Any]]] = []
                async with asyncio.timeout(20):
                    async for message in ops.messages:
                        answers.append((str(message.topic), orjson.loads(message.payload)))  # type: ignore[arg-type]
                        if answers[-1][1]["id"] == "good-1" and answers[-1][0] == "keel/core/cmd/result":
                            break
    tally = family("mqtt")
    refused = [a for a in answers if not a[1]["ok"]]
    tally.tried += len(BROKER_SAMPLE) + 3
    tally.bad += len(BROKER_SAMPLE) + 2
    tally.answered += len(refused)
    tally.note("payloads sent through mosquitto", len(BROKER_SAMPLE) + 3)
    assert handler.calls == [("core", Pause("good-1"))]
    assert len(refused) == len(BROKER_SAMPLE) + 2
    assert answers[-1] == ("keel/core/cmd/result", {"id": "good-1", "cmd": "pause", "ok": True, "message": "done",
                                                     "data": {}})
    assert any("retained" in a[1]["message"] for a in refused)
    assert any(topic == "keel/ghost/cmd/result" and "unknown portfolio" in a["message"] for topic, a in refused)
    assert bridge.counters.commands_error == len(BROKER_SAMPLE) + 2
    assert bridge.counters.commands_ok == 1
