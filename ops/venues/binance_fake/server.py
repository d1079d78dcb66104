"""A local Binance spot REST server (aiohttp, 127.0.0.1) speaking what ccxt's async binance calls."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from ops.venues.binance_fake import shapes
from ops.venues.binance_fake.faults import ORDER, Fault, FaultKind, FaultPlan, FillTweaks
from ops.venues.binance_fake.model import (
    CLIENT_ID_RE,
    BinanceError,
    FakeOrder,
    FakeTrade,
    SymbolSpec,
    filter_failure,
    insufficient_balance,
    mandatory,
    required,
)
from ops.venues.binance_fake.spot import FakeSpot

log = logging.getLogger(__name__)

Params = dict[str, str]
Handler = Callable[[Params, list[Fault]], Any]
_SIGNATURE_RE = re.compile(r"(^|&)signature=[^&]*")
_PROCESS_FIRST = frozenset({FaultKind.SERVER_ERROR, FaultKind.HANG})
_UNKNOWN_STATUS_MSG = "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
_FAILED_MSG = "Internal error; unable to process your request. Please try again."


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _error(exc: BinanceError, headers: dict[str, str] | None = None) -> web.Response:
    body = orjson.dumps({"code": exc.code, "msg": exc.msg})
    return web.Response(status=exc.status, body=body, content_type="application/json", headers=headers)


class BinanceFake:
    """Binance spot REST on 127.0.0.1 for ccxt: signed requests, balances, fills at a set price, faults."""

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        balances: dict[str, Decimal],
        symbols: dict[str, SymbolSpec],
        fee_rate: Decimal = Decimal("0.001"),
        *,
        fee_in: Literal["quote", "received"] = "quote",
        duplicate_ids: Literal["always", "open_only"] = "always",
    ) -> None:
        self._api_key = api_key
        self._secret = api_secret.encode()
        self._duplicate_ids = duplicate_ids
        self.spot = FakeSpot(balances, symbols, fee_rate, fee_in)
        self.faults = FaultPlan()
        self.orders_by_client_id: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self._routes: dict[str, tuple[Handler, bool]] = {
            "GET /api/v3/ping": (lambda p, f: {}, False),
            "GET /api/v3/time": (lambda p, f: {"serverTime": _now_ms()}, False),
            "GET /api/v3/exchangeInfo": (self._exchange_info, False),
            "GET /api/v3/account": (lambda p, f: shapes.account(
                self.spot.free, self.spot.locked, self.spot.fee_rate, _now_ms()), True),
            ORDER: (self._new_order, True),
            "GET /api/v3/order": (lambda p, f: shapes.order_json(self.spot.find(p)), True),
            "DELETE /api/v3/order": (self._cancel_order, True),
            "GET /api/v3/openOrders": (self._open_orders, True),
            "GET /api/v3/myTrades": (self._my_trades, True),
        }

    def __repr__(self) -> str:
        return f"BinanceFake({self.base_url or 'not started'})"

    async def start(self) -> str:
        """Listen on a free port of 127.0.0.1; returns the base URL (`http://127.0.0.1:PORT`)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        log.info("fake binance listening on %s", self.base_url)
        return self.base_url

    async def stop(self) -> None:
        """Release hanging requests and stop listening."""
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def set_price(self, symbol: str, bid: Decimal | str, ask: Decimal | str) -> None:
        """Quote `BTC-USDT`: market buys fill at `ask`, market sells at `bid`."""
        self.spot.set_price(symbol, Decimal(bid), Decimal(ask), _now_ms())

    def inject(self, fault: Fault) -> None:
        """Arm a fault for the next `fault.times` requests to its endpoint."""
        self.faults.inject(fault)

    @property
    def trades(self) -> list[FakeTrade]:
        """Every execution so far, oldest first."""
        return list(self.spot.trades)

    @property
    def balances(self) -> dict[str, Decimal]:
        """Free balance per asset."""
        return dict(self.spot.free)

    def orders_for(self, client_order_id: str) -> list[FakeOrder]:
        """Accepted orders that carry `client_order_id` (the venue should never make more than one)."""
        return [o for o in self.spot.orders.values() if o.client_order_id == client_order_id]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        endpoint = f"{request.method} {request.path}"
        self.requests[endpoint] += 1
        raw_query = request.rel_url.raw_query_string
        raw_body = await request.text()
        params: Params = dict(parse_qsl(raw_query, keep_blank_values=True))
        params |= dict(parse_qsl(raw_body, keep_blank_values=True))
        if endpoint == ORDER:
            self.orders_by_client_id[params.get("newClientOrderId", "")] += 1
        faults = self.faults.take(endpoint)
        route = self._routes.get(endpoint)
        if route is None:
            return _error(BinanceError(404, -1000, f"Unknown endpoint {endpoint}."))
        handler, signed = route
        try:
            early = await self._early_fault(faults)
            if early is not None:
                return early
            if signed:
                self._authenticate(request, raw_query, raw_body, params)
            for fault in faults:
                if fault.kind is FaultKind.INSUFFICIENT_BALANCE:
                    raise insufficient_balance()
                if fault.kind is FaultKind.MIN_NOTIONAL:
                    raise filter_failure("NOTIONAL")
            result = handler(params, faults)
        except BinanceError as exc:
            result = exc
        except (ValueError, ArithmeticError):
            result = BinanceError(400, -1100, "Illegal characters found in a parameter.")
        return await self._late_fault(faults, result)

    async def _early_fault(self, faults: list[Fault]) -> web.Response | None:
        for fault in faults:
            if fault.kind in (FaultKind.RATE_LIMITED, FaultKind.BANNED):
                headers = {} if fault.retry_after_secs is None else {"Retry-After": str(fault.retry_after_secs)}
                if fault.kind is FaultKind.BANNED:
                    until = _now_ms() + 1000 * (fault.retry_after_secs or 120)
                    msg = f"Way too much request weight used; IP banned until {until}. Please use WebSocket Streams for live updates to avoid bans."
                else:
                    msg = "Too much request weight used; current limit is 6000 request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."
                return _error(BinanceError(fault.status, -1003, msg), headers)
            if fault.kind in _PROCESS_FIRST and not fault.processed:
                if fault.kind is FaultKind.HANG:
                    await self._hang(fault.hang_secs)
                    return _error(BinanceError(503, -1001, _FAILED_MSG))
                return _error(BinanceError(fault.status, -1001, fault.message or _FAILED_MSG))
        return None

    async def _late_fault(self, faults: list[Fault], result: Any) -> web.Response:
        response = _error(result) if isinstance(result, BinanceError) else web.Response(
            body=orjson.dumps(result), content_type="application/json")
        for fault in faults:
            if fault.kind is FaultKind.HANG and fault.processed:
                await self._hang(fault.hang_secs)
            elif fault.kind is FaultKind.SERVER_ERROR and fault.processed:
                response = _error(BinanceError(fault.status, -1007, fault.message or _UNKNOWN_STATUS_MSG))
            elif fault.kind is FaultKind.BROKEN_JSON:
                body = response.body if isinstance(response.body, bytes) else b"{}"
                response = web.Response(status=200, body=body[: max(1, len(body) // 2)],
                                        content_type="application/json")
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(sum(self.requests.values()))
        return response

    async def _hang(self, secs: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._released.wait(), secs)

    def _authenticate(self, request: web.Request, raw_query: str, raw_body: str, params: Params) -> None:
        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            raise BinanceError(401, -2014, "API-key format invalid.")
        if not hmac.compare_digest(key.encode(), self._api_key.encode()):
            raise BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        signature = params.get("signature")
        if not signature:
            raise mandatory("signature")
        payload = _SIGNATURE_RE.sub("", raw_query).lstrip("&") + _SIGNATURE_RE.sub("", raw_body).lstrip("&")
        expected = hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise BinanceError(400, -1022, "Signature for this request is not valid.")
        timestamp = int(required(params, "timestamp"))
        recv_window = int(params.get("recvWindow") or 5000)
        now = _now_ms()
        if timestamp > now + 1000:
            raise BinanceError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - timestamp > recv_window:
            raise BinanceError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    def _exchange_info(self, params: Params, faults: list[Fault]) -> Any:
        wanted: set[str] | None = None
        if params.get("symbol"):
            wanted = {params["symbol"]}
        elif params.get("symbols"):
            wanted = {str(s) for s in orjson.loads(params["symbols"])}
        if wanted is not None:
            for symbol_id in wanted:
                self.spot.market(symbol_id)
        markets = [m for m in self.spot.markets.values() if wanted is None or m.id in wanted]
        return shapes.exchange_info(markets, _now_ms())

    def _new_order(self, params: Params, faults: list[Fault]) -> Any:
        client_id = params.get("newClientOrderId") or secrets.token_urlsafe(16)[:22]
        if not CLIENT_ID_RE.match(client_id):
            raise BinanceError(400, -1100, "Illegal characters found in parameter 'newClientOrderId'; "
                               "legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
        for order in self.orders_for(client_id):
            if self._duplicate_ids == "always" or order.status in ("NEW", "PARTIALLY_FILLED"):
                raise BinanceError(400, -2010, "Duplicate order sent.")
        now = _now_ms()
        order = self.spot.place(params, client_id, now, FillTweaks.from_faults(faults))
        log.debug("fake binance order %s %s %s %s -> %s", client_id, order.side, order.orig_qty, order.symbol,
                  order.status)
        kind = (params.get("newOrderRespType") or "FULL").upper()
        if kind == "ACK":
            return {"symbol": order.symbol, "orderId": order.order_id, "orderListId": -1,
                    "clientOrderId": client_id, "transactTime": now}
        body = shapes.order_json(order, full=True, now_ms=now)
        if kind == "RESULT":
            body.pop("fills")
        return body

    def _cancel_order(self, params: Params, faults: list[Fault]) -> Any:
        fill = next((f.fraction for f in faults if f.kind is FaultKind.FILL_ON_CANCEL), None)
        now = _now_ms()
        order = self.spot.cancel(params, fill, now)
        return shapes.cancel_json(order, params.get("newClientOrderId") or secrets.token_urlsafe(16)[:22], now)

    def _open_orders(self, params: Params, faults: list[Fault]) -> Any:
        symbol_id = params.get("symbol") or None
        if symbol_id is not None:
            self.spot.market(symbol_id)
        return [shapes.order_json(o) for o in self.spot.open_orders(symbol_id)]

    def _my_trades(self, params: Params, faults: list[Fault]) -> Any:
        market = self.spot.market(required(params, "symbol"))
        order_id = params.get("orderId")
        from_id = int(params.get("fromId") or 0)
        start, end = int(params.get("startTime") or 0), int(params.get("endTime") or 2**62)
        limit = min(int(params.get("limit") or 500), 1000)
        trades = [
            t for t in self.spot.trades
            if t.symbol == market.id and (not order_id or str(t.order_id) == order_id)
            and t.trade_id >= from_id and start <= t.time_ms <= end
        ]
        return [shapes.trade_json(t) for t in trades[:limit]]
