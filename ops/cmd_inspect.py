"""Inspection commands: `keel ledger` (what a ledger file holds) and `keel preview` (what a rebalance would
trade now, planned exactly as the engine plans it, without trading)."""
from __future__ import annotations

import argparse
import math
import re
import sqlite3
import sys
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from engine.planner import plan_rebalance
from engine.spec import PortfolioSpec
from engine.types import Reason, split_symbol
from ops.commands import CommandError, command, load
from ops.ledger_read import (
    OPEN_ORDER_STATUSES,
    SCHEMA_VERSION,
    FillRecord,
    holdings_from,
    q_fills,
    q_portfolio_quote,
    q_transfers,
    run_query,
    to_json,
)

ZERO = Decimal(0)
BPS = Decimal(10000)
COIN = re.compile(r"[A-Z0-9]{1,20}")
REBALANCED = ("complete", "partial")
PRICE_NOTE = "valued at the last fill price of each symbol in the ledger (not a live price)"


# reading a ledger -------------------------------------------------------------------------------------


def open_ledger(path: str) -> sqlite3.Connection:
    """Open a keel ledger read-only (`mode=ro`); a one-line CommandError when it is missing or not a ledger."""
    p = Path(path)
    if not p.is_file():
        raise CommandError(f"ledger file {path} not found")
    try:
        conn = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise CommandError(f"ledger {path} cannot be opened: {e}") from None
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        conn.execute("SELECT name FROM portfolios LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
        conn.close()
        if "not a database" in str(e) or "no such table" in str(e):
            why = "not an SQLite database" if "not a database" in str(e) else f"no keel schema: {e}"
            raise CommandError(f"{path} is not a keel ledger ({why})") from None
        raise CommandError(f"ledger {path} cannot be read: {e}") from None
    if row is None or row[0] != SCHEMA_VERSION:
        conn.close()
        raise CommandError(f"{path} is not a keel ledger this keel reads (schema version {row and row[0]}, "
                           f"needs {SCHEMA_VERSION})")
    conn.execute("BEGIN")  # every later read sees one snapshot, even while the service writes
    return conn


def ledger_portfolios(conn: sqlite3.Connection) -> list[str]:
    """Portfolio names in the ledger, in the order they were recorded."""
    return [r[0] for r in conn.execute("SELECT name FROM portfolios ORDER BY created_ns, rowid")]


def pick(names: list[str], wanted: str | None, where: str) -> list[str]:
    """All names, or the one asked for; a CommandError naming the choices when it is unknown."""
    if wanted is None:
        return names
    if wanted not in names:
        raise CommandError(f"portfolio {wanted!r} is not in {where} (it has: {', '.join(names) or 'none'})")
    return [wanted]


def last_prices(fills: list[FillRecord]) -> dict[str, tuple[Decimal, int]]:
    """Symbol -> (price, time) of its last fill."""
    out: dict[str, tuple[Decimal, int]] = {}
    for r in fills:
        f = r.fill
        seen = out.get(f.symbol)
        if seen is None or f.ts_ns >= seen[1]:
            out[f.symbol] = (f.price, f.ts_ns)
    return out


def value_at(holdings: Mapping[str, Decimal], prices: Mapping[str, Decimal], quote: str) -> tuple[Decimal, list[str]]:
    """Value of holdings in the quote at coin prices; the coins held that have no price."""
    total, missing = ZERO, []
    for asset, q in holdings.items():
        if asset == quote:
            total += q
        elif asset in prices:
            total += q * prices[asset]
        elif q != 0:
            missing.append(asset)
    return total, missing


def ledger_summary(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    """One portfolio of a ledger: holdings (transfers + fills), fills, fees, rebalances, intents, vs HODL."""
    quote = run_query(conn, q_portfolio_quote(name)) or ""
    fills = run_query(conn, q_fills(name))
    transfers = run_query(conn, q_transfers(name))
    holdings = holdings_from(name, quote, transfers, fills)
    start = conn.execute("SELECT id FROM intents WHERE portfolio = ? AND reason = ? ORDER BY seq LIMIT 1",
                         (name, Reason.START.value)).fetchone()
    start_id = start[0] if start is not None else None
    hodl = holdings_from(name, quote, transfers, [r for r in fills if r.fill.client_order_id[1:17] == start_id])
    fees, fees_other = ZERO, dict[str, Decimal]()
    for r in fills:
        f = r.fill
        base, _ = split_symbol(f.symbol)
        if f.fee_asset in (quote, base):
            fees += f.fee if f.fee_asset == quote else f.fee * f.price
        else:
            fees_other[f.fee_asset] = fees_other.get(f.fee_asset, ZERO) + f.fee
    rebalances: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for reason, status, n in conn.execute("SELECT reason, status, COUNT(*) FROM intents WHERE portfolio = ?"
                                          " GROUP BY reason, status ORDER BY reason, status", (name,)):
        statuses[status] = statuses.get(status, 0) + n
        if status in REBALANCED and reason != Reason.START.value:
            rebalances[reason] = rebalances.get(reason, 0) + n
    placeholders = ", ".join("?" for _ in OPEN_ORDER_STATUSES)
    open_orders = conn.execute(f"SELECT COUNT(*) FROM orders WHERE portfolio = ? AND status IN ({placeholders})",
                               (name, *OPEN_ORDER_STATUSES)).fetchone()[0]
    last = last_prices(fills)
    prices = {split_symbol(s)[0]: p for s, (p, _) in last.items()}
    value, missing = value_at(holdings, prices, quote)
    hodl_value, hodl_missing = value_at(hodl, prices, quote)
    known = not missing and not hodl_missing and hodl_value > 0
    return {
        "portfolio": name, "quote": quote, "holdings": {a: q for a, q in holdings.items() if q != 0},
        "fills": len(fills), "fees_quote": fees, "fees_other": fees_other, "open_orders": open_orders,
        "rebalances": rebalances, "intents": statuses, "hodl": {a: q for a, q in hodl.items() if q != 0},
        "prices": {s: {"price": p, "ts_ns": ts} for s, (p, ts) in last.items()}, "price_note": PRICE_NOTE,
        "value": value if not missing else None, "hodl_value": hodl_value if not hodl_missing else None,
        "premium": float(value / hodl_value - 1) if known else None,
        "missing_prices": sorted(set(missing) | set(hodl_missing)),
    }


def _ledger_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="the ledger file (SQLite), e.g. var/keel.sqlite or out/backtest/ledger.sqlite")
    p.add_argument("--portfolio", metavar="NAME", help="only this portfolio")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


@command("ledger", "Show what a ledger holds: holdings, fills, fees, rebalances, intents, vs HODL (read-only).")(
    _ledger_args)
def ledger(args: argparse.Namespace) -> int:
    """keel ledger PATH [--portfolio NAME] [--json]."""
    conn = open_ledger(args.path)
    try:
        names = pick(ledger_portfolios(conn), args.portfolio, f"ledger {args.path}")
        summaries = {n: ledger_summary(conn, n) for n in names}
    finally:
        conn.close()
    if args.json:
        sys.stdout.write(to_json({"ledger": args.path, "portfolios": summaries}).decode() + "\n")
        return 0
    print_ledger(args.path, summaries)
    return 0


# preview ----------------------------------------------------------------------------------------------


def parse_pairs(text: str | None, flag: str, example: str, *, positive: bool) -> dict[str, Decimal]:
    """`BTC=43000,ETH=2300` -> {coin: Decimal}; a one-line CommandError on any malformed item."""
    out: dict[str, Decimal] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        coin, sep, raw = item.partition("=")
        coin = coin.strip().upper()
        try:
            amount = Decimal(raw.strip())
        except InvalidOperation:
            amount = Decimal("NaN")
        if not sep or not COIN.fullmatch(coin) or not amount.is_finite():
            raise CommandError(f"{flag} takes COIN=NUMBER pairs separated by commas (for example {example}), "
                               f"got {item.strip()!r}")
        if amount < 0 or (positive and amount == 0):
            raise CommandError(f"{flag}: {coin}={raw.strip()} must be {'> 0' if positive else '>= 0'}")
        if coin in out:
            raise CommandError(f"{flag} names {coin} twice")
        out[coin] = amount
    return out


def _weights(holdings: Mapping[str, Decimal], prices: Mapping[str, Decimal], quote: str) -> dict[str, float]:
    vals = {a: float(q if a == quote else q * prices[a]) for a, q in holdings.items()}
    total = math.fsum(vals.values())
    return {a: v / total for a, v in vals.items()} if total > 0 else {}


def _decide(spec: PortfolioSpec, weights: Mapping[str, float], targets: Mapping[str, float],
            thresholds: Mapping[str, float]) -> tuple[str, str]:
    """The reason the engine would rebalance for now (manual when nothing is due), and why."""
    dev = {c: weights.get(c, 0.0) - t for c, t in targets.items()}
    worst = max(dev, key=lambda c: abs(dev[c]) / thresholds[c])
    off, usage = abs(dev[worst]), abs(dev[worst]) / thresholds[worst]
    if spec.threshold_active and usage >= 1:
        return Reason.THRESHOLD.value, f"due: {worst} is {off:.2%} off target, beyond its band"
    if spec.schedule is not None and max(abs(d) for d in dev.values()) >= spec.min_deviation:
        return Reason.CALENDAR.value, (f"due at the next calendar boundary: {worst} is {off:.2%} off target "
                                       f"(min_deviation {spec.min_deviation:.2%})")
    return Reason.MANUAL.value, (f"not due ({worst} is {off:.2%} off target, {usage:.0%} of its band): "
                                 "what a manual rebalance would trade")


def build_preview(spec: PortfolioSpec, holdings: dict[str, Decimal] | None, prices: Mapping[str, Decimal],
                  source: Mapping[str, str], slippage_bps: Decimal, where: str) -> dict[str, Any]:
    """Plan one portfolio as the engine would (same planner, targets, band and edge policy); `None` holdings
    mean the buy-in of the configured capital (or adopted holdings)."""
    quote = spec.quote
    buy_in = holdings is None
    if holdings is None:
        holdings = {quote: spec.capital} if spec.start == "quote" else dict(spec.holdings)
    holdings = {a: q for a, q in holdings.items() if q != 0 or a == quote or a in spec.targets}
    held = [a for a, q in holdings.items() if a != quote and q > 0]
    needed = list(dict.fromkeys([*(c for c in spec.targets if c != quote), *held]))
    missing = [c for c in needed if c not in prices]
    if missing:
        raise CommandError(f"portfolio {spec.name}: no price for {', '.join(missing)}; give "
                           f"--prices {','.join(f'{c}=PRICE' for c in missing)}"
                           + (f" ({where} has no fill of {', '.join(f'{c}-{quote}' for c in missing)})" if where else ""))
    used = {c: prices[c] for c in needed}
    fpx = {c: float(p) for c, p in used.items()}
    targets, thresholds = dict(spec.targets), dict(spec.thresholds)
    if spec.target_policy is not None and spec.thresholds_for is not None:
        targets = spec.target_policy(fpx)
        thresholds = spec.thresholds_for(targets)
    weights = _weights(holdings, used, quote)
    desired = None
    if buy_in:
        what = "the capital" if spec.start == "quote" else "the adopted holdings"
        reason, why = Reason.START.value, f"the buy-in of {what} into the targets"
    else:
        reason, why = _decide(spec, weights, targets, thresholds)
        if spec.rebalance_to is not None and reason in (Reason.THRESHOLD.value, Reason.CALENDAR.value):
            assets = [*(c for c in targets if c != quote), quote]  # the weights the engine hands its edge policy
            try:
                desired = spec.rebalance_to({a: weights.get(a, 0.0) for a in assets}, targets, thresholds)
            except ValueError as e:
                raise CommandError(f"portfolio {spec.name}: the engine's edge policy fails here too: {e}", 1) from None
    plan = plan_rebalance(holdings, fpx, targets, quote, desired=desired, rules=spec.rules, fee_rate=spec.fee_rate)
    after = _weights(plan.expected_holdings, used, quote)
    legs: list[dict[str, Any]] = [
        {"symbol": leg.symbol, "side": leg.side.value, "quantity": leg.quantity, "price": leg.expected_price,
         "notional": leg.notional, "fee": leg.notional * spec.fee_rate, "slippage": leg.notional * slippage_bps / BPS}
        for leg in plan.legs]
    fees: Decimal = sum((leg["fee"] for leg in legs), ZERO)
    slippage: Decimal = sum((leg["slippage"] for leg in legs), ZERO)
    value = value_at(holdings, used, quote)[0]
    return {
        "portfolio": spec.name, "quote": quote, "mode": spec.mode, "observe": spec.mode == "observe",
        "reason": reason, "why": why, "rebalance_to": "band edge" if desired else "band centre",
        "prices": used, "price_source": {c: source[c] for c in used}, "holdings": holdings, "value": value,
        "coins": {c: {"target": t, "weight": weights.get(c, 0.0), "deviation": weights.get(c, 0.0) - t,
                      "band": thresholds.get(c), "after": after.get(c, 0.0)} for c, t in targets.items()},
        "legs": legs,
        "sells": sum((leg["notional"] for leg in legs if leg["side"] == "sell"), ZERO),
        "buys": sum((leg["notional"] for leg in legs if leg["side"] == "buy"), ZERO),
        "fee_rate": spec.fee_rate, "slippage_bps": slippage_bps, "fees": fees, "slippage": slippage,
        "cost": fees + slippage, "cost_ratio": float((fees + slippage) / value) if value > 0 else 0.0,
        "expected_holdings": plan.expected_holdings, "expected_residual_drift": plan.residual_drift,
    }


def _preview_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the TOML config")
    p.add_argument("--prices", metavar="COIN=PRICE,...", help="prices in the quote, e.g. BTC=43000,ETH=2300")
    p.add_argument("--holdings", metavar="COIN=QTY,...", help="holdings to plan from (quote included), "
                   "e.g. BTC=0.1,ETH=2,USDT=100 (default: --ledger, else the capital bought in)")
    p.add_argument("--ledger", metavar="PATH", help="take holdings (and missing prices: last fills) from this ledger")
    p.add_argument("--portfolio", metavar="NAME",
                   help="only this portfolio (needed with --holdings when there are several)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


@command("preview", "What a rebalance would trade now (legs, fees, slippage, residual drift), without trading.")(
    _preview_args)
def preview(args: argparse.Namespace) -> int:
    """keel preview CONFIG [--prices ...] [--holdings ...] [--ledger PATH] [--portfolio NAME] [--json]."""
    from ops.specs import portfolio_specs

    config = load(args.config)
    prices = parse_pairs(args.prices, "--prices", "BTC=43000,ETH=2300", positive=True)
    given = parse_pairs(args.holdings, "--holdings", "BTC=0.1,ETH=2,USDT=100", positive=False)
    if args.holdings is not None and args.ledger is not None:
        raise CommandError("give holdings with --holdings or --ledger, not both")
    specs = {s.name: s for s in portfolio_specs(config)}
    names = pick(list(specs), args.portfolio, f"config {args.config}")
    if args.holdings is not None and len(names) > 1:
        raise CommandError(f"--holdings describes one portfolio; choose it with --portfolio NAME "
                           f"(the config has {', '.join(names)})")
    chosen = [specs[n] for n in names]
    coins = {c for s in chosen for c in s.targets if c != s.quote}
    for coin in prices:
        if any(coin == s.quote for s in chosen):
            raise CommandError(f"--prices: {coin} is the quote (worth 1 by definition); remove it")
        if coin not in coins:
            raise CommandError(f"--prices: {coin} is not a coin of {', '.join(names)} ({', '.join(sorted(coins))})")
    source = dict.fromkeys(prices, "--prices")
    held: dict[str, dict[str, Decimal] | None] = {n: None for n in names}
    if args.holdings is not None:
        basket = {*specs[names[0]].targets, specs[names[0]].quote}
        for coin in given:
            if coin not in basket:
                raise CommandError(f"--holdings: {coin} is not in portfolio {names[0]} ({', '.join(sorted(basket))})")
        held[names[0]] = given
    if args.ledger is not None:
        conn = open_ledger(args.ledger)
        try:
            in_ledger = ledger_portfolios(conn)
            for n in names:
                pick(in_ledger, n, f"ledger {args.ledger}")
                held[n] = ledger_summary(conn, n)["holdings"]
            for symbol, (px, _) in last_prices(run_query(conn, q_fills())).items():
                coin = split_symbol(symbol)[0]
                if coin not in prices:
                    prices[coin], source[coin] = px, "last fill"
        finally:
            conn.close()
    slippage = Decimal(repr(config.venue.slippage_bps))
    where = f"ledger {args.ledger}" if args.ledger else ""
    out = {s.name: build_preview(s, held[s.name], prices, source, slippage, where) for s in chosen}
    if args.json:
        sys.stdout.write(to_json({"config": args.config, "portfolios": out}).decode() + "\n")
        return 0
    print_previews(out)
    return 0


# printing ---------------------------------------------------------------------------------------------


def _num(x: Decimal | float | None, places: int = 2) -> str:
    return "-" if x is None else f"{x:,.{places}f}"


def _qty(q: Decimal) -> str:
    return format(q.quantize(Decimal("1e-8")).normalize(), "f")


def print_ledger(path: str, summaries: Mapping[str, dict[str, Any]]) -> None:
    """Per portfolio: holdings with their value at the last fill prices, then the counts and vs HODL."""
    from rich.console import Console
    from rich.table import Table

    from ops.backtest import iso

    console = Console()
    if not summaries:
        console.print(f"ledger {path} holds no portfolio yet")
    for s in summaries.values():
        q = s["quote"]
        coins = {split_symbol(sym)[0]: v["price"] for sym, v in s["prices"].items()}
        table = Table(title=f"{s['portfolio']} ({q}) in ledger {path}", title_justify="left")
        for col in ("asset", "quantity", "last fill price", "value", "weight", "HODL quantity"):
            table.add_column(col, justify="left" if col == "asset" else "right")
        total = s["value"]
        for asset in sorted({*s["holdings"], *s["hodl"]}, key=lambda a: (a == q, a)):
            qty = s["holdings"].get(asset, ZERO)
            px = Decimal(1) if asset == q else coins.get(asset)
            val = qty * px if px is not None else None
            weight = f"{val / total:.1%}" if val is not None and total else "-"
            table.add_row(asset, _qty(qty), _num(px) if asset != q else "", _num(val), weight,
                          _qty(s["hodl"].get(asset, ZERO)))
        console.print(table)
        other = "".join(f" + {_qty(v)} {a}" for a, v in s["fees_other"].items())
        console.print(f"fills {s['fills']:,} · fees paid {_num(s['fees_quote'])} {q}{other} · "
                      f"open orders {s['open_orders']}")
        rebal = ", ".join(f"{r} {n}" for r, n in s["rebalances"].items())
        console.print(f"rebalances {sum(s['rebalances'].values())}" + (f" ({rebal})" if rebal else "")
                      + " · intents " + (", ".join(f"{k} {n}" for k, n in s["intents"].items()) or "none"))
        if s["premium"] is not None:
            gain = s["value"] - s["hodl_value"]
            colour = "green" if gain >= 0 else "red"
            when = max((v["ts_ns"] for v in s["prices"].values()), default=0)
            console.print(f"value {_num(s['value'])} {q} vs HODL {_num(s['hodl_value'])}: [bold {colour}]"
                          f"{s['premium']:+.2%} ({gain:+,.2f})[/] realised premium, {PRICE_NOTE}"
                          + (f" (last fill {iso(when)})" if when else ""))
        elif s["missing_prices"]:
            console.print(f"vs HODL: unknown (no fill price for {', '.join(s['missing_prices'])})")
        console.print()


def print_previews(previews: Mapping[str, dict[str, Any]]) -> None:
    """Per portfolio: why it would trade, the coins before and after, the legs and their costs."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for p in previews.values():
        q = p["quote"]
        console.print(f"[bold]{p['portfolio']}[/] ({q}, {p['mode']}): [bold]{p['reason']}[/], {p['why']}; "
                      f"trading to the {p['rebalance_to']}")
        coins = Table(title_justify="left", show_edge=False)
        for col in ("coin", "price", "from", "weight", "target", "deviation", "band", "after"):
            coins.add_column(col, justify="left" if col in ("coin", "from") else "right")
        for c, v in p["coins"].items():
            band = v["band"]
            style = "red" if band is not None and abs(v["deviation"]) >= band else ""
            coins.add_row(c, _num(p["prices"].get(c)) if c != q else "", p["price_source"].get(c, ""),
                          f"{v['weight']:.2%}", f"{v['target']:.2%}", f"[{style}]{v['deviation'] * 100:+.2f}pp[/]"
                          if style else f"{v['deviation'] * 100:+.2f}pp", f"±{band * 100:.2f}pp" if band else "-",
                          f"{v['after']:.2%}")
        console.print(coins)
        if not p["legs"]:
            console.print("nothing to trade (every leg would be under the minimum notional, or already on target)\n")
            continue
        legs = Table(show_edge=False)
        for col in ("side", "symbol", "quantity", "price", "notional", "fee", "slippage"):
            legs.add_column(col, justify="left" if col in ("side", "symbol") else "right")
        for leg in p["legs"]:
            side = "[green]buy[/]" if leg["side"] == "buy" else "[red]sell[/]"
            legs.add_row(side, leg["symbol"], _qty(leg["quantity"]), _num(leg["price"]), _num(leg["notional"]),
                         _num(leg["fee"], 4), _num(leg["slippage"], 4))
        console.print(legs)
        console.print(f"sells {_num(p['sells'])} {q} · buys {_num(p['buys'])} {q} · expected residual drift after "
                      f"fees {p['expected_residual_drift']:.3%}")
        console.print(f"costs: fees {_num(p['fees'], 4)} (fee rate {p['fee_rate']}) + slippage {_num(p['slippage'], 4)} "
                      f"({p['slippage_bps']} bps) = {_num(p['cost'], 4)} {q}, {p['cost_ratio']:.3%} of the value "
                      f"{_num(p['value'])} {q}")
        if p["observe"]:
            console.print("[blue]observe mode:[/] keel would publish this intent and send no order")
        console.print()
