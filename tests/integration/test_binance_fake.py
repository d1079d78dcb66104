"""The fake Binance spot server, spoken to with raw signed HTTP requests on 127.0.0.1."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import pytest
import pytest_asyncio

from ops.venues.binance_fake import CANCEL_ORDER, EXCHANGE_INFO, ORDER, BinanceFake, Fault, SymbolSpec

KEY = "fake-test-key"
SECRET = "fake-test-secret"


class Client:
    """Signs requests the way Binance documents (HMAC-SHA256 of the query string, hex)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def call(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        *,
        key: str = KEY,
        secret: str = SECRET,
        signed: bool = True,
        timestamp_ms: int | None = None,
    ) -> tuple[int, Any, Any]:
        query = dict(params or {})
        headers: dict[str, str] = {}
        if signed:
            query["timestamp"] = str(timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000)
            encoded = urlencode(query)
            encoded += "&signature=" + hmac.new(secret.encode(), encoded.encode(), hashlib.sha256).hexdigest()
            headers["X-MBX-APIKEY"] = key
        else:
            encoded = urlencode(query)
        url, data = f"{self.base_url}{path}", None
        if method == "POST":
            data = encoded
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif encoded:
            url += "?" + encoded
        async with self.session.request(method, url, data=data, headers=headers) as response:
            text = await response.text()
            try:
                body = orjson.loads(text)
            except orjson.JSONDecodeError:
                body = text
            return response.status, body, response.headers

    async def order(self, cid: str, side: str = "BUY", quantity: str = "0.01", **extra: str) -> tuple[int, Any]:
        params = {"symbol": "BTCUSDT", "side": side, "type": "MARKET", "quantity": quantity,
                  "newClientOrderId": cid, "newOrderRespType": "FULL"} | extra
        if "quoteOrderQty" in extra:
            params.pop("quantity")
        status, body, _ = await self.call("POST", "/api/v3/order", params)
        return status, body


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[BinanceFake]:
    server = BinanceFake(KEY, SECRET, {"USDT": Decimal("10000"), "BTC": Decimal("1")},
                         {"BTC-USDT": SymbolSpec(step_size=Decimal("0.00001"), min_notional=Decimal("5"))})
    await server.start()
    server.set_price("BTC-USDT", "50000", "50010")
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def client(fake: BinanceFake) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(session, fake.base_url)


@pytest.mark.asyncio
async def test_exchange_info_lists_the_filters_ccxt_reads(client: Client) -> None:
    status, body, _ = await client.call("GET", "/api/v3/exchangeInfo", signed=False)
    assert status == 200
    [symbol] = body["symbols"]
    assert (symbol["symbol"], symbol["status"], symbol["baseAsset"], symbol["quoteAsset"]) == (
        "BTCUSDT", "TRADING", "BTC", "USDT")
    assert "MARKET" in symbol["orderTypes"] and "LIMIT" in symbol["orderTypes"]
    filters = {f["filterType"]: f for f in symbol["filters"]}
    assert set(filters) == {"PRICE_FILTER", "LOT_SIZE", "NOTIONAL", "MIN_NOTIONAL"}
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    assert filters["NOTIONAL"]["minNotional"] == filters["MIN_NOTIONAL"]["minNotional"] == "5.00000000"
    assert (await client.call("GET", "/api/v3/ping", signed=False))[1] == {}
    assert abs((await client.call("GET", "/api/v3/time", signed=False))[1]["serverTime"] - time.time() * 1000) < 5000


@pytest.mark.asyncio
async def test_signature_and_api_key_are_checked(client: Client, fake: BinanceFake) -> None:
    status, body, _ = await client.call("GET", "/api/v3/account", secret="wrong")
    assert (status, body["code"], body["msg"]) == (400, -1022, "Signature for this request is not valid.")
    status, body, _ = await client.call("GET", "/api/v3/account", key="wrong")
    assert (status, body["code"]) == (401, -2015)
    status, body, _ = await client.call("GET", "/api/v3/account", timestamp_ms=time.time_ns() // 1_000_000 - 60_000)
    assert (status, body["code"]) == (400, -1021)
    status, body, _ = await client.call("POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                                                  "quantity": "0.01", "newClientOrderId": "c1"},
                                        secret="wrong")
    assert (status, body["code"]) == (400, -1022)
    assert fake.orders_by_client_id["c1"] == 1 and fake.orders_for("c1") == []
    status, body, _ = await client.call("GET", "/api/v3/account")
    assert status == 200
    assert {b["asset"]: b["free"] for b in body["balances"]} == {"BTC": "1.00000000", "USDT": "10000.00000000"}


@pytest.mark.asyncio
async def test_market_orders_fill_at_the_touch_with_fee_in_quote(client: Client, fake: BinanceFake) -> None:
    status, buy = await client.order("b1")
    assert status == 200 and (buy["status"], buy["executedQty"], buy["clientOrderId"]) == ("FILLED", "0.01000000", "b1")
    assert buy["fills"] == [{"price": "50010.00000000", "qty": "0.01000000", "commission": "0.50010000",
                             "commissionAsset": "USDT", "tradeId": 1}]
    status, sell = await client.order("s1", side="SELL", quantity="0.02")
    assert sell["fills"][0]["price"] == "50000.00000000" and sell["cummulativeQuoteQty"] == "1000.00000000"
    assert fake.balances == {"USDT": Decimal("10498.3999"), "BTC": Decimal("0.99")}
    status, by_quote = await client.order("q1", quoteOrderQty="100")
    assert by_quote["executedQty"] == "0.00199000" and by_quote["origQuoteOrderQty"] == "100.00000000"


@pytest.mark.asyncio
async def test_refusals_use_binance_codes(client: Client, fake: BinanceFake) -> None:
    assert (await client.order("r1", quantity="1"))[1] == {
        "code": -2010, "msg": "Account has insufficient balance for requested action."}
    assert (await client.order("r2", quantity="0.00001"))[1] == {"code": -1013, "msg": "Filter failure: NOTIONAL"}
    assert (await client.order("r3", quantity="0.000015"))[1] == {"code": -1013, "msg": "Filter failure: LOT_SIZE"}
    assert (await client.order("bad id!"))[1]["code"] == -1100
    await client.order("d1")
    status, body = await client.order("d1")
    assert (status, body) == (400, {"code": -2010, "msg": "Duplicate order sent."})
    assert fake.orders_by_client_id["d1"] == 2 and len(fake.orders_for("d1")) == 1
    assert fake.orders_for("r1") == fake.orders_for("r2") == fake.orders_for("r3") == []


@pytest.mark.asyncio
async def test_open_only_duplicates_allow_reuse_of_a_closed_client_id() -> None:
    fake = BinanceFake(KEY, SECRET, {"USDT": Decimal("10000")}, {"BTC-USDT": SymbolSpec()}, duplicate_ids="open_only")
    await fake.start()
    fake.set_price("BTC-USDT", "50000", "50010")
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(session, fake.base_url)
            assert (await client.order("again"))[0] == 200
            assert (await client.order("again"))[0] == 200  # real Binance: unique among open orders only
    finally:
        await fake.stop()
    assert len(fake.orders_for("again")) == 2


@pytest.mark.asyncio
async def test_queries_cancels_and_trades(client: Client, fake: BinanceFake) -> None:
    _, placed = await client.order("q1")
    _, by_client = (await client.call("GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "q1"}))[:2]
    _, by_id = (await client.call("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": str(placed["orderId"])}))[:2]
    assert by_client == by_id and by_client["status"] == "FILLED" and "fills" not in by_client
    status, missing, _ = await client.call("GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "nope"})
    assert (status, missing["code"]) == (400, -2013)
    _, trades, _ = await client.call("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", "orderId": str(placed["orderId"])})
    assert [(t["id"], t["qty"], t["isBuyer"]) for t in trades] == [(1, "0.01000000", True)]

    rest = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
            "price": "40000", "newClientOrderId": "g1"}
    _, resting, _ = await client.call("POST", "/api/v3/order", rest)
    assert resting["status"] == "NEW" and fake.spot.locked["USDT"] == Decimal("400.4")
    _, open_orders, _ = await client.call("GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"})
    assert [o["clientOrderId"] for o in open_orders] == ["g1"]
    _, canceled, _ = await client.call("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "g1"})
    assert (canceled["status"], canceled["origClientOrderId"]) == ("CANCELED", "g1")
    assert fake.spot.locked["USDT"] == 0
    status, again, _ = await client.call("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "g1"})
    assert (status, again["code"]) == (400, -2011)


@pytest.mark.asyncio
async def test_resting_order_fills_when_the_price_crosses_and_cancel_races_a_fill(client: Client, fake: BinanceFake) -> None:
    rest = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
            "price": "40000"}
    await client.call("POST", "/api/v3/order", rest | {"newClientOrderId": "g1"})
    fake.set_price("BTC-USDT", "39990", "39995")
    [order] = fake.orders_for("g1")
    assert (order.status, order.executed_qty, fake.trades[-1].price) == ("FILLED", Decimal("0.01"), Decimal("40000"))

    fake.set_price("BTC-USDT", "50000", "50010")
    await client.call("POST", "/api/v3/order", rest | {"newClientOrderId": "g2"})
    fake.inject(Fault.fill_on_cancel(Decimal("0.5")))
    _, canceled, _ = await client.call("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "g2"})
    assert (canceled["status"], canceled["executedQty"]) == ("CANCELED", "0.00500000")


@pytest.mark.asyncio
async def test_rate_limits_for_the_next_n_requests(client: Client, fake: BinanceFake) -> None:
    fake.inject(Fault.rate_limited(retry_after_secs=9, times=2))
    for _ in range(2):
        status, body, headers = await client.call("POST", "/api/v3/order", {"symbol": "BTCUSDT"})
        assert (status, body["code"], headers["Retry-After"]) == (429, -1003, "9")
    assert (await client.order("after"))[0] == 200
    fake.inject(Fault.banned(retry_after_secs=60, endpoint=EXCHANGE_INFO))
    status, body, headers = await client.call("GET", "/api/v3/exchangeInfo", signed=False)
    assert (status, headers["Retry-After"]) == (418, "60") and "banned until" in body["msg"]


@pytest.mark.asyncio
async def test_server_errors_before_and_after_placing(client: Client, fake: BinanceFake) -> None:
    fake.inject(Fault.server_error(503))
    assert (await client.order("e1"))[0] == 503
    assert fake.orders_for("e1") == []
    fake.inject(Fault.server_error(500, processed=True))
    status, body = await client.order("e2")
    assert (status, body["code"]) == (500, -1007)
    assert fake.orders_for("e2")[0].status == "FILLED"


@pytest.mark.asyncio
async def test_broken_json_and_shaped_fills(client: Client, fake: BinanceFake) -> None:
    fake.inject(Fault.broken_json())
    status, body = await client.order("j1")
    assert status == 200 and isinstance(body, str) and body.startswith('{"symbol"')
    assert fake.orders_for("j1")[0].status == "FILLED"
    fake.inject(Fault.partial_fill(Decimal("0.25")))
    _, partial = await client.order("p1")
    assert (partial["status"], partial["executedQty"]) == ("EXPIRED", "0.00250000")
    fake.inject(Fault.worse_price(Decimal("100"), endpoint=ORDER))
    _, worse = await client.order("w1", side="SELL")
    assert worse["fills"][0]["price"] == "49500.00000000"
    fake.inject(Fault.insufficient_balance())
    assert (await client.order("i1"))[1]["code"] == -2010
    fake.inject(Fault.min_notional())
    assert (await client.order("n1"))[1] == {"code": -1013, "msg": "Filter failure: NOTIONAL"}
    assert fake.faults.pending() == 0


@pytest.mark.asyncio
async def test_hang_places_the_order_then_holds_the_answer(fake: BinanceFake) -> None:
    fake.inject(Fault.hang(30, processed=True))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as session:
        with pytest.raises(asyncio.TimeoutError):
            await Client(session, fake.base_url).order("h1")
    assert fake.orders_for("h1")[0].status == "FILLED"
    assert fake.orders_by_client_id["h1"] == 1
    fake.inject(Fault.hang(30, processed=False, endpoint=CANCEL_ORDER))
    assert fake.faults.pending() == 1


@pytest.mark.asyncio
async def test_fee_in_the_received_asset_and_malformed_numbers() -> None:
    fake = BinanceFake(KEY, SECRET, {"USDT": Decimal("1000")}, {"BTC-USDT": SymbolSpec()}, fee_in="received")
    await fake.start()
    fake.set_price("BTC-USDT", "50000", "50010")
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(session, fake.base_url)
            _, buy = await client.order("f1")
            status, bad, _ = await client.call("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", "limit": "many"})
    finally:
        await fake.stop()
    assert (buy["fills"][0]["commission"], buy["fills"][0]["commissionAsset"]) == ("0.00001000", "BTC")
    assert fake.balances == {"USDT": Decimal("499.9"), "BTC": Decimal("0.00999")}
    assert (status, bad["code"]) == (400, -1100)
