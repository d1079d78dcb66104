"""The config described in words: the Markdown reference (from the structs) and `explain` for check-config.

`python -m ops.configdoc > docs/config.md` regenerates the reference; a test keeps the two equal.
"""
from __future__ import annotations

import sys
from decimal import Decimal
from typing import Any, get_args, get_origin

import msgspec

from ops.config_schema import (
    Config,
    FieldSpec,
    PortfolioConfig,
    RebalanceConfig,
    field_specs,
    is_section,
    literal_values,
    toml_value,
)

_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_KEY_PLACEHOLDERS = {"overrides": "COIN", "symbols": "BASE-QUOTE"}
_SCALAR_NAMES = {float: ("number", "numbers"), int: ("integer", "integers"), str: ("string", "strings"),
                 bool: ("boolean", "booleans"), Decimal: ("exact decimal", "exact decimals")}

_INTRO = """\
# keel configuration reference

Generated from the code by `python -m ops.configdoc > docs/config.md`; do not edit by hand
(a test fails when this file and the code disagree).

keel reads one TOML file (`keel run keel.toml`, `keel backtest keel.toml ...`). It is loaded once into frozen, typed
structs: an unknown key, a wrong type or a value out of range stops the start with one line
naming the file, the dotted key and the fix, for example

    keel.toml: rebalance.threshold = 0.005 is under the 1% minimum; raise it to at least 0.01 or set rebalance.allow_low_threshold = true

Numbers for money and quantities (`capital`, `holdings`, `fee_rate`, `step_size`, `min_notional`)
are read as exact decimals from the text of the file. Secrets never go in the file: keys
such as `api_key_env` hold the NAME of an environment variable. Data files (`supply_file`,
`feed.file`) are relative to the config file's folder and may not leave it; `ledger.path` is
relative to the current directory. `keel check-config FILE` validates a file and explains it
in words; `examples/` holds one commented file per framework.

A minimal file:

```toml
[portfolio]
name = "main"
targets = { BTC = 0.5, ETH = 0.3, SOL = 0.2 }
```

## Rules checked beyond the types

- Coins are 1-20 upper-case letters or digits (`BTC`); symbols are `BASE-QUOTE` (`BTC-USDT`).
- Exactly one of `[portfolio]` and `[[portfolios]]`; portfolio names are unique.
- Exactly one of `targets` and `allocation` per portfolio. Targets are each in (0, 1] and sum to 1
  (tolerance 1e-9). The quote may be a target (a stablecoin sleeve); any other stablecoin may not.
- Thresholds (`threshold`, `abs_threshold`, `rel_threshold`, also in overrides) are at least 0.01
  (the exchanges' 1% minimum) and under 1, unless `allow_low_threshold = true` (then above 0).
  `band = "hybrid"` needs `abs_threshold` and `rel_threshold`; other bands refuse them.
- `interval` must parse (15m, 1h, 4h, 1d, 7d, 1w, 1M, 3M, 1y: a count and a unit m h d w M y).
- An override names a coin of the portfolio(s) it applies to.
- `allocation`: only the keys of its kind; market_cap needs `coins` and a `supply_file` listing
  them (and a `cap` that can hold the basket); core_satellite needs `core`, `core_weight` and
  `satellites`, and `satellite_weights`, when given, name exactly the satellites.
- `start = "holdings"` needs `holdings` (coins of the portfolio and its quote, each >= 0);
  `start = "quote"` refuses them.
- `feed.symbols`, when given, covers every symbol the portfolios need; `source = "file"` needs `file`.
- `venue.base_url` is for a local test server (127.0.0.1, localhost, ::1) unless `sandbox = true`;
  the `*_env` keys must be environment variable names (A-Z, 0-9, _).
"""


def render_reference() -> str:
    """The Markdown reference of every config table and key, built from the structs."""
    headers: dict[type, list[str]] = {Config: ["top level"]}
    _collect(Config, "", headers)
    parts = [_INTRO]
    for cls, names in headers.items():
        parts.append(_section(cls, names))
    return "\n".join(parts).rstrip("\n") + "\n"


def _collect(cls: type, prefix: str, headers: dict[type, list[str]]) -> None:
    for spec in field_specs(cls):
        base = spec.base
        origin = get_origin(base)
        if is_section(base):
            child, header = f"{prefix}{spec.name}", f"[{prefix}{spec.name}]"
        elif origin is list and is_section(get_args(base)[0]):
            base = get_args(base)[0]
            child, header = f"{prefix}{spec.name}", f"[[{prefix}{spec.name}]]"
        elif origin is dict and is_section(get_args(base)[1]):
            base = get_args(base)[1]
            child = f"{prefix}{spec.name}.{_KEY_PLACEHOLDERS.get(spec.name, 'KEY')}"
            header = f"[{child}]"
        else:
            continue
        headers.setdefault(base, []).append(header)
        _collect(base, f"{child}.", headers)


def _section(cls: type, headers: list[str]) -> str:
    doc = (cls.__doc__ or "").strip().splitlines()[0]
    title = " / ".join(h if h == "top level" else f"`{h}`" for h in headers)
    lines = [f"## {title}", "", doc, "",
             "| key | type | default | description |", "| --- | --- | --- | --- |"]
    for spec in field_specs(cls):
        if cls is Config and spec.name == "path":
            continue
        lines.append(f"| `{spec.name}` | {_cell(_type_words(spec))} | {_cell(_default_words(spec))} | "
                     f"{_cell(spec.description)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type_words(spec: FieldSpec) -> str:
    words = _type_name(spec.base)
    if spec.bounds:
        words += ", " + " and ".join(f"{_OPS[k]} {v:g}" for k, v in spec.bounds.items())
    return words


def _type_name(tp: Any, plural: bool = False) -> str:
    values = literal_values(tp)
    if values is not None:
        return " | ".join(f'`"{v}"`' for v in values)
    if is_section(tp):
        return "tables" if plural else "table"
    origin = get_origin(tp)
    if origin is list:
        return f"array of {_type_name(get_args(tp)[0], plural=True)}"
    if origin is dict:
        inner = get_args(tp)[1]
        return "tables by key" if is_section(inner) else f"table of {_type_name(inner, plural=True)}"
    names = _SCALAR_NAMES.get(tp, (str(tp), str(tp)))
    return names[1] if plural else names[0]


def _default_words(spec: FieldSpec) -> str:
    if spec.default is msgspec.NODEFAULT:
        return "required"
    if spec.default is None:
        return "not set"
    if isinstance(spec.default, msgspec.Struct):
        return "see its section"
    return f"`{toml_value(spec.default, limit=200)}`"


def explain(config: Config) -> str:
    """The config in words, for `keel check-config`: portfolios, triggers, venue, feed, ledger, metrics."""
    lines = [f"config {config.path or '(text)'}"]
    for p in config.all_portfolios():
        lines += _explain_portfolio(p, config.rebalance_for(p))
    v = config.venue
    if v.kind == "paper":
        venue = (f"paper (simulated fills at the feed's prices), fee {_pct(float(v.fee_rate))}, slippage "
                 f"{v.slippage_bps:g} bps, step {toml_value(v.step_size)}, min notional {toml_value(v.min_notional)}")
    else:
        where = f" at {v.base_url}" if v.base_url else (" sandbox" if v.sandbox else " (real money)")
        venue = (f"{v.exchange} through ccxt{where}, {v.order_type} orders, keys from the environment variables "
                 f"{v.api_key_env} and {v.api_secret_env}")
    lines.append(f"venue: {venue}")
    f = config.feed
    sources = {"sim": f"the local simulator on {f.sim_host}:{f.sim_port or 'any free port'} (seed {f.sim_seed}, "
                      f"{f.sim_rate_hz:g} ticks/s per symbol)",
               "binance": "Binance live websockets", "kraken": "Kraken live websockets",
               "okx": "OKX live websockets",
               "file": f"recorded ticks from {f.file} at {f.speed:g}x speed"}
    stale = f"stale after {_duration(f.stale_secs)}" if f.stale_secs else "no stale check"
    lines.append(f"feed: {sources[f.source]}; symbols {', '.join(config.symbols())}; {f.price} prices; {stale}")
    lines.append(f"ledger: {config.ledger.path}")
    m = config.metrics
    lines.append(f"metrics: http://{_host(m.host)}:{m.port or 'any free port'}/metrics" if m.enabled else "metrics: off")
    q = config.mqtt
    lines.append(f"mqtt: {q.host}:{q.port}{' with TLS' if q.tls else ''}, topics under {q.prefix}" if q.enabled
                 else "mqtt: off")
    return "\n".join(lines)


def _explain_portfolio(p: PortfolioConfig, rb: RebalanceConfig) -> list[str]:
    out = [f"portfolio {p.name} (quote {p.quote}): {_weights_words(p)}"]
    if p.start == "quote":
        out.append(f"  starts from {toml_value(p.capital)} {p.quote}, bought into the targets")
    else:
        held = ", ".join(f"{c} {toml_value(q)}" for c, q in p.holdings.items())
        out.append(f"  starts from the holdings it adopts: {held}")
    out.append(f"  trigger: {_trigger_words(rb)}")
    for coin, o in rb.overrides.items():
        words = _band_words(o.kind or rb.band, _pick(o.threshold, rb.threshold),
                            _pick(o.abs_threshold, rb.abs_threshold), _pick(o.rel_threshold, rb.rel_threshold))
        out.append(f"  {coin} has its own band: rebalances when its weight is {words.removeprefix(_ANY)}")
    if rb.target == "edge":
        out.append(f"  trades back to the nearest band edge ({_pct(rb.edge_margin)} of the band inside it)")
    else:
        out.append("  trades back to the target weights (the band centre)")
    if p.floor_value:
        out.append(f"  alerts when its value falls below {p.floor_value:g} {p.quote}")
    return out


def _weights_words(p: PortfolioConfig) -> str:
    a = p.allocation
    if a is None:
        return ", ".join(f"{c} {_pct(w)}" for c, w in p.targets.items())
    sleeve = f", {p.quote} {_pct(a.quote_weight)} (stablecoin sleeve)" if a.quote_weight else ""
    if a.kind == "equal":
        each = (1.0 - a.quote_weight) / len(a.coins)
        return f"equal weights over {', '.join(a.coins)} ({_pct(each)} each){sleeve}"
    if a.kind == "market_cap":
        cap = f", at most {_pct(a.cap)} each" if a.cap is not None else ""
        return (f"market-cap weights over {', '.join(a.coins)} (supplies from {a.supply_file}{cap}, "
                f"recomputed every {_duration(a.recompute_secs)}){sleeve}")
    split = (", ".join(f"{c} {w:g}" for c, w in a.satellite_weights.items()) if a.satellite_weights
             else "equally")
    rest = 1.0 - (a.core_weight or 0.0)
    return f"core {a.core} {_pct(a.core_weight or 0.0)}; satellites {', '.join(a.satellites)} share {_pct(rest)} ({split})"


def _trigger_words(rb: RebalanceConfig) -> str:
    band = _band_words(rb.band, rb.threshold, rb.abs_threshold, rb.rel_threshold)
    debounce = f" for at least {_duration(rb.debounce_secs)}" if rb.debounce_secs else ""
    window = f", at most once per {_duration(rb.window_secs)}" if rb.window_secs else ""
    calendar = f"at every {rb.interval} boundary (UTC)" + (
        f" if any coin's weight is at least {_pp(rb.min_deviation)} off target" if rb.min_deviation else "")
    if rb.mode == "threshold":
        return f"rebalances when {band}{debounce}{window}"
    if rb.mode == "calendar":
        return f"rebalances {calendar}{window}"
    if rb.mode == "hybrid":
        return f"rebalances when {band}{debounce}, and {calendar}{window}"
    return f"observes only, never trades: computes and publishes the intents it would send when {band}{debounce}{window}"


_ANY = "any coin's weight is "


def _band_words(kind: str, threshold: float | None, abs_t: float | None, rel_t: float | None) -> str:
    if kind == "absolute":
        return f"{_ANY}{_pp(threshold or 0.0)} off target"
    if kind == "relative":
        return f"{_ANY}off target by {_pct(threshold or 0.0)} of that target"
    return f"{_ANY}{_pp(abs_t or 0.0)} off target or off by {_pct(rel_t or 0.0)} of that target"


def _pick(own: float | None, inherited: float | None) -> float | None:
    return own if own is not None else inherited


def _pct(x: float) -> str:
    return f"{x * 100:.6g}%"


def _pp(x: float) -> str:
    return f"{x * 100:.6g} percentage point" + ("" if x * 100 == 1 else "s")


def _duration(secs: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs >= size and secs % size == 0:
            n = int(secs // size)
            return f"{n} {unit}{'' if n == 1 else 's'}"
    return f"{secs:g} second{'' if secs == 1 else 's'}"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main() -> None:
    """Write the reference to stdout (`python -m ops.configdoc > docs/config.md`)."""
    sys.stdout.write(render_reference())


if __name__ == "__main__":
    main()
