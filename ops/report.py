"""The backtest report: one self-contained HTML page (inline CSS and SVG) from a backtest directory."""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ops.report_data import (
    EMPTY,
    Backtest,
    Equity,
    FillSeries,
    load_backtest,
    load_equity,
    load_fills,
    load_intents,
)
from ops.svg import (
    PALETTE,
    Marker,
    Rule,
    Series,
    colour_map,
    esc,
    fmt_number,
    fmt_percent,
    time_chart,
)

__all__ = [
    "Backtest", "Equity", "FillSeries", "load_backtest", "load_equity", "load_fills", "load_intents",
    "render_comparison", "render_report",
]
log = logging.getLogger(__name__)

VALUE_COLOUR = "#6366f1"
HODL_COLOUR = "#9aa3b2"
UP_COLOUR = "#0ecb81"
DOWN_COLOUR = "#f6465d"
FEE_COLOUR = "#f59e0b"
VOLUME_COLOUR = "#14b8a6"
MARKER_COLOUR = "#8b93a7"
LAST_REBALANCES = 50
MAX_LEGS_LISTED = 6

CSS = """
:root{--bg:#f5f6f8;--panel:#fff;--text:#1e2329;--muted:#707a8a;--line:#eaecef;--up:#0ecb81;--down:#f6465d}
@media (prefers-color-scheme:dark){:root{--bg:#0b0e11;--panel:#181a20;--text:#eaecef;--muted:#848e9c;--line:#2b3139}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--text);font:14px/1.45 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:24px 16px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:15px;margin:0 0 10px;font-weight:600}
.sub{color:var(--muted);margin-bottom:18px}.chip{display:inline-block;background:var(--panel);border:1px solid var(--line);
border-radius:999px;padding:1px 10px;margin:0 6px 6px 0;font-size:12px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin-bottom:16px}
.card,.panel{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.card .k{color:var(--muted);font-size:12px}.card .v{font-size:21px;font-weight:650;margin:2px 0;white-space:nowrap}
.card .v small{font-size:12px;color:var(--muted);font-weight:500}.card .s{color:var(--muted);font-size:12px}
.pos{color:var(--up)}.neg{color:var(--down)}
.panel{margin-bottom:16px}.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px}
.grid2 .panel{margin-bottom:0}.grid2{margin-bottom:16px}
svg{display:block;width:100%;height:auto;overflow:visible}
svg .grid{stroke:var(--line)}svg .axis{stroke:var(--muted)}svg .tick,svg .legend-label{fill:var(--muted)}
svg .empty{fill:var(--muted);font-size:14px}svg .rule-label{font-size:10px}svg .markers line:hover{stroke-width:4}
.alloc{display:flex;height:14px;border-radius:7px;overflow:hidden;margin:4px 0 10px}
.alloc div{height:100%}.alloc-row{display:grid;grid-template-columns:70px 1fr;align-items:center;gap:10px;font-size:12px}
table{width:100%;border-collapse:collapse;font-size:13px}th{color:var(--muted);font-weight:500;text-align:left}
th,td{padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:6px}
.badge{font-size:11px;border-radius:4px;padding:1px 6px;background:var(--line)}
.b-start{background:#dbeafe;color:#1e40af}.b-threshold{background:#fef3c7;color:#92400e}.b-calendar{background:#e0e7ff;color:#3730a3}
.b-manual,.b-deposit,.b-withdraw{background:#dcfce7;color:#166534}.b-terminate{background:#fee2e2;color:#991b1b}
.sell{color:var(--down)}.buy{color:var(--up)}footer{color:var(--muted);font-size:12px;margin-top:24px}
"""
_KNOWN_REASONS = frozenset({"start", "threshold", "calendar", "manual", "deposit", "withdraw", "terminate"})


def _num(summary: dict[str, Any], key: str) -> float | None:
    try:
        value = float(summary[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _floats(mapping: Any) -> dict[str, float]:
    if not isinstance(mapping, dict):
        return {}
    return {str(k): float(v) for k, v in mapping.items() if isinstance(v, int | float) and math.isfinite(v)}


def _money(value: float | None, quote: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:,.2f}" + (f" <small>{esc(quote)}</small>" if quote else "")


def _pct(value: float | None, *, signed: bool = False, digits: int = 2) -> str:
    return "—" if value is None else f"{value * 100:{'+' if signed else ''}.{digits}f}%"


def _sign_class(value: float | None) -> str:
    return "" if value is None or value == 0 else ("pos" if value > 0 else "neg")


def _date(text: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None


def _utc(ts_ns: Any) -> str:
    try:
        return datetime.fromtimestamp(int(ts_ns) / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError):
        return "—"


def _qty(text: Any) -> str:
    try:
        value = float(Decimal(str(text)))
    except (InvalidOperation, ValueError, OverflowError):
        return esc(text)
    if value == 0 or not math.isfinite(value):
        return esc(f"{value:g}")
    decimals = min(8, max(0, 5 - math.floor(math.log10(abs(value)))))
    shown = f"{value:,.{decimals}f}"
    return shown.rstrip("0").rstrip(".") if "." in shown else shown


def _legs_summary(legs: Sequence[dict[str, Any]]) -> str:
    parts = []
    for leg in legs[:MAX_LEGS_LISTED]:
        side = str(leg.get("side", ""))
        base = str(leg.get("symbol", "")).partition("-")[0]
        cls = side if side in ("buy", "sell") else ""
        parts.append(f'<span class="{cls}">{esc(side)}</span> {_qty(leg.get("quantity"))} {esc(base)}')
    more = len(legs) - MAX_LEGS_LISTED
    return ", ".join(parts) + (f", … +{more} more" if more > 0 else "") if parts else "—"


def _card(key: str, title: str, value_html: str, sub: str, raw: Any, cls: str = "") -> str:
    return (f'<div class="card" data-key="{esc(key)}" data-value="{esc(orjson.dumps(raw).decode())}">'
            f'<div class="k">{esc(title)}</div><div class="{f"v {cls}" if cls else "v"}">{value_html}</div>'
            f'<div class="s">{sub}</div></div>')


def _cards(bt: Backtest) -> str:
    s = bt.summary
    quote = str(s.get("quote") or "USDT")
    final, hodl, capital = _num(s, "final_value"), _num(s, "hodl_value"), _num(s, "capital")
    premium, fees, dd = _num(s, "premium"), _num(s, "fees_paid"), _num(s, "max_drawdown")
    turnover, rebalances = _num(s, "turnover"), s.get("rebalances")
    ret = final / capital - 1 if final is not None and capital else None
    fee_share = f"{fees / capital:.3%} of capital" if fees is not None and capital else "&nbsp;"
    start, end = _date(s.get("start")), _date(s.get("end"))
    if start and end:
        period, days = f"{start:%b %d %Y} → {end:%b %d %Y}", (end - start).total_seconds() / 86400
        length = f"{days:,.1f} days" if days >= 1 else f"{days * 24:,.1f} hours"
    else:
        period, length = "—", ""
    ticks = f" · {int(s['ticks']):,} ticks" if isinstance(s.get("ticks"), int) else ""
    return '<section class="cards">' + "".join((
        _card("final_value", "Final value", _money(final, quote),
              f'capital {_money(capital)} · <span class="{_sign_class(ret)}">{_pct(ret, signed=True)}</span>',
              s.get("final_value")),
        _card("premium", "vs HODL", _pct(premium, signed=True), f"HODL {_money(hodl, quote)}",
              s.get("premium"), _sign_class(premium)),
        _card("rebalances", "Rebalances", esc(rebalances if rebalances is not None else "—"),
              f"{esc(s.get('mode', ''))} mode", rebalances),
        _card("fees_paid", "Fees paid", _money(fees, quote), fee_share, s.get("fees_paid")),
        _card("turnover", "Turnover", "—" if turnover is None else f"{turnover:,.2f}×", "traded ÷ capital",
              s.get("turnover")),
        _card("max_drawdown", "Max drawdown", _pct(-dd if dd else dd), "peak to trough", s.get("max_drawdown"),
              "neg" if dd else ""),
        _card("period", "Period", f'<span style="font-size:15px">{esc(period)}</span>', esc(length + ticks),
              [s.get("start"), s.get("end")]),
    )) + "</section>"


def _chips(s: dict[str, Any]) -> str:
    chips = [f"mode {s.get('mode', '—')}", f"{s.get('band', 'absolute')} band"]
    if _num(s, "window_secs") is not None:
        chips.append(f"window {float(s['window_secs']) / 60:g} min")
    if s.get("config"):
        chips.append(f"config {s['config']}")
    return "".join(f'<span class="chip">{esc(c)}</span>' for c in chips)


def _allocation(s: dict[str, Any], equity: Equity, colours: dict[str, str]) -> str:
    targets = _floats(s.get("targets"))
    finals = equity.final_weights()
    rows = []
    for title, weights in (("Target", targets), ("Final", finals)):
        if weights:
            bars = "".join(
                f'<div style="width:{max(w, 0) * 100:.3f}%;background:{esc(colours.get(c, HODL_COLOUR))}"'
                f' title="{esc(c)} {w:.2%}"></div>' for c, w in weights.items() if math.isfinite(w))
            rows.append(f'<div class="alloc-row"><span>{title}</span><div class="alloc">{bars}</div></div>')
    legend = " ".join(f'<span class="chip"><span class="dot" style="background:{esc(col)}"></span>{esc(c)}'
                      f" {targets.get(c, 0):.1%}</span>" for c, col in colours.items() if c in targets)
    return f'<section class="panel"><h2>Allocation</h2>{"".join(rows)}{legend}</section>' if rows else ""


def _markers(intents: Sequence[dict[str, Any]]) -> list[Marker]:
    out = []
    for it in intents:
        if it.get("reason") != "start" and isinstance(it.get("ts_ns"), int):
            drift = it.get("drift")
            title = f"{_utc(it['ts_ns'])} {it.get('reason', '')}"
            if isinstance(drift, int | float):
                title += f" · drift {drift:.2%}"
            out.append(Marker(it["ts_ns"] / 1e9, title))
    return out


def _panel(title: str, svg: str) -> str:
    return f'<section class="panel"><h2>{esc(title)}</h2>{svg}</section>'


def _charts(bt: Backtest, colours: dict[str, str]) -> str:
    s, eq, f = bt.summary, bt.equity, bt.fills
    quote = str(s.get("quote") or "USDT")
    markers = _markers(bt.intents)
    value_svg = time_chart(
        [Series("Portfolio", eq.ts_s, eq.value, VALUE_COLOUR, width=2.0),
         Series("HODL", eq.ts_s, eq.hodl, HODL_COLOUR, dashed=True)],
        label="portfolio value against HODL", markers=markers, marker_colour=MARKER_COLOUR,
        legend_extra=[("rebalance", MARKER_COLOUR, False)] if markers else ())
    peak = np.fmax.accumulate(eq.value) if eq.value.shape[0] else EMPTY
    with np.errstate(divide="ignore", invalid="ignore"):
        drawdown = np.where(peak > 0, eq.value / peak - 1.0, np.nan)
    dd_svg = time_chart([Series("Drawdown", eq.ts_s, drawdown, DOWN_COLOUR, area=True)], label="drawdown",
                        height=200, y_format=fmt_percent, y_ceil=0.0)
    w_series = [Series(c, eq.ts_s, w, colours.get(c, HODL_COLOUR)) for c, w in eq.weights.items()]
    w_rules = [Rule(t, colours.get(c, HODL_COLOUR)) for c, t in _floats(s.get("targets")).items()]
    w_svg = time_chart(w_series, label="weights against targets", y_format=fmt_percent, rules=w_rules,
                       y_floor=0.0, y_ceil=1.0, legend_extra=[("target", MARKER_COLOUR, True)] if w_rules else ())
    thresholds = list(_floats(s.get("thresholds")).values())
    band = [Rule(max(thresholds), DOWN_COLOUR, f"band {max(thresholds):.1%}")] if thresholds else []
    drift_svg = time_chart([Series("Drift", eq.ts_s, eq.drift, VALUE_COLOUR)], label="drift against the band",
                           height=220, y_format=fmt_percent, rules=band, markers=markers, y_floor=0.0)
    fee_svg = time_chart([Series(f"Fees ({quote})", f.ts_s, f.fees, FEE_COLOUR, area=True)],
                         label="cumulative fees", width=560, height=220)
    vol_svg = time_chart([Series(f"Traded ({quote})", f.ts_s, f.volume, VOLUME_COLOUR, area=True)],
                         label="cumulative traded volume", width=560, height=220)
    return (_panel("Portfolio value vs HODL", value_svg) + _panel("Drawdown", dd_svg)
            + _panel("Weights vs targets", w_svg) + _panel("Drift vs band", drift_svg)
            + '<div class="grid2">' + _panel("Cumulative fees", fee_svg)
            + _panel("Cumulative traded volume (turnover)", vol_svg) + "</div>")


def _rebalance_table(intents: Sequence[dict[str, Any]]) -> str:
    rows = []
    for it in reversed(intents[-LAST_REBALANCES:]):
        reason = str(it.get("reason", ""))
        legs = it.get("legs") or []
        notional = sum(float(leg.get("notional") or 0) for leg in legs)
        drift, residual = it.get("drift"), it.get("expected_residual_drift")
        rows.append(
            f"<tr><td>{esc(_utc(it.get('ts_ns')))}</td>"
            f'<td><span class="badge b-{reason if reason in _KNOWN_REASONS else "other"}">{esc(reason)}</span></td>'
            f'<td class="n">{_pct(drift if isinstance(drift, int | float) else None)}</td>'
            f'<td class="n">{_pct(residual if isinstance(residual, int | float) else None)}</td>'
            f'<td>{_legs_summary(legs)}</td><td class="n">{notional:,.2f}</td></tr>')
    shown = f"last {len(rows)} of {len(intents)}" if len(intents) > len(rows) else f"{len(rows)}"
    head = ('<tr><th>Time (UTC)</th><th>Reason</th><th class="n">Drift</th><th class="n">Residual</th>'
            '<th>Trades</th><th class="n">Notional</th></tr>')
    body = "".join(rows) or '<tr><td colspan="6">no rebalances</td></tr>'
    return f'<section class="panel"><h2>Rebalances ({shown})</h2><table>{head}{body}</table></section>'


def _last_prices(intents: Sequence[dict[str, Any]]) -> dict[str, float]:
    prices: dict[str, float] = {}
    for it in intents:
        for sym, p in (it.get("prices") or {}).items():
            if isinstance(p, int | float):
                prices[str(sym).partition("-")[0]] = float(p)
    return prices


def _holdings_table(bt: Backtest, colours: dict[str, str]) -> str:
    s = bt.summary
    quote, final = str(s.get("quote") or "USDT"), _num(s, "final_value")
    targets = _floats(s.get("targets"))
    weights = bt.equity.final_weights()
    prices = _last_prices(bt.intents)
    rows = []
    for asset, qty_text in (s.get("holdings") or {}).items():
        try:
            qty = float(qty_text)
        except (TypeError, ValueError):
            qty = math.nan
        if asset == quote:
            value: float | None = qty
        elif asset in weights and final is not None:
            value = weights[asset] * final
        else:
            value = qty * prices[asset] if asset in prices else None
        weight = weights.get(asset, value / final if value is not None and final else None)
        target = targets.get(asset)
        dev = weight - target if weight is not None and target is not None else None
        dot = f'<span class="dot" style="background:{esc(colours.get(asset, HODL_COLOUR))}"></span>'
        rows.append(f"<tr><td>{dot}{esc(asset)}</td><td class=\"n\">{_qty(qty_text)}</td>"
                    f'<td class="n">{_money(value)}</td><td class="n">{_pct(weight)}</td>'
                    f'<td class="n">{_pct(target)}</td><td class="n">{_pct(dev, signed=True)}</td></tr>')
    head = (f'<tr><th>Asset</th><th class="n">Quantity</th><th class="n">Value ({esc(quote)})</th><th class="n">Weight</th>'
            '<th class="n">Target</th><th class="n">Deviation</th></tr>')
    body = "".join(rows) or '<tr><td colspan="6">no holdings</td></tr>'
    return f'<section class="panel"><h2>Final holdings</h2><table>{head}{body}</table></section>'


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>{body}"
            "<footer>Generated by keel from a backtest: times in UTC.</footer></main></body></html>\n")


def render_report(out_dir: Path, *, title: str | None = None) -> Path:
    """Writes out_dir/report.html (one self-contained page) from a backtest directory and returns its path."""
    out_dir = Path(out_dir)
    bt = load_backtest(out_dir)
    s = bt.summary
    coins = [str(c) for c in (s.get("targets") or {})]
    coins += [c for c in bt.equity.weights if c not in coins]
    coins += [str(c) for c in (s.get("holdings") or {}) if str(c) not in coins]
    colours = colour_map(coins)
    name = str(s.get("portfolio") or out_dir.name)
    heading = title or f"Backtest · {name}"
    body = (f"<h1>{esc(heading)}</h1><div class=\"sub\">{_chips(s)}</div>{_cards(bt)}"
            f"{_allocation(s, bt.equity, colours)}{_charts(bt, colours)}"
            f"{_rebalance_table(bt.intents)}{_holdings_table(bt, colours)}")
    path = out_dir / "report.html"
    path.write_text(_page(heading, body), encoding="utf-8")
    log.info("report written to %s", path)
    return path


def render_comparison(runs: Sequence[tuple[str, Path]], out_path: Path) -> Path:
    """Writes one page comparing several backtests over the same data (a table and the value curves)."""
    loaded = [(label, load_backtest(Path(d))) for label, d in runs]
    colours = {label: PALETTE[i % len(PALETTE)] for i, (label, _) in enumerate(loaded)}
    rows, series = [], []
    best = max((v for _, bt in loaded if (v := _num(bt.summary, "final_value")) is not None), default=None)
    for label, bt in loaded:
        s = bt.summary
        final, premium, dd = _num(s, "final_value"), _num(s, "premium"), _num(s, "max_drawdown")
        mark = " ★" if final is not None and final == best and len(loaded) > 1 else ""
        dot = f'<span class="dot" style="background:{colours[label]}"></span>'
        rows.append(
            f"<tr><td>{dot}{esc(label)}{mark}</td><td class=\"n\">{_money(final)}</td>"
            f'<td class="n {_sign_class(premium)}">{_pct(premium, signed=True)}</td>'
            f'<td class="n">{esc(s.get("rebalances", "—"))}</td><td class="n">{_money(_num(s, "fees_paid"))}</td>'
            f'<td class="n">{_num(s, "turnover") or 0:,.2f}×</td><td class="n neg">{_pct(-dd if dd else dd)}</td></tr>')
        if bt.equity.value.shape[0]:
            series.append(Series(label, bt.equity.ts_s, bt.equity.value, colours[label], width=1.8))
    hodl = next((bt.equity for _, bt in loaded if bt.equity.value.shape[0]), None)
    if hodl is not None:
        series.append(Series("HODL", hodl.ts_s, hodl.hodl, HODL_COLOUR, dashed=True))
    quote = next((str(bt.summary.get("quote")) for _, bt in loaded if bt.summary.get("quote")), "USDT")
    head = (f'<tr><th>Run</th><th class="n">Final value ({esc(quote)})</th><th class="n">vs HODL</th>'
            '<th class="n">Rebalances</th><th class="n">Fees</th><th class="n">Turnover</th>'
            '<th class="n">Max drawdown</th></tr>')
    chart = time_chart(series, label="value curves of the compared runs", height=340, y_format=fmt_number)
    heading = f"Backtest comparison · {len(loaded)} runs"
    body = (f"<h1>{esc(heading)}</h1><div class=\"sub\">same data, different settings</div>"
            f'<section class="panel"><h2>Results</h2><table>{head}{"".join(rows)}</table></section>'
            f"{_panel('Portfolio value', chart)}")
    out_path = Path(out_path)
    out_path.write_text(_page(heading, body), encoding="utf-8")
    log.info("comparison of %d runs written to %s", len(loaded), out_path)
    return out_path
