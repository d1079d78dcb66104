"""Makes the README's pictures with keel's own tools: the demo's terminal view (rich, exported as SVG)
after a real run of the engine on a synthetic market, and the report's value-vs-HODL chart.

Usage: .venv/bin/python docs/make_images.py   (writes docs/img/demo.svg and docs/img/report-value.svg)
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from engine.clock import ReplayClock  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.replay import ColumnarReplay  # noqa: E402
from engine.runner import ListSink, PaperExecutor  # noqa: E402
from feeds.health import SymbolHealth  # noqa: E402
from feeds.synth import synth_ticks  # noqa: E402
from ops.backtest import run_backtest  # noqa: E402
from ops.config import loads_config  # noqa: E402
from ops.demo_config import demo_toml  # noqa: E402
from ops.specs import portfolio_specs  # noqa: E402
from ops.tui import DemoView, ViewState  # noqa: E402

IMG = ROOT / "docs" / "img"


def demo_view(config, cols) -> None:
    clock = ReplayClock(int(cols.ts_ns[0]))
    engine = Engine(clock, portfolio_specs(config))
    sink = ListSink()
    ColumnarReplay(engine, clock, cols, PaperExecutor(engine, sink).execute).run()
    now = clock.now_ns()
    feed = {s: SymbolHealth(s, now - 200_000_000, 0.2, False, 1000, 9.8) for s in cols.symbols}
    rts = engine.runtimes
    state = ViewState(now_ns=now, portfolios=[engine.snapshot(n) for n in rts], feed=feed,
                      recent_intents=sink.intents[-6:], recent_fills=sink.fills[-6:],
                      rebalances={n: rt.rebalances for n, rt in rts.items()}, fees={n: rt.fees_paid for n, rt in rts.items()},
                      events=["demo: threshold rebalance complete"], speed=1.0)
    console = Console(record=True, width=100, height=32, force_terminal=True, color_system="truecolor",
                      file=open(os.devnull, "w"))  # noqa: SIM115  (only the recording matters)
    view = DemoView("keel demo", "http://127.0.0.1:9108/metrics", "var/demo/keel.sqlite", console=console, force=True)
    console.print(view.render(state))
    console.save_svg(str(IMG / "demo.svg"), title="keel demo")


def report_chart(config, cols) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_backtest(config, cols, Path(tmp))
        html = (Path(tmp) / "report.html").read_text()
    svg = re.search(r"<svg\b.*?</svg>", html, re.S)
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    assert svg is not None and style is not None
    text = svg.group(0).replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" style="background:#fff" ', 1)
    text = text.replace(">", f"><style>{style.group(1)}</style>", 1)
    (IMG / "report-value.svg").write_text(text)


def main() -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    config = loads_config(demo_toml(seed=3, speed=1.0), base_dir=ROOT)
    cols = synth_ticks(["BTC", "ETH", "SOL"], n_ticks=400_000, seed=3, step_ns=1_000_000_000, swing=0.15,
                       swing_period_ns=6 * 3600 * 10**9)
    demo_view(config, cols)
    report_chart(config, cols)
    print(f"wrote {IMG / 'demo.svg'} and {IMG / 'report-value.svg'}")


if __name__ == "__main__":
    main()
