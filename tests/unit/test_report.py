"""The HTML backtest report: charts present and parseable, cards exact, strings escaped, fast downsampling."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from html import escape as html_escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from ops.report import load_equity, load_fills, render_comparison, render_report
from ops.svg import (
    Series,
    _points,
    colour_map,
    downsample_minmax,
    esc,
    fmt_number,
    fmt_percent,
    nice_ticks,
    time_chart,
    time_ticks,
)

START_NS = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000_000
MINUTE_NS = 60_000_000_000
CHARTS = (
    "portfolio value against HODL", "drawdown", "weights against targets", "drift against the band",
    "cumulative fees", "cumulative traded volume",
)
VOID = {"meta", "link", "br", "hr", "img", "input", "path", "line", "circle", "rect", "polyline"}


class TreeCheck(HTMLParser):
    """Checks that tags nest and close properly; collects tag names and card attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.cards: dict[str, str] = {}
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if a.get("class") == "card" and a.get("data-key"):
            self.cards[a["data-key"] or ""] = a.get("data-value") or ""
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def parse(html: str) -> TreeCheck:
    checker = TreeCheck()
    checker.feed(html)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    return checker


def svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", html, flags=re.S)]


def make_summary(**over: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "portfolio": "core", "quote": "USDT", "config": "configs/core.toml", "final_value": 12345.67,
        "hodl_value": 12000.0, "premium": 0.0288, "rebalances": 3, "fees_paid": 15.2, "turnover": 3.1,
        "max_drawdown": 0.21, "ticks": 1000000, "start": "2024-01-01T00:00:00Z", "end": "2024-01-04T00:00:00Z",
        "holdings": {"BTC": "0.1234", "ETH": "2.5", "USDT": "12.5"}, "targets": {"BTC": 0.5, "ETH": 0.5},
        "thresholds": {"BTC": 0.05, "ETH": 0.05}, "mode": "threshold", "band": "absolute", "window_secs": 300,
        "capital": "10000",
    }
    summary.update(over)
    return summary


def write_equity(path: Path, rows: int, *, spike_at: int | None = None) -> None:
    rng = np.random.default_rng(7)
    btc = 40000 * np.exp(np.cumsum(rng.normal(0, 0.001, rows)))
    eth = 2000 * np.exp(np.cumsum(rng.normal(0, 0.0012, rows)))
    value = 0.125 * btc + 2.5 * eth
    if spike_at is not None:
        value[spike_at] = value.max() * 3
    hodl = 0.12 * btc + 2.6 * eth
    w_btc = 0.125 * btc / value
    ts_ns = START_NS + np.arange(rows, dtype=np.int64) * MINUTE_NS
    iso = np.datetime_as_string(ts_ns.astype("datetime64[ns]"), unit="s")
    lines = ["ts,ts_ns,value,hodl_value,drift,w_BTC,w_ETH"]
    for i in range(rows):
        lines.append(f"{iso[i]}Z,{ts_ns[i]},{value[i]:.4f},{hodl[i]:.4f},{abs(w_btc[i] - 0.5):.6f},"
                     f"{w_btc[i]:.6f},{1 - w_btc[i]:.6f}")
    path.write_text("\n".join(lines) + "\n")


def intent(n: int, reason: str, legs: list[dict[str, str]]) -> dict[str, Any]:
    ts = START_NS + n * 600 * MINUTE_NS
    return {"id": f"{n:016x}", "portfolio": "core", "ts_ns": ts, "ts": "", "reason": reason, "drift": 0.052,
            "expected_residual_drift": 0.001, "prices": {"BTC-USDT": 41000.0, "ETH-USDT": 2100.0},
            "weights": {"BTC": 0.55, "ETH": 0.45}, "legs": legs}


def make_run(root: Path, *, rows: int = 600, summary: dict[str, Any] | None = None, fills: bool = True,
             intents: bool = True, spike_at: int | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.json").write_bytes(orjson.dumps(summary or make_summary()))
    write_equity(root / "equity.csv", rows, spike_at=spike_at)
    sell = {"symbol": "BTC-USDT", "side": "sell", "quantity": "0.0100", "expected_price": "41000", "notional": "410"}
    buy = {"symbol": "ETH-USDT", "side": "buy", "quantity": "0.15", "expected_price": "2100", "notional": "315"}
    lines = [intent(0, "start", [dict(buy, quantity="2.5")])] + [intent(i, "threshold", [sell, buy]) for i in (1, 2, 3)]
    (root / "intents.jsonl").write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n" if intents else b"")
    if fills:
        rows_f = ["ts,ts_ns,intent_id,client_order_id,trade_id,symbol,side,quantity,price,fee,fee_asset"]
        for i in (1, 2, 3):
            ts = START_NS + i * 600 * MINUTE_NS
            rows_f.append(f",{ts},{i:016x},k{i:016x}000,t{i}a,BTC-USDT,sell,0.01,41000,0.41,USDT")
            rows_f.append(f",{ts + 1},{i:016x},k{i:016x}010,t{i}b,ETH-USDT,buy,0.15,2100,0.00015,ETH")
        (root / "fills.csv").write_text("\n".join(rows_f) + "\n")
    return root


def test_report_has_every_chart_and_parses(tmp_path: Path) -> None:
    path = render_report(make_run(tmp_path / "run"))
    assert path == tmp_path / "run" / "report.html"
    html = path.read_text()
    parse(html)
    labels = [el.get("aria-label") for el in svgs(html)]
    assert labels == list(CHARTS)
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "sell</span> 0.01 BTC, <span class=\"buy\">buy</span> 0.15 ETH" in html


def test_fees_are_converted_to_the_quote(tmp_path: Path) -> None:
    fills = load_fills(make_run(tmp_path) / "fills.csv", "USDT")
    assert fills.fees[-1] == pytest.approx(3 * (0.41 + 0.00015 * 2100))
    assert fills.volume[-1] == pytest.approx(3 * (0.01 * 41000 + 0.15 * 2100))
    assert bool(np.all(np.diff(fills.ts_s) >= 0))


def test_coin_colours_match_between_chart_and_tables(tmp_path: Path) -> None:
    html = render_report(make_run(tmp_path)).read_text()
    weights_chart = svgs(html)[2]
    strokes = {p.get("stroke") for p in weights_chart.iter("path")}
    assert {"#f7931a", "#627eea"} <= strokes
    assert '<span class="dot" style="background:#f7931a"></span>BTC</td>' in html


def test_cards_show_the_summary_numbers(tmp_path: Path) -> None:
    summary = make_summary()
    html = render_report(make_run(tmp_path, summary=summary)).read_text()
    cards = parse(html).cards
    for key in ("final_value", "premium", "rebalances", "fees_paid", "turnover", "max_drawdown"):
        assert orjson.loads(cards[key]) == summary[key]
    assert orjson.loads(cards["period"]) == [summary["start"], summary["end"]]
    assert "12,345.67" in html and "+2.88%" in html and "-21.00%" in html and "3.10×" in html
    assert '<div class="v pos">+2.88%' in html


def test_negative_premium_is_red(tmp_path: Path) -> None:
    html = render_report(make_run(tmp_path, summary=make_summary(premium=-0.0123))).read_text()
    assert '<div class="v neg">-1.23%' in html


def test_strings_are_escaped(tmp_path: Path) -> None:
    evil = "<script>alert('x')</script>"
    summary = make_summary(portfolio=evil, config='"><img src=x onerror=alert(1)>', mode=evil,
                           holdings={evil: "1", "USDT": "2"})
    run = make_run(tmp_path, summary=summary)
    bad_leg = {"symbol": f"{evil}-USDT", "side": evil, "quantity": evil, "expected_price": "1", "notional": "1"}
    with (run / "intents.jsonl").open("ab") as f:
        f.write(orjson.dumps(intent(4, evil, [bad_leg])) + b"\n")
    html = render_report(run, title=evil).read_text()
    tags = set(parse(html).tags)
    assert "script" not in tags and "img" not in tags
    assert "<script" not in html.lower() and "&lt;script&gt;" in html
    for el in svgs(html):
        assert el.tag == "svg"


def test_missing_optional_files_still_render(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", fills=False, intents=False)
    (run / "intents.jsonl").unlink()
    html = render_report(run).read_text()
    parse(html)
    assert len(svgs(html)) == len(CHARTS)
    assert "no rebalances" in html and html.count(">no data</text>") == 2
    bare = tmp_path / "b"
    bare.mkdir()
    (bare / "summary.json").write_bytes(orjson.dumps(make_summary(holdings={}, targets={}, thresholds={})))
    (bare / "intents.jsonl").write_text("")
    html = render_report(bare).read_text()
    parse(html)
    assert html.count(">no data</text>") == len(CHARTS)


def test_summary_is_required(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"summary\.json"):
        render_report(tmp_path)


def test_comparison_of_three_runs(tmp_path: Path) -> None:
    runs = []
    for i, label in enumerate(("band 3%", "band 5%", "<b>band</b>")):
        summary = make_summary(final_value=11000.0 + 1000 * i, premium=-0.01 + 0.02 * i)
        runs.append((label, make_run(tmp_path / f"r{i}", summary=summary)))
    out = render_comparison(runs, tmp_path / "compare.html")
    html = out.read_text()
    checker = parse(html)
    assert "b" not in checker.tags and "&lt;b&gt;band&lt;/b&gt; ★" in html
    assert html.count("<tr>") == 4
    (chart,) = svgs(html)
    legend = [t.text for t in chart.iter("text") if t.get("class") == "legend-label"]
    assert legend == ["band 3%", "band 5%", "<b>band</b>", "HODL"]


def test_downsampling_keeps_extremes() -> None:
    n = 100_000
    x = np.arange(n, dtype=np.float64)
    y = np.sin(x / 500.0)
    y[31_337] = 50.0
    y[77_777] = -40.0
    xs, ys = downsample_minmax(x, y, 900)
    assert len(xs) <= 2 * 900 + 2
    assert ys.max() == 50.0 and ys.min() == -40.0
    assert xs[ys.argmax()] == 31_337 and xs[0] == 0 and xs[-1] == n - 1
    assert bool(np.all(np.diff(xs) > 0))


def test_big_run_charts_stay_small_and_show_the_spike(tmp_path: Path) -> None:
    run = make_run(tmp_path, rows=100_000, spike_at=54_321)
    html = render_report(run).read_text()
    value_chart = svgs(html)[0]
    for p in value_chart.iter("path"):
        assert (p.get("d") or "").count("L") < 2000
    spike = float(load_equity(run / "equity.csv").value[54_321])
    top = max(float(t.text.replace(",", "")) for t in value_chart.iter("text") if t.get("class") == "tick"
              and re.fullmatch(r"[\d,.]+", t.text or ""))
    assert top >= spike


def test_equity_with_blank_fields_falls_back(tmp_path: Path) -> None:
    path = tmp_path / "equity.csv"
    path.write_bytes(b"ts,ts_ns,value,hodl_value,drift,w_BTC\r\nx,1000000000,10,,0.1,0.5\r\nx,2000000000,11,10.5,,0.6\r\n")
    eq = load_equity(path)
    assert eq.ts_s.tolist() == [1.0, 2.0] and eq.value.tolist() == [10.0, 11.0]
    assert np.isnan(eq.hodl[0]) and eq.hodl[1] == 10.5 and eq.weights["BTC"].tolist() == [0.5, 0.6]


def test_nice_ticks_are_round_and_cover() -> None:
    lo, hi, ticks = nice_ticks(9_812.3, 12_407.9, 6)
    assert lo <= 9_812.3 and hi >= 12_407.9
    assert ticks == [9_500.0, 10_000.0, 10_500.0, 11_000.0, 11_500.0, 12_000.0, 12_500.0]
    assert nice_ticks(0.0, 0.21, 4)[2] == [0.0, 0.1, 0.2, 0.3]
    assert [fmt_percent(v, 0.025) for v in nice_ticks(-0.07, 0.0, 3)[2]] == ["-7.5%", "-5.0%", "-2.5%", "0.0%"]
    assert fmt_number(12_500.0, 250.0) == "12,500" and fmt_number(0.75, 0.25) == "0.75"


def test_time_ticks_are_dates_on_utc_boundaries() -> None:
    lo = datetime(2024, 1, 1, 7, tzinfo=UTC).timestamp()
    days = time_ticks(lo, lo + 10 * 86400, 6)
    assert [label for _, label in days] == ["Jan 02", "Jan 04", "Jan 06", "Jan 08", "Jan 10"]
    months = time_ticks(lo, datetime(2024, 12, 31, tzinfo=UTC).timestamp(), 6)
    assert [label for _, label in months] == ["Mar", "May", "Jul", "Sep", "Nov"]
    evening = datetime(2024, 1, 1, 21, 30, tzinfo=UTC).timestamp()
    hours = time_ticks(evening, evening + 5 * 3600, 6)
    assert [label for _, label in hours] == ["22:00", "23:00", "Jan 02", "01:00", "02:00"]


def test_coin_colours_are_distinct_and_stable() -> None:
    colours = colour_map(["BTC", "ETH", "FOO", "BAR"])
    assert colours["BTC"] == "#f7931a" and len(set(colours.values())) == 4
    assert colour_map(["FOO", "BAR", "BTC", "ETH"]) == {k: colours[k] for k in ("FOO", "BAR", "BTC", "ETH")}


def test_empty_chart_says_no_data() -> None:
    svg = time_chart([Series("x", np.zeros(0), np.zeros(0), "#000")], label="empty")
    assert ET.fromstring(svg).find("text").text == "no data"  # type: ignore[union-attr]


def test_paths_and_escapes_read_as_their_plain_forms() -> None:
    rng = np.random.default_rng(5)
    px, py = rng.uniform(-2e5, 2e6, 300), np.concatenate([rng.uniform(0, 500, 299), [-0.04]])
    flat = np.round(np.column_stack((px, py)), 1).ravel().tolist()
    assert _points(px, py) == "L".join(f"{a:g},{b:g}" for a, b in zip(flat[::2], flat[1::2], strict=True))
    for text in ["a&b<c>\"d'e", "", "plain", "&amp;", 12.5, None]:
        assert esc(text) == html_escape(str(text), quote=True)
