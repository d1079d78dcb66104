"""The fake's answers in Binance spot's JSON shapes (exchangeInfo, account, order, myTrades)."""
from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from ops.venues.binance_fake.model import FakeOrder, FakeTrade, Market, fmt

Json = dict[str, Any]


def exchange_info(markets: Iterable[Market], now_ms: int) -> Json:
    """GET /api/v3/exchangeInfo."""
    return {
        "timezone": "UTC",
        "serverTime": now_ms,
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        ],
        "exchangeFilters": [],
        "symbols": [symbol_info(market) for market in markets],
    }


def symbol_info(market: Market) -> Json:
    """One entry of exchangeInfo's `symbols`, with the four filters ccxt reads."""
    spec = market.spec
    notional = fmt(spec.min_notional)
    return {
        "symbol": market.id, "status": spec.status,
        "baseAsset": market.base, "baseAssetPrecision": 8,
        "quoteAsset": market.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": list(spec.order_types),
        "icebergAllowed": True, "ocoAllowed": True, "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True, "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": fmt(spec.tick_size), "maxPrice": "1000000.00000000",
             "tickSize": fmt(spec.tick_size)},
            {"filterType": "LOT_SIZE", "minQty": fmt(spec.min_qty), "maxQty": fmt(spec.max_qty),
             "stepSize": fmt(spec.step_size)},
            {"filterType": "MIN_NOTIONAL", "minNotional": notional, "applyToMarket": True, "avgPriceMins": 5},
            {"filterType": "NOTIONAL", "minNotional": notional, "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def account(free: dict[str, Decimal], locked: dict[str, Decimal], fee_rate: Decimal, now_ms: int) -> Json:
    """GET /api/v3/account."""
    commission_bps = int(fee_rate * 10000)
    zero = Decimal(0)
    return {
        "makerCommission": commission_bps, "takerCommission": commission_bps,
        "buyerCommission": 0, "sellerCommission": 0,
        "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
        "requireSelfTradePrevention": False, "preventSor": False, "updateTime": now_ms,
        "accountType": "SPOT", "permissions": ["SPOT"], "uid": 1,
        "balances": [
            {"asset": asset, "free": fmt(free.get(asset, zero)), "locked": fmt(locked.get(asset, zero))}
            for asset in sorted(set(free) | set(locked))
        ],
    }


def order_json(order: FakeOrder, *, full: bool = False, now_ms: int = 0) -> Json:
    """An order as GET /api/v3/order shows it, or as POST answers with newOrderRespType=FULL."""
    body: Json = {
        "symbol": order.symbol, "orderId": order.order_id, "orderListId": -1,
        "clientOrderId": order.client_order_id, "price": fmt(order.price),
        "origQty": fmt(order.orig_qty), "executedQty": fmt(order.executed_qty),
        "origQuoteOrderQty": fmt(order.orig_quote_qty), "cummulativeQuoteQty": fmt(order.cum_quote),
        "status": order.status, "timeInForce": order.time_in_force, "type": order.type, "side": order.side,
        "workingTime": order.time_ms, "selfTradePreventionMode": "NONE",
    }
    if full:
        body["transactTime"] = now_ms or order.time_ms
        body["fills"] = [
            {"price": fmt(t.price), "qty": fmt(t.qty), "commission": fmt(t.commission),
             "commissionAsset": t.commission_asset, "tradeId": t.trade_id}
            for t in order.trades
        ]
    else:
        body |= {"stopPrice": "0.00000000", "icebergQty": "0.00000000", "time": order.time_ms,
                 "updateTime": order.update_ms, "isWorking": True}
    return body


def cancel_json(order: FakeOrder, cancel_client_id: str, now_ms: int) -> Json:
    """DELETE /api/v3/order: `clientOrderId` is the cancel's own id, `origClientOrderId` the order's."""
    body = order_json(order)
    for key in ("stopPrice", "icebergQty", "time", "updateTime", "isWorking", "workingTime"):
        body.pop(key, None)
    return body | {"origClientOrderId": order.client_order_id, "clientOrderId": cancel_client_id,
                   "transactTime": now_ms}


def trade_json(trade: FakeTrade) -> Json:
    """A trade as GET /api/v3/myTrades shows it."""
    return {
        "symbol": trade.symbol, "id": trade.trade_id, "orderId": trade.order_id, "orderListId": -1,
        "price": fmt(trade.price), "qty": fmt(trade.qty), "quoteQty": fmt(trade.quote_qty),
        "commission": fmt(trade.commission), "commissionAsset": trade.commission_asset,
        "time": trade.time_ms, "isBuyer": trade.side == "BUY", "isMaker": trade.is_maker,
        "isBestMatch": True,
    }
