"""The live terminal view of `keel demo` and `keel run --tui`: weights against targets, drift against the
band, the post-rebalance window, value against HODL, the last intents and fills, and feed health.

`DemoView.render(state)` is a pure function of a `ViewState` (tests print it to a recording console);
`DemoView.run` refreshes it with `rich.live.Live` until an event is set. The layout adapts to the width
and height it is given: bars and side columns go first on narrow terminals, lists shrink on short ones.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from engine.types import Fill, Intent, PortfolioSnapshot, Side, split_symbol

log = logging.getLogger(__name__)

NS = 1_000_000_000
EIGHTHS = " ▏▎▍▌▋▊▉"
FULL = "█"
MAX_LIST_ROWS = 8
GAUGE_CELLS = 16
BAR_MIN = 56  # below this width the weight bars are dropped


class SymbolHealthLike(Protocol):
    """What the view needs of one symbol's feed health (`feeds.health.SymbolHealth` fits)."""

    @property
    def age_secs(self) -> float:
        """Seconds since the last tick."""
        ...

    @property
    def stale(self) -> bool:
        """True when the symbol is flagged stale."""
        ...

    @property
    def ticks_per_sec(self) -> float:
        """Recent tick rate."""
        ...


@dataclass(frozen=True, slots=True)
class ViewState:
    """Everything one frame shows; built by the service from the engine, feed health and execution."""

    now_ns: int
    portfolios: list[PortfolioSnapshot]
    feed: Mapping[str, SymbolHealthLike] = field(default_factory=dict)
    recent_intents: list[Intent] = field(default_factory=list)
    recent_fills: list[tuple[str, Fill]] = field(default_factory=list)
    rebalances: Mapping[str, int] = field(default_factory=dict)
    fees: Mapping[str, Decimal] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    speed: float = 1.0


# formatting -------------------------------------------------------------------------------------------


def clock_text(ts_ns: int, with_date: bool = False) -> str:
    """ns since the epoch as UTC `HH:MM:SS` (or `YYYY-MM-DD HH:MM:SS`)."""
    t = dt.datetime.fromtimestamp(ts_ns // NS, tz=dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def countdown(secs: float) -> str:
    """Seconds as `mm:ss` (`h:mm:ss` from an hour), rounded up so 0:00 means closed."""
    total = max(0, math.ceil(secs))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def money(x: float | Decimal) -> str:
    """An amount of quote with thousands separators and cents."""
    return f"{x:,.2f}"


def price_text(p: float | Decimal) -> str:
    """A price with as many decimals as its size needs."""
    if p >= 100:
        return f"{p:,.2f}"
    if p >= 1:
        return f"{p:.4f}"
    return f"{p:.6g}"


def qty_text(q: Decimal) -> str:
    """A quantity in at most 6 significant digits."""
    return f"{q:.6g}" if q != q.to_integral_value() or abs(q) >= 10**6 else f"{q:.0f}"


def pp(x: float) -> str:
    """A weight difference in percentage points."""
    return f"{x * 100:+.1f}pp"


def band_style(ratio: float) -> str:
    """Colour of a deviation by how much of its band it uses."""
    if not math.isfinite(ratio) or ratio >= 1.0:
        return "bold red"
    return "yellow" if ratio >= 0.5 else "green"


def _usage(deviation: float, threshold: float) -> float:
    return abs(deviation) / threshold if threshold > 0 and math.isfinite(threshold) else 0.0


# bars -------------------------------------------------------------------------------------------------


def weight_bar(weight: float, target: float, threshold: float, scale: float, width: int, style: str) -> Text:
    """`█████▌··|··  `: the weight as a bar, the band as dots, the target as `|`, on `width` cells of `scale`."""
    width = max(1, width)
    scale = scale if scale > 0 else 1.0
    filled = max(0.0, min(weight / scale, 1.0)) * width
    full = int(filled)
    part = int((filled - full) * 8)
    mark = min(width - 1, max(0, round(target / scale * width - 0.5)))
    lo = round((target - threshold) / scale * width) if math.isfinite(threshold) else mark
    hi = round((target + threshold) / scale * width) if math.isfinite(threshold) else mark
    cells: list[tuple[str, str]] = []
    for i in range(width):
        if i < full:
            ch, st = FULL, style
        elif i == full and part:
            ch, st = EIGHTHS[part], style
        else:
            ch, st = ("·", "dim") if lo <= i <= hi else (" ", "")
        if i == mark:
            ch, st = ("|", f"reverse bold {style}") if st == style else ("|", "bold")
        cells.append((ch, st))
    text = Text(no_wrap=True, overflow="crop")
    run, run_style = "", cells[0][1]
    for ch, st in cells:  # one span per run of equal style, not one per cell
        if st != run_style:
            text.append(run, run_style)
            run, run_style = "", st
        run += ch
    text.append(run, run_style)
    return text


def gauge(ratio: float, cells: int = GAUGE_CELLS) -> Text:
    """`▕██████░░░░▏`: how much of the band the worst coin uses (full = a rebalance is due)."""
    style = band_style(ratio)
    filled = max(0.0, min(ratio if math.isfinite(ratio) else 1.0, 1.0)) * cells
    full = int(filled)
    part = int((filled - full) * 8)
    text = Text("▕", style="dim")
    text.append(FULL * full + (EIGHTHS[part] if part else ""), style)
    text.append("░" * (cells - full - (1 if part else 0)), "dim")
    text.append("▏", "dim")
    return text


# the view ---------------------------------------------------------------------------------------------


class DemoView:
    """The live view: `render(state)` gives one frame; `run` keeps it on screen until `stop` is set."""

    def __init__(self, title: str, metrics_url: str | None, ledger_path: str, *, console: Console | None = None,
                 force: bool = False, screen: bool = False) -> None:
        self.title = title
        self.metrics_url = metrics_url
        self.ledger_path = ledger_path
        self.console = console if console is not None else Console()
        self.force = force
        self.screen = screen

    @property
    def enabled(self) -> bool:
        """True when `run` draws: stdout is a terminal, or the view was forced."""
        return self.force or self.console.is_terminal

    def render(self, state: ViewState) -> RenderableType:
        """One frame of the view (it lays itself out for the width and height it is printed at)."""
        return _Frame(self, state)

    async def run(self, get_state: Callable[[], ViewState], stop: asyncio.Event, refresh_hz: float = 4) -> None:
        """Redraw `refresh_hz` times a second until `stop` is set; draws nothing when not enabled."""
        if not refresh_hz > 0:
            raise ValueError(f"refresh_hz must be > 0, got {refresh_hz}")
        if not self.enabled:
            log.info("terminal view off: stdout is not a terminal")
            await stop.wait()
            return
        with Live(console=self.console, screen=self.screen, auto_refresh=False, redirect_stdout=False,
                  redirect_stderr=False, transient=False) as live:
            while True:
                live.update(self.render(get_state()), refresh=True)
                if stop.is_set():
                    return
                try:
                    await asyncio.wait_for(stop.wait(), 1.0 / refresh_hz)
                except TimeoutError:
                    pass


def _line(*parts: tuple[str, str] | str) -> Text:
    """A one-line Text cropped with an ellipsis at the right edge."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for p in parts:
        text.append(*(p if isinstance(p, tuple) else (p,)))
    return text


@dataclass(frozen=True, slots=True)
class _Frame:
    """One frame, laid out at render time for the width and height the console offers."""

    view: DemoView
    state: ViewState

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        st = self.state
        width = options.max_width
        height = options.height or options.max_height
        events = st.events[-2:] if height >= 24 else st.events[-1:]
        feed_lines = self.feed_lines(width)
        full_h = sum(len(s.targets) + 5 for s in st.portfolios)
        compact = 2 + len(events) + len(feed_lines) + full_h + 4 > height
        if compact:  # short terminal: the header already names stale feeds
            tight = 2 + len(events) + len(feed_lines) + sum(len(s.targets) + 2 for s in st.portfolios) > height
            events, feed_lines = (events[:0], feed_lines[:0]) if tight else (events, feed_lines)
        fixed = 2 + len(events) + len(feed_lines)
        parts: list[RenderableType] = [self.header(width), *feed_lines]
        parts += [self.portfolio(s, width, compact) for s in st.portfolios]
        used = fixed + (sum(len(s.targets) + 2 for s in st.portfolios) if compact else full_h)
        rows = min(MAX_LIST_ROWS, height - used - 2)
        if rows >= 1:
            parts.append(self.activity(width, rows))
        parts += [_line((e, "italic")) for e in events]
        v = self.view
        where = [f"metrics {v.metrics_url}" if v.metrics_url else "metrics off", f"ledger {v.ledger_path}"]
        parts.append(_line((" · ".join([*where, "Ctrl-C to stop"] if width >= 80 else ["Ctrl-C to stop", *where]),
                            "dim")))
        yield Group(*parts)

    def header(self, width: int) -> Text:
        """Title, time, replay speed and how many feeds are healthy."""
        st = self.state
        text = _line((f" {self.view.title} ", "bold white on blue"),
                     (f"  {clock_text(st.now_ns, with_date=width >= 70)}{' UTC' if width >= 50 else ''}", "bold"))
        stale = [s for s, h in st.feed.items() if h.stale]
        if stale:
            text.append(f"  STALE {', '.join(stale)}", "bold red")
        if st.feed:
            text.append("  feeds ")
            text.append(f"{len(st.feed) - len(stale)}/{len(st.feed)} ok", "yellow" if stale else "green")
        if st.speed != 1.0:
            text.append(f"  speed {st.speed:g}x", "cyan")
        return text

    def feed_lines(self, width: int) -> list[Text]:
        """Feed health per symbol (age of the last tick, ticks/s, STALE in red), several symbols a line."""
        items = []
        for symbol, h in self.state.feed.items():
            item = _line((symbol, "bold red" if h.stale else ""), " ")
            if h.stale:
                item.append(f"STALE {h.age_secs:.0f}s", "bold red")
            else:
                item.append(f"{h.age_secs:.1f}s", "yellow" if h.age_secs >= 2 else "")
                item.append(f" {h.ticks_per_sec:.1f}/s", "dim")
            items.append(item)
        if not items:
            return []
        cell = max(len(i) for i in items) + 3
        per_line = max(1, (width - 5) // cell)
        lines = []
        for k in range(0, len(items), per_line):
            line = _line(("feed " if k == 0 else "     ", "dim"))
            for item in items[k:k + per_line]:
                line.append_text(item)
                line.append(" " * (cell - len(item)))
            lines.append(line)
        return lines

    def portfolio(self, s: PortfolioSnapshot, width: int, compact: bool) -> RenderableType:
        """One portfolio: weights against targets, the band gauge, the window and value against HODL."""
        inner = width if compact else width - 4  # the panel's border and padding
        holdings = {c: qty_text(s.holdings.get(c, Decimal(0))) for c in s.targets}
        coin_w = max([4, *(len(c) for c in s.targets)])
        cols = [("now", 6), ("target", 6), ("dev", 7)]
        if width >= 88:
            cols += [("band", 5), ("holding", max([7, *(len(h) for h in holdings.values())]))]
        bar_w = inner - coin_w - sum(w + 2 for _, w in cols) - 2
        bars = width >= BAR_MIN and bar_w >= 8
        scale = min(1.0, 1.05 * max((max(s.weights.get(c, 0.0), t + _finite(s.thresholds.get(c, 0.0)))
                                     for c, t in s.targets.items()), default=1.0))
        rows = []
        if not compact:
            head = _line(("coin".ljust(coin_w), "dim"))
            if bars:
                head.append("  " + "weight  | target  · band".ljust(bar_w), "dim")
            for name, cw in cols:
                head.append("  " + name.rjust(cw), "dim")
            rows.append(head)
        for coin, target in s.targets.items():
            w = s.weights.get(coin, 0.0)
            d = s.deviations.get(coin, w - target)
            thr = s.thresholds.get(coin, math.inf)
            style = band_style(_usage(d, thr))
            row = _line((coin.ljust(coin_w), "bold"))
            if bars:
                row.append("  ")
                row.append_text(weight_bar(w, target, thr, scale, bar_w, style))
            cells = [(f"{w:.1%}", ""), (f"{target:.1%}", ""), (pp(d), style),
                     (f"±{thr * 100:.1f}" if math.isfinite(thr) else "-", "dim"), (holdings[coin], "")]
            for (text, st), (_, cw) in zip(cells, cols, strict=False):
                row.append(" " * (2 + max(0, cw - len(text))))
                row.append(text, st)
            rows.append(row)
        if compact:
            title = _line((s.name, "bold blue"), "  ")
            title.append_text(self.value_line(s))
            return Group(title, self.trigger_line(s, width), *rows)
        border = "red" if s.stale or (0 < s.value < s.floor_value) else "blue"
        return Panel(Group(self.value_line(s), *rows, self.trigger_line(s, width)), title=f"[bold]{s.name}[/] · "
                     f"{s.mode} · {s.quote}", title_align="left", border_style=border, padding=(0, 1))

    def value_line(self, s: PortfolioSnapshot) -> Text:
        """Value, HODL value, the premium (green or red), rebalances and fees."""
        if not math.isfinite(s.value):
            return _line(("waiting for prices", "yellow"))
        text = _line((f"{money(s.value)} {s.quote}", "bold"))
        if s.hodl_value > 0 and math.isfinite(s.hodl_value):
            gain = s.value - s.hodl_value
            text.append("  vs HODL ")
            text.append(f"{s.value / s.hodl_value - 1.0:+.2%} ({gain:+,.2f})", "bold green" if gain >= 0 else "bold red")
            text.append(f"  HODL {money(s.hodl_value)}")
        if 0 < s.value < s.floor_value:
            text.append(f"  BELOW FLOOR {money(s.floor_value)}", "bold red")
        text.append(f"  rebalances {self.state.rebalances.get(s.name, 0)}")
        fees = self.state.fees.get(s.name)
        if fees is not None:
            text.append(f"  fees {money(fees)}")
        return text

    def trigger_line(self, s: PortfolioSnapshot, width: int) -> Text:
        """How much of its band the worst coin uses, the trigger state with the window countdown, that coin."""
        worst, ratio = max(((c, _usage(d, s.thresholds.get(c, math.inf))) for c, d in s.deviations.items()),
                           key=lambda x: x[1], default=("", 0.0))
        text = _line("band ")
        text.append_text(gauge(ratio, GAUGE_CELLS if width >= BAR_MIN else GAUGE_CELLS // 2))
        text.append(f" {ratio:4.0%}  ", band_style(ratio))
        if s.mode == "observe":
            text.append("OBSERVE ", "bold blue")
        if s.stale:
            text.append("STALE prices: trigger held", "bold red")
        elif s.paused or s.trigger_state == "paused":
            text.append("PAUSED", "bold magenta")
        elif s.trigger_state == "cooldown":
            text.append("window ", "cyan")
            text.append(countdown(s.window_remaining_secs), "bold cyan")
            text.append(" left", "cyan")
        elif s.trigger_state == "armed":
            text.append("ARMED: breach held, debouncing", "bold yellow")
        else:
            text.append("due", "bold red") if ratio >= 1.0 else text.append("watching", "green")
        if worst:
            thr = s.thresholds.get(worst, math.inf)
            text.append(f"  worst {worst} {pp(s.deviations[worst])}" + (f" of ±{thr * 100:.1f}" if math.isfinite(thr)
                                                                         else ""), "dim")
        return text

    def activity(self, width: int, rows: int) -> RenderableType:
        """The last intents and the last fills, newest first, side by side (stacked when narrow)."""
        st = self.state
        many = len(st.portfolios) > 1
        name_w = max((len(s.name) for s in st.portfolios), default=4)
        intents = []
        for i in list(reversed(st.recent_intents))[:rows]:
            legs = ", ".join(f"{leg.side.value} {split_symbol(leg.symbol)[0]}" for leg in i.legs)
            intents.append(_line((clock_text(i.ts_ns), "dim"), " ", (i.portfolio.ljust(name_w) + " ") if many else "",
                                 ((i.reason.value + ("/obs" if i.observe else "")).ljust(10), "bold"),
                                 f"{i.drift:5.1%} ", legs or "no legs"))
        fills = []
        for portfolio, f in list(reversed(st.recent_fills))[:rows]:
            buy = f.side is Side.BUY
            fills.append(_line((clock_text(f.ts_ns), "dim"), " ", (portfolio.ljust(name_w) + " ") if many else "",
                               ("BUY  " if buy else "SELL ", "green" if buy else "red"),
                               f"{split_symbol(f.symbol)[0]} {qty_text(f.quantity)} @{price_text(f.price)}",
                               (f" fee {float(f.fee):.3g}", "dim")))
        tall = max(len(intents), len(fills), 1)
        if width < BAR_MIN:
            return Group(*_box("last fills", fills, width, tall))
        left_w = width * 11 // 20
        boxes = zip(_box("last intents", intents, left_w, tall), _box("last fills", fills, width - left_w, tall),
                    strict=True)
        return Group(*(Text.assemble(a, b, no_wrap=True) for a, b in boxes))


def _box(title: str, lines: list[Text], width: int, rows: int) -> list[Text]:
    """A rounded box drawn as lines (much cheaper than a Panel at 4 frames a second)."""
    inner = max(1, width - 4)
    out = [_line(("╭─ ", "dim"), (title, "dim"), (" " + "─" * max(0, width - 5 - len(title)) + "╮", "dim"))]
    body = lines or [_line(("none yet", "dim"))]
    for k in range(rows):
        text = body[k].copy() if k < len(body) else Text()
        text.truncate(inner, overflow="ellipsis", pad=True)
        out.append(Text.assemble(("│ ", "dim"), text, (" │", "dim"), no_wrap=True))
    out.append(_line(("╰" + "─" * max(0, width - 2) + "╯", "dim")))
    return out


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


__all__ = ["DemoView", "SymbolHealthLike", "ViewState", "countdown", "gauge", "weight_bar"]
