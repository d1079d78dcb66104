"""The fake's spot account and matching: market orders fill at the bid/ask, limits when they cross."""
from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from engine.types import split_symbol
from ops.venues.binance_fake.faults import FillTweaks
from ops.venues.binance_fake.model import (
    EIGHT,
    BinanceError,
    FakeOrder,
    FakeTrade,
    Market,
    SymbolSpec,
    decimal_param,
    filter_failure,
    floor_to,
    insufficient_balance,
    mandatory,
    on_grid,
    required,
)

BPS = Decimal(10000)
OPEN = ("NEW", "PARTIALLY_FILLED")


class FakeSpot:
    """Balances, quotes, orders and trades of one fake spot account."""

    def __init__(
        self,
        balances: dict[str, Decimal],
        symbols: dict[str, SymbolSpec],
        fee_rate: Decimal,
        fee_in: str = "quote",
    ) -> None:
        if fee_in not in ("quote", "received"):
            raise ValueError(f"fee_in must be 'quote' or 'received', got {fee_in!r}")
        self.fee_rate = fee_rate
        self.fee_in = fee_in
        self.free: dict[str, Decimal] = {asset: Decimal(amount) for asset, amount in balances.items()}
        self.locked: dict[str, Decimal] = {}
        self.markets: dict[str, Market] = {}
        for symbol, spec in symbols.items():
            base, quote = split_symbol(symbol)
            self.markets[base + quote] = Market(base + quote, base, quote, spec)
        self.orders: dict[int, FakeOrder] = {}
        self.trades: list[FakeTrade] = []
        self._next_order_id = 1
        self._next_trade_id = 1

    def set_price(self, symbol: str, bid: Decimal, ask: Decimal, now_ms: int) -> None:
        """Quote `BTC-USDT` at bid/ask; resting limit orders that now cross fill at their price."""
        base, quote = split_symbol(symbol)
        market = self.market(base + quote)
        if bid <= 0 or ask < bid:
            raise ValueError(f"bad quote for {symbol}: bid {bid}, ask {ask}")
        market.bid, market.ask = bid, ask
        for order in list(self.orders.values()):
            if order.symbol == market.id and order.status in OPEN:
                crosses = ask <= order.price if order.side == "BUY" else bid >= order.price
                if crosses:
                    self._execute(order, market, order.orig_qty - order.executed_qty, order.price, 1, now_ms)

    def market(self, symbol_id: str) -> Market:
        """A market by Binance id (`BTCUSDT`); -1121 when unknown."""
        market = self.markets.get(symbol_id)
        if market is None:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return market

    def place(self, params: dict[str, str], client_order_id: str, now_ms: int, tweaks: FillTweaks) -> FakeOrder:
        """Validate and execute one new order (the parameters of POST /api/v3/order)."""
        market = self.market(required(params, "symbol"))
        side = required(params, "side").upper()
        order_type = required(params, "type").upper()
        if side not in ("BUY", "SELL"):
            raise BinanceError(400, -1117, "Invalid side.")
        if order_type not in ("MARKET", "LIMIT") or order_type not in market.spec.order_types:
            raise BinanceError(400, -1116, "Invalid orderType.")
        if market.spec.status != "TRADING":
            raise BinanceError(400, -1013, "Market is closed.")
        spec = market.spec
        quote_qty = decimal_param(params, "quoteOrderQty")
        qty = decimal_param(params, "quantity")
        if order_type == "LIMIT":
            tif = required(params, "timeInForce").upper()
            if tif not in ("GTC", "IOC", "FOK"):
                raise BinanceError(400, -1115, "Invalid timeInForce.")
            price = decimal_param(params, "price")
            if price is None or price <= 0:
                raise mandatory("price")
            if not on_grid(price, spec.tick_size):
                raise filter_failure("PRICE_FILTER")
        else:
            tif, price = "GTC", Decimal(0)
        book = market.ask if side == "BUY" else market.bid
        if quote_qty is not None and order_type == "MARKET":
            if quote_qty <= 0:
                raise mandatory("quoteOrderQty")
            if quote_qty < spec.min_notional:
                raise filter_failure("NOTIONAL")
            qty = floor_to(quote_qty / book, spec.step_size) if book else Decimal(0)
        else:
            if qty is None or qty <= 0:
                raise mandatory("quantity")
            if not on_grid(qty, spec.step_size) or not spec.min_qty <= qty <= spec.max_qty:
                raise filter_failure("LOT_SIZE")
            reference = price if order_type == "LIMIT" else book
            if reference is not None and qty * reference < spec.min_notional:
                raise filter_failure("NOTIONAL")
        limit_or_book = price if order_type == "LIMIT" else (book or Decimal(0))
        self._check_funds(market, side, qty, limit_or_book)
        order = FakeOrder(
            self._next_order_id, client_order_id, market.id, side, order_type, tif, price,
            qty, quote_qty or Decimal(0), now_ms, update_ms=now_ms,
        )
        self._next_order_id += 1
        self.orders[order.order_id] = order
        self._match_new(order, market, tweaks, now_ms)
        return order

    def _check_funds(self, market: Market, side: str, qty: Decimal, price: Decimal) -> None:
        if side == "BUY":
            fee_factor = 1 + self.fee_rate if self.fee_in == "quote" else Decimal(1)
            need = (qty * price * fee_factor).quantize(EIGHT, ROUND_CEILING)
            if need > self.free.get(market.quote, Decimal(0)):
                raise insufficient_balance()
        elif qty > self.free.get(market.base, Decimal(0)):
            raise insufficient_balance()

    def _match_new(self, order: FakeOrder, market: Market, tweaks: FillTweaks, now_ms: int) -> None:
        book = market.ask if order.side == "BUY" else market.bid
        crosses = book is not None and (
            order.type == "MARKET" or (book <= order.price if order.side == "BUY" else book >= order.price)
        )
        fill_qty = floor_to(order.orig_qty * tweaks.fraction, market.spec.step_size) if crosses else Decimal(0)
        if order.time_in_force == "FOK" and fill_qty < order.orig_qty:
            fill_qty = Decimal(0)
        if fill_qty > 0 and book is not None:
            price = self._worse(book, order, market.spec.tick_size, tweaks.worse_bps)
            self._execute(order, market, fill_qty, price, tweaks.parts, now_ms)
        if order.executed_qty < order.orig_qty:
            if order.type == "LIMIT" and order.time_in_force == "GTC":
                if not order.locked:
                    self._lock(order, market)
            else:
                order.status = "EXPIRED"

    def _worse(self, book: Decimal, order: FakeOrder, tick: Decimal, bps: Decimal) -> Decimal:
        if not bps:
            return book
        if order.side == "BUY":
            price = (book * (1 + bps / BPS) / tick).to_integral_value(ROUND_CEILING) * tick
            return min(price, order.price) if order.type == "LIMIT" else price
        price = (book * (1 - bps / BPS) / tick).to_integral_value(ROUND_FLOOR) * tick
        return max(price, order.price) if order.type == "LIMIT" else price

    def _lock(self, order: FakeOrder, market: Market) -> None:
        asset = market.quote if order.side == "BUY" else market.base
        remaining = order.orig_qty - order.executed_qty
        amount = remaining * order.price * (1 + self.fee_rate) if order.side == "BUY" else remaining
        amount = amount.quantize(EIGHT, ROUND_CEILING)
        amount = min(amount, self.free.get(asset, Decimal(0)))
        self.free[asset] = self.free.get(asset, Decimal(0)) - amount
        self.locked[asset] = self.locked.get(asset, Decimal(0)) + amount
        order.locked = amount

    def _unlock(self, order: FakeOrder, market: Market) -> None:
        if order.locked:
            asset = market.quote if order.side == "BUY" else market.base
            self.locked[asset] -= order.locked
            self.free[asset] = self.free.get(asset, Decimal(0)) + order.locked
            order.locked = Decimal(0)

    def _execute(
        self, order: FakeOrder, market: Market, qty: Decimal, price: Decimal, parts: int, now_ms: int
    ) -> None:
        self._unlock(order, market)
        step = market.spec.step_size
        chunk = floor_to(qty / parts, step) if parts > 1 else qty
        sizes = [chunk] * (parts - 1) + [qty - chunk * (parts - 1)] if chunk > 0 else [qty]
        for size in sizes:
            self._trade(order, market, size, price, now_ms)
        order.status = "FILLED" if order.executed_qty >= order.orig_qty else "PARTIALLY_FILLED"
        order.update_ms = now_ms
        if order.status == "PARTIALLY_FILLED" and order.type == "LIMIT" and order.time_in_force == "GTC":
            self._lock(order, market)

    def _trade(self, order: FakeOrder, market: Market, qty: Decimal, price: Decimal, now_ms: int) -> None:
        quote_qty = (qty * price).quantize(EIGHT, ROUND_HALF_EVEN)
        buy = order.side == "BUY"
        if self.fee_in == "received" and buy:
            fee_asset, fee = market.base, (qty * self.fee_rate).quantize(EIGHT, ROUND_HALF_EVEN)
        else:
            fee_asset, fee = market.quote, (quote_qty * self.fee_rate).quantize(EIGHT, ROUND_HALF_EVEN)
        base_delta = qty if buy else -qty
        quote_delta = -quote_qty if buy else quote_qty
        self.free[market.base] = self.free.get(market.base, Decimal(0)) + base_delta
        self.free[market.quote] = self.free.get(market.quote, Decimal(0)) + quote_delta
        self.free[fee_asset] -= fee
        trade = FakeTrade(
            self._next_trade_id, order.order_id, order.client_order_id, market.id, order.side, price, qty,
            quote_qty, fee, fee_asset, now_ms, is_maker=order.type == "LIMIT" and order.time_ms != now_ms,
        )
        self._next_trade_id += 1
        self.trades.append(trade)
        order.trades.append(trade)
        order.executed_qty += qty
        order.cum_quote += quote_qty

    def find(self, params: dict[str, str]) -> FakeOrder:
        """The order named by `orderId` or `origClientOrderId` in `symbol`; -2013 when unknown."""
        market = self.market(required(params, "symbol"))
        order_id, client_id = params.get("orderId"), params.get("origClientOrderId")
        if not order_id and not client_id:
            raise BinanceError(
                400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        matches = [
            order
            for order in self.orders.values()
            if order.symbol == market.id
            and (not order_id or str(order.order_id) == order_id)
            and (not client_id or order.client_order_id == client_id)
        ]
        if not matches:
            raise BinanceError(400, -2013, "Order does not exist.")
        return matches[-1]

    def cancel(self, params: dict[str, str], fill_fraction: Decimal | None, now_ms: int) -> FakeOrder:
        """Cancel an open order; `fill_fraction` of what is open fills first (a fill racing the cancel)."""
        try:
            order = self.find(params)
        except BinanceError as exc:
            if exc.code == -2013:
                raise BinanceError(400, -2011, "Unknown order sent.") from None
            raise
        market = self.markets[order.symbol]
        if order.status in OPEN and fill_fraction is not None:
            qty = floor_to((order.orig_qty - order.executed_qty) * fill_fraction, market.spec.step_size)
            if qty > 0:
                self._execute(order, market, qty, order.price, 1, now_ms)
        if order.status not in OPEN:
            raise BinanceError(400, -2011, "Unknown order sent.")
        self._unlock(order, market)
        order.status = "CANCELED"
        order.update_ms = now_ms
        return order

    def open_orders(self, symbol_id: str | None) -> list[FakeOrder]:
        """Orders still open, in one symbol or all."""
        return [
            order
            for order in self.orders.values()
            if order.status in OPEN and (symbol_id is None or order.symbol == symbol_id)
        ]
