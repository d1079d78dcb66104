"""Small SVG chart primitives: nice ticks, min/max downsampling, time charts with lines, areas, rules, markers."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
YFormat = Callable[[float, float], str]

PALETTE = (
    "#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#ec4899",
    "#14b8a6", "#f97316", "#6366f1", "#84cc16", "#06b6d4", "#a855f7",
)
COIN_COLOURS = {
    "BTC": "#f7931a", "ETH": "#627eea", "SOL": "#9945ff", "USDT": "#26a17b", "USDC": "#2775ca",
    "BNB": "#f0b90b", "XRP": "#00aae4", "ADA": "#0033ad", "DOGE": "#c2a633", "AVAX": "#e84142",
    "DOT": "#e6007a", "LINK": "#2a5ada", "LTC": "#345d9d", "TRX": "#ff060a", "TON": "#0098ea",
}
_TIME_STEPS_SECS = (
    60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86400, 172800, 604800, 1209600,
)
_MONTH_STEPS = (1, 2, 3, 6, 12, 24, 60, 120)
_MONDAY_OFFSET_SECS = 4 * 86400  # the epoch was a Thursday: weekly ticks start on Mondays
_CHAR_PX = 6.6  # rough width of one 11px label character, for legend layout


def esc(text: object) -> str:
    """Text escaped for HTML and XML (attributes too): `html.escape`, without importing its entity tables."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#x27;"))


def colour_map(names: Sequence[str]) -> dict[str, str]:
    """A distinct colour per name: the coin's brand colour when known and still free, else the palette's next."""
    out: dict[str, str] = {}
    for name in names:
        brand = COIN_COLOURS.get(name.upper())
        if brand is not None and brand not in out.values():
            out[name] = brand
    free = [c for c in PALETTE if c not in out.values()]
    for i, name in enumerate(n for n in names if n not in out):
        out[name] = free[i % len(free)] if free else PALETTE[i % len(PALETTE)]
    return {name: out[name] for name in names}


def nice_step(span: float, max_ticks: int) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving at most about max_ticks intervals."""
    raw = span / max(max_ticks, 1)
    if not math.isfinite(raw) or raw <= 0:
        return 1.0
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0):
        if raw <= m * mag * (1 + 1e-9):
            return m * mag
    return 10.0 * mag


def nice_ticks(lo: float, hi: float, max_ticks: int = 5) -> tuple[float, float, list[float]]:
    """Rounded ticks covering [lo, hi]; returns the widened range (first, last tick) and the ticks."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi - lo <= 0:
        pad = abs(hi) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo, max_ticks)
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    count = round((last - first) / step)
    return first, last, [round(first + i * step, 12) for i in range(count + 1)]


def fmt_number(value: float, step: float) -> str:
    """A tick label with as many decimals as the step needs and thousands separators (M/B when huge)."""
    for div, suffix in ((1e9, "B"), (1e6, "M")):
        if step >= div / 10 and value:
            return f"{value / div:,.{_decimals(step / div)}f}{suffix}"
    return f"{value:,.{_decimals(step)}f}"


def fmt_percent(value: float, step: float) -> str:
    """A fraction as a percentage tick label (0.05 -> 5%)."""
    return f"{value * 100:.{_decimals(step * 100)}f}%"


def _decimals(step: float) -> int:
    if step <= 0 or not math.isfinite(step):
        return 0
    places = max(0, -math.floor(math.log10(step) + 1e-9))
    while places < 8 and abs(step * 10**places - round(step * 10**places)) > 1e-6:
        places += 1
    return places


def _time_label(ts_s: float, *, months: bool = False) -> str:
    t = datetime.fromtimestamp(ts_s, UTC)
    if t.hour or t.minute:
        return t.strftime("%H:%M")
    if not months:
        return t.strftime("%b %d")
    return t.strftime("%Y") if t.month == 1 else t.strftime("%b")


def time_ticks(lo_s: float, hi_s: float, max_ticks: int = 7) -> list[tuple[float, str]]:
    """Ticks on UTC-aligned round times (minutes to years) inside [lo_s, hi_s], labelled by what changed."""
    span = hi_s - lo_s
    if not (math.isfinite(span) and span > 0):
        return [(lo_s, datetime.fromtimestamp(lo_s, UTC).strftime("%b %d %H:%M"))] if math.isfinite(lo_s) else []
    raw = span / max(max_ticks, 1)
    for step in _TIME_STEPS_SECS:
        if step >= raw:
            offset = _MONDAY_OFFSET_SECS if step >= 604800 else 0
            t = math.ceil((lo_s - offset) / step) * step + offset
            out = []
            while t <= hi_s:
                out.append((float(t), _time_label(t)))
                t += step
            return out
    months = next((m for m in _MONTH_STEPS if m * 30.44 * 86400 >= raw), _MONTH_STEPS[-1])
    start = datetime.fromtimestamp(lo_s, UTC)
    index = start.year * 12 + start.month - 1
    index += (-index) % months
    if datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC).timestamp() < lo_s:
        index += months
    out = []
    while True:
        ts = datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC).timestamp()
        if ts > hi_s:
            return out
        out.append((ts, _time_label(ts, months=True)))
        index += months


def downsample_minmax(x: F64, y: F64, buckets: int) -> tuple[F64, F64]:
    """At most 2*buckets+2 points of a line sorted by x: per x bucket its min and max (in x order), plus both ends."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if not bool(ok.all()):
        x, y = x[ok], y[ok]
    n = int(x.shape[0])
    if n <= 2 * buckets + 2:
        return x, y
    span = float(x[-1] - x[0])
    if span > 0:
        bucket = np.minimum(((x - x[0]) * (buckets / span)).astype(np.int64), buckets - 1)
    else:
        bucket = np.arange(n, dtype=np.int64) * buckets // n
    order = np.lexsort((y, bucket))
    sorted_bucket = bucket[order]
    starts = np.flatnonzero(np.r_[True, sorted_bucket[1:] != sorted_bucket[:-1]])
    ends = np.r_[starts[1:], n] - 1
    keep = np.sort(np.concatenate((order[starts], order[ends], np.array([0, n - 1]))))
    keep = keep[np.append(True, keep[1:] != keep[:-1])]  # np.unique would import numpy.ma (20-80 ms)
    return x[keep], y[keep]


@dataclass(frozen=True, slots=True)
class Series:
    """One line (or filled area) of a chart: x in seconds since the epoch, y in data units."""

    label: str
    x: F64
    y: F64
    colour: str
    dashed: bool = False
    area: bool = False
    width: float = 1.6
    in_legend: bool = True


@dataclass(frozen=True, slots=True)
class Rule:
    """A horizontal reference line (a target weight, a band)."""

    y: float
    colour: str
    label: str = ""
    dashed: bool = True


@dataclass(frozen=True, slots=True)
class Marker:
    """A small tick on the x axis (a rebalance), with a hover title."""

    x: float
    title: str


@dataclass(frozen=True, slots=True)
class Frame:
    """Maps data coordinates to SVG pixels inside the plot area of a width x height canvas."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    x0: float
    x1: float
    y0: float
    y1: float

    @property
    def plot_width(self) -> int:
        """Width of the plot area in pixels."""
        return self.width - self.left - self.right

    def px(self, x: F64) -> F64:
        """Pixel x of data x."""
        return self.left + (x - self.x0) * (self.plot_width / ((self.x1 - self.x0) or 1.0))

    def py(self, y: F64) -> F64:
        """Pixel y of data y (up is larger)."""
        h = self.height - self.top - self.bottom
        return self.height - self.bottom - (y - self.y0) * (h / ((self.y1 - self.y0) or 1.0))


def _points(px: F64, py: F64) -> str:
    """`x,y` pixel pairs rounded to 0.1, joined by `L` (one %-format for the whole line: the fast way)."""
    flat = np.round(np.column_stack((px, py)), 1).ravel().tolist()
    return "L".join(["%g,%g"] * (len(flat) // 2)) % tuple(flat)


def line_path(frame: Frame, x: F64, y: F64, colour: str, *, width: float = 1.6, dashed: bool = False) -> str:
    """A polyline as an SVG path."""
    if x.shape[0] == 0:
        return ""
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    d = "M" + _points(frame.px(x), frame.py(y))
    return (f'<path d="{d}" fill="none" stroke="{esc(colour)}" stroke-width="{width:g}"'
            f' stroke-linejoin="round"{dash}/>')


def area_path(frame: Frame, x: F64, y: F64, colour: str, *, base: float = 0.0, opacity: float = 0.22) -> str:
    """The area between a line and a base level, with the line on top."""
    if x.shape[0] == 0:
        return ""
    pts = _points(frame.px(x), frame.py(y))
    xs = frame.px(np.array([x[0], x[-1]]))
    yb = float(frame.py(np.array([base]))[0])
    d = f"M{xs[0]:.1f},{yb:.1f}L" + pts + f"L{xs[1]:.1f},{yb:.1f}Z"
    return (f'<path d="{d}" fill="{esc(colour)}" fill-opacity="{opacity:g}" stroke="none"/>'
            + line_path(frame, x, y, colour, width=1.2))


def rule_line(frame: Frame, rule: Rule) -> str:
    """A horizontal dashed line across the plot area, labelled at its right end."""
    y = float(frame.py(np.array([rule.y]))[0])
    x1 = frame.width - frame.right
    dash = ' stroke-dasharray="6 4"' if rule.dashed else ""
    out = (f'<line x1="{frame.left}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="{esc(rule.colour)}"'
           f' stroke-width="1.2"{dash}/>')
    if rule.label:
        out += (f'<text x="{x1 - 4}" y="{y - 4:.1f}" text-anchor="end" class="rule-label"'
                f' fill="{esc(rule.colour)}">{esc(rule.label)}</text>')
    return out


def x_markers(frame: Frame, markers: Sequence[Marker], colour: str) -> str:
    """Small ticks rising from the x axis, one per pixel at most, each with a hover title."""
    if not markers:
        return ""
    base = frame.height - frame.bottom
    xs = frame.px(np.array([m.x for m in markers], dtype=np.float64))
    seen: set[int] = set()
    out = [f'<g class="markers" stroke="{esc(colour)}" stroke-width="1.5">']
    for m, x in zip(markers, xs.tolist(), strict=True):
        key = round(x)
        if key in seen or not frame.left <= x <= frame.width - frame.right:
            continue
        seen.add(key)
        out.append(f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base - 7}"><title>{esc(m.title)}</title></line>')
    out.append("</g>")
    return "".join(out)


def axes(frame: Frame, x_ticks: Sequence[tuple[float, str]], y_ticks: Sequence[float], y_format: YFormat) -> str:
    """Horizontal grid lines with y labels on the left, time labels under the x axis."""
    out = ['<g class="axes">']
    step = (y_ticks[1] - y_ticks[0]) if len(y_ticks) > 1 else 1.0
    right = frame.width - frame.right
    for v, y in zip(y_ticks, frame.py(np.array(y_ticks, dtype=np.float64)).tolist(), strict=True):
        out.append(f'<line class="grid" x1="{frame.left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{frame.left - 6}" y="{y + 3.5:.1f}" text-anchor="end">'
                   f"{esc(y_format(v, step))}</text>")
    base = frame.height - frame.bottom
    out.append(f'<line class="axis" x1="{frame.left}" y1="{base}" x2="{right}" y2="{base}"/>')
    xs = frame.px(np.array([t for t, _ in x_ticks], dtype=np.float64)).tolist()
    for x, (_, label) in zip(xs, x_ticks, strict=True):
        out.append(f'<line class="axis" x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{base + 16}" text-anchor="middle">{esc(label)}</text>')
    out.append("</g>")
    return "".join(out)


def legend(items: Sequence[tuple[str, str, bool]], x: float, y: float) -> str:
    """A row of (label, colour, dashed) swatches starting at (x, y)."""
    out = ['<g class="legend">']
    for label, colour, dashed in items:
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        out.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x + 16:.1f}" y2="{y:.1f}" stroke="{esc(colour)}"'
                   f' stroke-width="2.5"{dash}/>')
        out.append(f'<text class="legend-label" x="{x + 21:.1f}" y="{y + 4:.1f}">{esc(label)}</text>')
        x += 21 + len(label) * _CHAR_PX + 16
    out.append("</g>")
    return "".join(out)


def svg_document(width: int, height: int, body: str, *, label: str) -> str:
    """An inline, responsive <svg> element (scales with its container through viewBox)."""
    return (f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{esc(label)}"'
            f' preserveAspectRatio="xMidYMid meet" font-size="11">{body}</svg>')


def time_chart(
    series: Sequence[Series],
    *,
    label: str,
    width: int = 960,
    height: int = 300,
    y_format: YFormat = fmt_number,
    rules: Sequence[Rule] = (),
    markers: Sequence[Marker] = (),
    marker_colour: str = "#8b93a7",
    y_floor: float | None = None,
    y_ceil: float | None = None,
    legend_extra: Sequence[tuple[str, str, bool]] = (),
) -> str:
    """A chart of series over time with nice axes, a legend, reference rules and x-axis markers."""
    left, right, top, bottom = 64, 16, 30, 28
    buckets = max(width - left - right, 16)
    drawn = [(s, *downsample_minmax(s.x, s.y, buckets)) for s in series]
    drawn = [(s, x, y) for s, x, y in drawn if x.shape[0]]
    if not drawn:
        body = (f'<text class="empty" x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">'
                "no data</text>")
        return svg_document(width, height, body, label=label)
    x_lo = min(float(x[0]) for _, x, _ in drawn)
    x_hi = max(float(x[-1]) for _, x, _ in drawn)
    lows = [float(y.min()) for _, _, y in drawn] + [r.y for r in rules]
    highs = [float(y.max()) for _, _, y in drawn] + [r.y for r in rules]
    if any(s.area for s, _, _ in drawn):
        lows.append(0.0)
        highs.append(0.0)
    lo, hi = min(lows), max(highs)
    pad = (hi - lo) * 0.04
    lo, hi = lo - pad, hi + pad
    if y_floor is not None:
        lo = max(lo, y_floor)
    if y_ceil is not None:
        hi = min(hi, y_ceil)
    y0, y1, y_ticks = nice_ticks(lo, hi, max(3, (height - top - bottom) // 45))
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 1.0, x_hi + 1.0
    frame = Frame(width, height, left, right, top, bottom, x_lo, x_hi, y0, y1)
    parts = [axes(frame, time_ticks(x_lo, x_hi, max(2, frame.plot_width // 110)), y_ticks, y_format)]
    for s, x, y in drawn:
        if s.area:
            parts.append(area_path(frame, x, y, s.colour))
        else:
            parts.append(line_path(frame, x, y, s.colour, width=s.width, dashed=s.dashed))
    parts.extend(rule_line(frame, r) for r in rules)
    parts.append(x_markers(frame, markers, marker_colour))
    items = [(s.label, s.colour, s.dashed) for s, _, _ in drawn if s.in_legend] + list(legend_extra)
    parts.append(legend(items, left, 12))
    return svg_document(width, height, "".join(parts), label=label)
