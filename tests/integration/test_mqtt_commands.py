"""MQTT commands through the bridge and a REAL mosquitto: each one reaches the handler parsed and is answered, a
malformed one is answered with the reason and never handled, and one the ACL forbids does nothing."""
from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from ops.ledger import Ledger
from ops.mqtt_commands import (
    Command,
    CommandRejected,
    Deposit,
    Pause,
    Rebalance,
    Resume,
    Terminate,
    Withdraw,
    parse_command,
)
from tests.integration.mqtt_kit import WAIT_SECS, Broker, Handler, Watcher, make_bridge, publish, running

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

VALID_COMMANDS: list[tuple[dict[str, str], Command]] = [
    ({"id": "c1", "cmd": "pause"}, Pause("c1")),
    ({"id": "c2", "cmd": "resume"}, Resume("c2")),
    ({"id": "c3", "cmd": "rebalance"}, Rebalance("c3")),
    ({"id": "c4", "cmd": "terminate", "mode": "sell"}, Terminate("c4", "sell")),
    ({"id": "c5", "cmd": "terminate", "mode": "return"}, Terminate("c5", "return")),
    ({"id": "c6", "cmd": "deposit", "asset": "USDT", "amount": "250.50"}, Deposit("c6", "USDT", Decimal("250.50"))),
    ({"id": "c7", "cmd": "withdraw", "amount": "0.001"}, Withdraw("c7", Decimal("0.001"))),
]


@pytest.mark.asyncio
async def test_each_command_reaches_the_handler_parsed_and_is_answered(broker: Broker, outbox: Ledger) -> None:
    handler = Handler()
    results = "keel/core/cmd/result"
    async with Watcher(broker.port, "operator", results, "keel/sat/cmd/result") as watcher:
        async with running(make_bridge(broker.port, outbox, handler=handler)) as bridge:
            await bridge.wait_until(lambda: bridge.connected, WAIT_SECS)
            for body, _ in VALID_COMMANDS:
                await publish(broker.port, "operator", "keel/core/cmd", orjson.dumps(body))
            await publish(broker.port, "operator", "keel/sat/cmd", b'{"id": "no-1", "cmd": "rebalance"}')
            await publish(broker.port, "operator", "keel/sat/cmd", b'{"id": "boom-1", "cmd": "pause"}')
            await watcher.until(lambda: len(watcher.payloads(results)) == len(VALID_COMMANDS))
            await watcher.until(lambda: len(watcher.payloads("keel/sat/cmd/result")) == 2)
            assert (bridge.counters.commands_ok, bridge.counters.commands_error) == (7, 2)

    assert handler.calls == [("core", c) for _, c in VALID_COMMANDS] + [("sat", Rebalance("no-1")), ("sat", Pause("boom-1"))]
    answers = [orjson.loads(p) for p in watcher.payloads(results)]
    assert [(a["id"], a["cmd"], a["ok"], a["data"]) for a in answers] == [
        (body["id"], body["cmd"], True, {"portfolio": "core"}) for body, _ in VALID_COMMANDS]
    assert answers[5]["message"] == "deposit done"
    refused, crashed = (orjson.loads(p) for p in watcher.payloads("keel/sat/cmd/result"))
    assert (refused["id"], refused["ok"], refused["message"]) == ("no-1", False, "rebalance refused")
    assert (crashed["id"], crashed["ok"]) == ("boom-1", False) and "venue exploded" in crashed["message"]


MALFORMED: list[tuple[str, bytes, str | None, str]] = [
    ("keel/core/cmd", b'{"id": "m1", "cmd": "explode"}', "m1", "Invalid value 'explode'"),
    ("keel/core/cmd", b'{"id": "m2", "cmd": "pause", "force": true}', "m2", "unknown field `force`"),
    ("keel/core/cmd", b'{"id": "m3", "cmd": "terminate", "mode": "burn"}', "m3", "$.mode"),
    ("keel/core/cmd", b'{"id": "m4", "cmd": "terminate"}', "m4", "missing required field `mode`"),
    ("keel/core/cmd", b'{"id": "m5", "cmd": "deposit", "asset": "USDT", "amount": 10}', "m5", "Expected `str`, got `int`"),
    ("keel/core/cmd", b'{"id": "m6", "cmd": "deposit", "asset": "USDT", "amount": "0"}', "m6", "must be positive"),
    ("keel/core/cmd", b'{"id": "m7", "cmd": "withdraw", "amount": "-5"}', "m7", "$.amount"),
    ("keel/core/cmd", b'{"id": "m8", "cmd": "withdraw", "amount": "NaN"}', "m8", "$.amount"),
    ("keel/core/cmd", b'{"id": "m9", "cmd": "withdraw", "amount": "1e3"}', "m9", "$.amount"),
    ("keel/core/cmd", b'{"id": "m10", "cmd": "deposit", "asset": "us dt", "amount": "1"}', "m10", "$.asset"),
    ("keel/core/cmd", b'{"id": 11, "cmd": "pause"}', None, "Expected `str`, got `int`"),
    ("keel/core/cmd", b'{"cmd": "pause"}', None, "missing required field `id`"),
    ("keel/core/cmd", b'{"id": "m13", "cmd": "pause"', None, "invalid JSON"),
    ("keel/core/cmd", b"\xff\xfe", None, "invalid JSON"),
    ("keel/core/cmd", b'["pause"]', None, "Expected `object`"),
    ("keel/core/cmd", b'{"id": "m16", "cmd": "pause", "pad": "' + b"x" * 4100 + b'"}', None, "limit is 4096"),
    ("keel/ghost/cmd", b'{"id": "m17", "cmd": "pause"}', "m17", "unknown portfolio 'ghost'"),
]


@pytest.mark.asyncio
async def test_malformed_commands_are_answered_with_an_error_and_never_reach_the_handler(
    broker: Broker, outbox: Ledger,
) -> None:
    handler = Handler()
    # A retained command would run again at every reconnect: it is refused when the subscription delivers it.
    await publish(broker.port, "operator", "keel/core/cmd", b'{"id": "m0", "cmd": "pause"}', retain=True)
    async with Watcher(broker.port, "operator", "keel/+/cmd/result") as watcher:
        async with running(make_bridge(broker.port, outbox, handler=handler)) as bridge:
            await watcher.until(lambda: len(watcher.received) == 1)
            for topic, payload, _, _ in MALFORMED:
                await publish(broker.port, "operator", topic, payload)
            await watcher.until(lambda: len(watcher.received) == len(MALFORMED) + 1)
            assert handler.calls == []
            await publish(broker.port, "operator", "keel/core/cmd", b'{"id": "ok-1", "cmd": "pause"}')
            await watcher.until(lambda: len(watcher.received) == len(MALFORMED) + 2)
            assert bridge.counters.commands_error == len(MALFORMED) + 1 and bridge.counters.commands_ok == 1

    answers = [(str(m.topic), orjson.loads(m.payload)) for m in watcher.received]  # type: ignore[arg-type]
    assert answers[0][1]["id"] == "m0" and "retained" in answers[0][1]["message"]
    for (topic, answer), (cmd_topic, _, expected_id, reason) in zip(answers[1:], MALFORMED, strict=False):
        assert topic == cmd_topic + "/result"
        assert (answer["id"], answer["ok"]) == (expected_id, False), answer
        assert reason in answer["message"], (reason, answer)
    assert answers[-1][1]["id"] == "ok-1" and answers[-1][1]["ok"] is True
    assert handler.calls == [("core", Pause("ok-1"))]


def test_parse_command_accepts_exact_decimals_and_refuses_an_empty_id() -> None:
    assert parse_command(b'{"id":"a","cmd":"withdraw","amount":"0.10000000000000000001"}') == Withdraw(
        "a", Decimal("0.10000000000000000001"))
    with pytest.raises(CommandRejected, match=r"\$\.id"):
        parse_command(b'{"id":"","cmd":"pause"}')


@pytest.mark.asyncio
async def test_a_command_from_a_client_the_acl_forbids_does_nothing(broker: Broker, outbox: Ledger) -> None:
    handler = Handler()
    async with Watcher(broker.port, "operator", "keel/core/cmd/result") as watcher:
        async with running(make_bridge(broker.port, outbox, handler=handler)) as bridge:
            await bridge.wait_until(lambda: bridge.connected, WAIT_SECS)
            await publish(broker.port, "viewer", "keel/core/cmd", b'{"id": "from-viewer", "cmd": "terminate", "mode": "sell"}')
            await publish(broker.port, "operator", "keel/core/cmd", b'{"id": "from-operator", "cmd": "pause"}')
            await watcher.until(lambda: len(watcher.received) >= 1)
    assert [orjson.loads(p)["id"] for p in watcher.payloads("keel/core/cmd/result")] == ["from-operator"]
    assert handler.calls == [("core", Pause("from-operator"))]
