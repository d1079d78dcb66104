"""The ccxt venue: Binance spot (or another ccxt exchange) behind keel's `Venue` interface; never retries."""
from __future__ import annotations

import logging
import re
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, Literal

import aiohttp
import ccxt.async_support as ccxt_async
from ccxt.base import errors as cx

from engine.types import Fill, Order, Side, SymbolRules, split_symbol
from ops.venues.base import (
    BadVenueAnswer,
    InsufficientFunds,
    OrderRejected,
    OrderReport,
    OrderStatus,
    OrderUnknownState,
    RateLimited,
    VenueError,
    VenueUnavailable,
)

log = logging.getLogger(__name__)
_HTTP_LOG = logging.getLogger(__name__ + ".http")

_CODE_RE = re.compile(r'"code"\s*:\s*(-?\d+)')
_BANNED_UNTIL_RE = re.compile(r"banned until (\d{12,})")
_QUERY_RE = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")
_SECRET_HEADER_RE = re.compile(r"(?i)(['\"][^'\"]*(?:key|secret|sign|passphrase|token|auth)[^'\"]*['\"]\s*:\s*)['\"][^'\"]*['\"]")
_STATUS = {
    "NEW": OrderStatus.NEW, "PENDING_NEW": OrderStatus.NEW, "PENDING_CANCEL": OrderStatus.NEW,
    "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED, "FILLED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELED, "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED, "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
}
_UNIFIED_STATUS = {"closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELED,
                   "expired": OrderStatus.EXPIRED, "rejected": OrderStatus.REJECTED}
_AUTH_CODES = frozenset({-1002, -1022, -2014, -2015})
_NOT_FOUND_CODES = frozenset({-2011, -2013})
_FAILED_5XX_CODES = frozenset({-1001, -1008})
_PARSE_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, ArithmeticError)
Phase = Literal["order", "cancel", "lookup", "read"]  # writes may leave an order in an unknown state


class VenueAuthFailed(VenueError):
    """The venue refused the API key or the signature (bad key, secret, permissions or IP)."""

    kind = "auth"


class UnparsedOrderAnswer(BadVenueAnswer, OrderUnknownState):
    """The answer to an order did not parse: the order may exist, so look it up by client id."""


class _NotFound(Exception):
    """The venue does not know the order (internal: fetch and cancel turn it into None)."""


class _Redactor(logging.Filter):
    """Rewrites ccxt's HTTP debug records so that no key, secret or signature header is logged."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: Counter[str] = Counter()

    def scrub(self, text: str) -> str:
        text = _SECRET_HEADER_RE.sub(r"\1'***'", text)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return _QUERY_RE.sub(r"\1?<query>", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.scrub(record.getMessage()), None
        return True


_REDACTOR = _Redactor()
_HTTP_LOG.addFilter(_REDACTOR)


class _LastResponse:
    """HTTP status, headers and body of the latest answer, recorded from ccxt's `handle_errors` hook."""

    def __init__(self, exchange: Any) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = ""
        original = exchange.handle_errors

        def record(code: int, reason: str, url: str, method: str, headers: dict[str, str], body: str,
                   *rest: Any) -> Any:
            self.status, self.headers, self.body = code, dict(headers or {}), body or ""
            return original(code, reason, url, method, headers, body, *rest)

        exchange.handle_errors = record

    def reset(self) -> None:
        self.status, self.headers, self.body = None, {}, ""

    def retry_after(self) -> float | None:
        for name, value in self.headers.items():
            if name.lower() == "retry-after":
                try:
                    return max(0.0, float(value))
                except ValueError:
                    break
        banned = _BANNED_UNTIL_RE.search(self.body)
        return max(0.0, int(banned.group(1)) / 1000 - time.time()) if banned else None


def to_ccxt_symbol(symbol: str) -> str:
    """`BTC-USDT` -> `BTC/USDT`."""
    base, quote = split_symbol(symbol)
    return f"{base}/{quote}"


def from_ccxt_symbol(symbol: str) -> str:
    """`BTC/USDT` (or `BTC/USDT:USDT`) -> `BTC-USDT`."""
    base, _, quote = symbol.partition(":")[0].partition("/")
    return f"{base}-{quote}"


def _tidy(value: Decimal) -> Decimal:
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    return normal.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else normal


def _plain(value: Decimal) -> str:
    return format(value, "f")


class CcxtVenue:
    """A ccxt exchange session (spot) as a keel `Venue`; keys are passed in and never logged or shown."""

    def __init__(
        self,
        exchange_id: str = "binance",
        *,
        api_key: str,
        api_secret: str,
        base_url: str | None = None,
        sandbox: bool = False,
        timeout_secs: float = 10.0,
        order_type: Literal["market", "limit_ioc"] = "market",
        ioc_spread_bps: float = 10.0,
        price_of: Callable[[str], tuple[float, float]] | None = None,
        enable_rate_limit: bool = True,
    ) -> None:
        if order_type not in ("market", "limit_ioc"):
            raise ValueError(f"order_type must be 'market' or 'limit_ioc', got {order_type!r}")
        if order_type == "limit_ioc" and price_of is None:
            raise ValueError("order_type 'limit_ioc' needs price_of (the current bid and ask of a symbol)")
        if not timeout_secs > 0 or not ioc_spread_bps >= 0:
            raise ValueError(f"timeout_secs must be > 0 and ioc_spread_bps >= 0 ({timeout_secs}, {ioc_spread_bps})")
        exchange_class = getattr(ccxt_async, exchange_id, None)
        if not isinstance(exchange_class, type):
            raise ValueError(f"ccxt has no exchange {exchange_id!r}")
        if base_url is not None and not exchange_id.startswith("binance"):
            raise ValueError(f"base_url is only supported for binance, not {exchange_id!r}")
        self.name = exchange_id
        self._base_url = base_url
        self._order_type = order_type
        self._ioc_spread = Decimal(repr(ioc_spread_bps)) / 10000
        self._price_of = price_of
        self._exchange: Any = exchange_class({
            "apiKey": api_key, "secret": api_secret, "enableRateLimit": enable_rate_limit,
            "timeout": round(timeout_secs * 1000), "timeout_on_exit": 0, "logger": _HTTP_LOG,
            "options": {
                "defaultType": "spot", "fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                "fetchMargins": False, "adjustForTimeDifference": False,
                "maxRetriesOnFailure": 0, "maxRetriesOnFailureDelay": 0,
            },
        })
        if sandbox:
            self._exchange.set_sandbox_mode(True)
        if base_url is not None:
            base = base_url.rstrip("/")
            self._exchange.urls["api"] = {"public": base + "/api/v3", "private": base + "/api/v3",
                                          "v1": base + "/api/v1"}
        self._last = _LastResponse(self._exchange)
        self._secrets = tuple(s for s in (api_key, api_secret) if s)
        _REDACTOR.secrets.update(self._secrets)

    def __repr__(self) -> str:
        return f"CcxtVenue({self.name!r}, base_url={self._base_url!r}, order_type={self._order_type!r})"

    async def load_rules(self, symbols: list[str]) -> dict[str, SymbolRules]:
        """Step size (LOT_SIZE) and minimum notional (NOTIONAL / MIN_NOTIONAL) per symbol, exact."""
        markets = await self._call("read", self._exchange.load_markets, True)
        rules: dict[str, SymbolRules] = {}
        for symbol in symbols:
            market = markets.get(to_ccxt_symbol(symbol))
            if market is None:
                raise ValueError(f"{self.name} does not list {symbol} (ccxt symbol {to_ccxt_symbol(symbol)})")
            filters = {f.get("filterType"): f for f in market.get("info", {}).get("filters", []) if isinstance(f, dict)}
            step = filters.get("LOT_SIZE", {}).get("stepSize", market["precision"].get("amount"))
            notional = (filters.get("NOTIONAL", {}).get("minNotional")
                        or filters.get("MIN_NOTIONAL", {}).get("minNotional")
                        or market["limits"]["cost"].get("min") or 0)
            step_size = self._decimal(step, f"{symbol} step size", BadVenueAnswer)
            if step_size <= 0:
                raise BadVenueAnswer(f"{self.name} gave {symbol} a step size of {step_size}")
            rules[symbol] = SymbolRules(step_size, self._decimal(notional, f"{symbol} min notional", BadVenueAnswer))
        log.info("%s rules loaded for %d symbols", self.name, len(rules))
        return rules

    async def balances(self) -> dict[str, Decimal]:
        """Free balance per asset (assets with nothing free are left out)."""
        answer = await self._call("read", self._exchange.fetch_balance)
        info = answer.get("info") if isinstance(answer, dict) else None
        rows = info.get("balances") if isinstance(info, dict) else None
        if isinstance(rows, list):
            pairs = [(row.get("asset"), row.get("free")) for row in rows if isinstance(row, dict)]
        elif isinstance(answer, dict) and isinstance(answer.get("free"), dict):
            pairs = list(answer["free"].items())
        else:
            raise BadVenueAnswer(f"{self.name} balance answer does not parse")
        free = {str(asset): self._decimal(amount, f"free {asset}", BadVenueAnswer) for asset, amount in pairs}
        return {asset: amount for asset, amount in free.items() if amount > 0}

    async def place_order(self, order: Order) -> OrderReport:
        """Send one market order (or limit IOC) with `newClientOrderId = order.client_order_id`; no retry."""
        market = await self._market(order.symbol)
        params: dict[str, str] = {"newClientOrderId": order.client_order_id}
        price = self._limit_price(order, market)
        if price is not None:
            kind, size = "limit", order.quantity
            params |= {"timeInForce": "IOC", "quantity": _plain(size), "price": _plain(price)}
        elif order.side is Side.BUY and order.quote_quantity is not None:
            kind, size = "market", order.quote_quantity
            params["quoteOrderQty"] = _plain(size)
        else:
            kind, size = "market", order.quantity
            params["quantity"] = _plain(size)
        if not size > 0:
            raise OrderRejected(f"order {order.client_order_id}: size must be positive, got {size}")
        log.info("placing %s %s %s %s %s%s", order.client_order_id, kind, order.side.value, size, order.symbol,
                 f" at {price}" if price is not None else "")
        answer = await self._call("order", self._exchange.create_order, market["symbol"], kind,
                                  order.side.value, float(size), None if price is None else float(price), params)
        try:
            report = await self._report(answer, order.client_order_id, market, UnparsedOrderAnswer, order.side)
        except VenueError as exc:
            if isinstance(exc, OrderUnknownState):
                raise
            raise OrderUnknownState(f"order {order.client_order_id} sent but its fills could not be read: {exc}") from exc
        log.info("order %s %s: filled %s in %d fills", order.client_order_id, report.status.value,
                 report.filled_quantity, len(report.fills))
        return report

    async def fetch_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """Look an order up by client order id (`origClientOrderId`) with its trades; None when unknown."""
        market = await self._market(symbol)
        try:
            answer = await self._call("lookup", self._exchange.fetch_order, None, market["symbol"],
                                      {"origClientOrderId": client_order_id})
        except _NotFound:
            log.info("order %s is unknown to %s", client_order_id, self.name)
            return None
        return await self._report(answer, client_order_id, market, BadVenueAnswer, None)

    async def cancel_order(self, client_order_id: str, symbol: str) -> OrderReport | None:
        """Cancel an open order; an order already closed is fetched instead; None when unknown."""
        market = await self._market(symbol)
        try:
            answer = await self._call("cancel", self._exchange.cancel_order, None, market["symbol"],
                                      {"origClientOrderId": client_order_id})
        except _NotFound:
            return await self.fetch_order(client_order_id, symbol)
        log.info("order %s canceled", client_order_id)
        return await self._report(answer, client_order_id, market, BadVenueAnswer, None)

    async def close(self) -> None:
        """Close the HTTP session."""
        try:
            await self._exchange.close()
        finally:
            for secret in self._secrets:
                _REDACTOR.secrets[secret] -= 1
                if _REDACTOR.secrets[secret] <= 0:
                    del _REDACTOR.secrets[secret]

    async def _market(self, symbol: str) -> dict[str, Any]:
        markets = self._exchange.markets or await self._call("read", self._exchange.load_markets)
        market: dict[str, Any] | None = markets.get(to_ccxt_symbol(symbol))
        if market is None:
            raise OrderRejected(f"{self.name} does not list {symbol}")
        return market

    def _limit_price(self, order: Order, market: dict[str, Any]) -> Decimal | None:
        if order.price is not None:
            return order.price
        if self._order_type != "limit_ioc" or self._price_of is None:
            return None
        bid, ask = self._price_of(order.symbol)
        tick_raw = {f.get("filterType"): f for f in market["info"].get("filters", [])}.get(
            "PRICE_FILTER", {}).get("tickSize", market["precision"].get("price"))
        tick = self._decimal(tick_raw, f"{order.symbol} tick size", BadVenueAnswer)
        if order.side is Side.BUY:
            raw, rounding = Decimal(repr(ask)) * (1 + self._ioc_spread), ROUND_CEILING
        else:
            raw, rounding = Decimal(repr(bid)) * (1 - self._ioc_spread), ROUND_FLOOR
        if not raw.is_finite() or raw <= 0 or tick <= 0:
            raise OrderRejected(f"order {order.client_order_id}: no usable price for {order.symbol} ({bid}, {ask})")
        return _tidy((raw / tick).to_integral_value(rounding) * tick)

    async def _call(self, phase: Phase, method: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        self._last.reset()
        try:
            return await method(*args)
        except cx.BaseError as exc:
            error = self._translate(exc, phase)
        except _PARSE_ERRORS as exc:
            log.debug("%s answer broke ccxt's parser", self.name, exc_info=True)
            error = self._bad(phase, f"{self.name} answer does not parse ({type(exc).__name__})")
        if isinstance(error, VenueError):
            log.warning("%s %s failed: %s: %s", self.name, phase, error.kind, error)
        raise error from None

    def _bad(self, phase: Phase, text: str) -> VenueError:
        return UnparsedOrderAnswer(text) if phase == "order" else BadVenueAnswer(text)

    def _translate(self, exc: cx.BaseError, phase: Phase) -> Exception:
        """A ccxt error as a keel venue error, by HTTP status, then Binance code, then ccxt class."""
        status, body = self._last.status, self._last.body
        text = self._scrub(f"{type(exc).__name__}: {exc}")[:500]
        match = _CODE_RE.search(body) or _CODE_RE.search(str(exc))
        code = int(match.group(1)) if match else None
        writes = phase in ("order", "cancel")
        if status in (418, 429) or code in (-1003, -1015) or isinstance(exc, cx.DDoSProtection | cx.RateLimitExceeded):
            if code not in _AUTH_CODES:
                return RateLimited(text, self._last.retry_after())
        if status is not None and status >= 500:
            if writes and code not in _FAILED_5XX_CODES and "Service Unavailable" not in body:
                return OrderUnknownState(text)
            return VenueUnavailable(text)
        if code in _AUTH_CODES or isinstance(exc, cx.AuthenticationError):
            return VenueAuthFailed(text)
        if (code in _NOT_FOUND_CODES or isinstance(exc, cx.OrderNotFound)) and phase in ("cancel", "lookup"):
            return _NotFound(text)
        if isinstance(exc, cx.InsufficientFunds) or (code == -2010 and "insufficient balance" in body.lower()):
            return InsufficientFunds(text)
        if code == -1021 or isinstance(exc, cx.InvalidNonce):
            return VenueUnavailable(text)
        if status == 403:  # Binance's firewall refused the request
            return VenueUnavailable(text)
        if isinstance(exc, cx.InvalidOrder | cx.BadRequest | cx.OperationRejected) or (
                status is not None and 400 <= status < 500 and status != 408):
            return OrderRejected(text) if writes else BadVenueAnswer(text)
        if isinstance(exc, cx.BadResponse) or (status is not None and status < 300):
            return self._bad(phase, text)
        if isinstance(exc, cx.NetworkError | cx.ExchangeError | cx.OperationFailed) and status is None:
            cause = exc.__cause__
            never_sent = isinstance(cause, aiohttp.ClientConnectorError | socket.gaierror)
            return OrderUnknownState(text) if writes and not never_sent else VenueUnavailable(text)
        return OrderUnknownState(text) if writes else BadVenueAnswer(text)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _REDACTOR.scrub(text)

    def _decimal(self, value: Any, what: str, bad: type[VenueError]) -> Decimal:
        try:
            number = Decimal(value if isinstance(value, str | int) else repr(float(value)))
        except (InvalidOperation, TypeError, ValueError):
            raise bad(f"{self.name}: {what} is not a number: {str(value)[:40]!r}") from None
        if not number.is_finite() or number < 0:
            raise bad(f"{self.name}: {what} is not a finite non-negative number: {number}")
        return _tidy(number)

    async def _report(
        self, answer: Any, client_order_id: str, market: dict[str, Any], bad: type[VenueError], side: Side | None
    ) -> OrderReport:
        """Validate an order answer and build its report, reading its trades when the answer has no fills."""
        info = answer.get("info") if isinstance(answer, dict) else None
        if not isinstance(info, dict):
            raise bad(f"{self.name}: answer for order {client_order_id} does not parse")
        order_id = info.get("orderId", answer.get("id"))
        if order_id is None or str(order_id) == "":
            raise bad(f"{self.name}: answer for order {client_order_id} has no order id")
        order_id = str(order_id)
        seen_id = info.get("origClientOrderId") or info.get("clientOrderId") or answer.get("clientOrderId")
        if seen_id is not None and seen_id != client_order_id:
            raise bad(f"{self.name}: asked for order {client_order_id}, answer is about {seen_id}")
        if info.get("symbol") not in (None, market["id"]):
            raise bad(f"{self.name}: order {client_order_id} answer is for {info.get('symbol')}, not {market['id']}")
        raw_side = str(info.get("side") or answer.get("side") or "").lower()
        if raw_side not in ("buy", "sell") or (side is not None and raw_side != side.value):
            raise bad(f"{self.name}: order {client_order_id} answer has side {raw_side!r}")
        side = Side(raw_side)
        filled = self._decimal(info.get("executedQty", answer.get("filled")), "filled quantity", bad)
        status = _STATUS.get(str(info.get("status")))
        if status is None:
            unified = answer.get("status")
            status = _UNIFIED_STATUS.get(unified) if unified != "open" else (
                OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.NEW)
        if status is None:
            raise bad(f"{self.name}: order {client_order_id} has an unknown status {info.get('status')!r}")
        symbol = from_ccxt_symbol(market["symbol"])
        ts_ms = info.get("transactTime") or answer.get("timestamp")
        raw_fills = info.get("fills") if isinstance(info.get("fills"), list) else None
        if raw_fills is None and filled > 0:
            trades = await self._call("read", self._exchange.fetch_my_trades, market["symbol"], None, None,
                                      {"orderId": order_id})
            raw_fills = [t["info"] if isinstance(t, dict) and "qty" in (t.get("info") or {}) else t for t in trades]
        fills = tuple(self._fill(raw, client_order_id, order_id, symbol, side, ts_ms, bad) for raw in raw_fills or ())
        total = sum((fill.quantity for fill in fills), Decimal(0))
        if total > filled or ("fills" in info and total != filled):
            raise bad(f"{self.name}: order {client_order_id} fills add up to {total}, filled {filled}")
        if total < filled:
            log.warning("order %s: trades show %s of %s filled (trades lag)", client_order_id, total, filled)
        return OrderReport(client_order_id, order_id, symbol, status, filled, fills)

    def _fill(self, raw: Any, client_order_id: str, order_id: str, symbol: str, side: Side, ts_ms: Any,
              bad: type[VenueError]) -> Fill:
        if not isinstance(raw, dict):
            raise bad(f"{self.name}: a fill of order {client_order_id} does not parse")
        trade_id = raw.get("tradeId", raw.get("id"))
        if trade_id is None or str(raw.get("orderId", order_id)) != order_id:
            raise bad(f"{self.name}: a fill of order {client_order_id} has no trade id or another order id")
        quantity = self._decimal(raw.get("qty", raw.get("amount")), "fill quantity", bad)
        price = self._decimal(raw.get("price"), "fill price", bad)
        if quantity <= 0 or price <= 0:
            raise bad(f"{self.name}: fill {trade_id} of order {client_order_id} has quantity {quantity} at {price}")
        unified_fee: dict[str, Any] = raw["fee"] if isinstance(raw.get("fee"), dict) else {}
        fee = self._decimal(raw.get("commission", unified_fee.get("cost") or 0), "fill fee", bad)
        fee_asset = str(raw.get("commissionAsset", unified_fee.get("currency")) or "")
        when = raw.get("time") or raw.get("timestamp") or ts_ms
        ts_ns = int(when) * 1_000_000 if when else time.time_ns()
        return Fill(str(trade_id), client_order_id, symbol, side, quantity, price, fee, fee_asset, ts_ns, order_id)
