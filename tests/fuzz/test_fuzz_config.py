"""Fuzzed config files: every key wrong in every way must give one `ConfigError` line naming the key.

Valid base documents reach every key of the schema; each key is then given a wrong type, a value out of
its bounds, a value outside its allowed words, a place in the wrong table, or is removed when required;
every table gets an unknown key; the TOML text itself gets syntax errors. A hypothesis test then puts
arbitrary TOML values at arbitrary keys: the answer is a Config or a one-line ConfigError, nothing else.
"""
from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.config import Config, ConfigError, loads_config
from ops.config_schema import field_specs, is_section, literal_values, unwrap
from tests.fuzz import family

NAME = "fuzz.toml"
Doc = dict[str, Any]
Path_ = tuple[str | int, ...]

REBALANCE: Doc = {"mode": "threshold", "band": "absolute", "threshold": 0.05, "allow_low_threshold": False,
                  "debounce_secs": 5.0, "window_secs": 300.0, "interval": "1d", "min_deviation": 0.03,
                  "target": "centre", "edge_margin": 0.1, "overrides": {"SOL": {"kind": "relative", "threshold": 0.25}}}
VENUE: Doc = {"kind": "ccxt", "fee_rate": 0.001, "slippage_bps": 5.0, "min_notional": 5, "step_size": 0.0001,
              "symbols": {"BTC-USDT": {"step_size": 0.00001, "min_notional": 10}}, "latency_ms": 0.0,
              "exchange": "binance", "sandbox": False, "order_type": "limit_ioc", "ioc_spread_bps": 10.0,
              "api_key_env": "KEEL_API_KEY", "api_secret_env": "KEEL_API_SECRET", "base_url": "http://127.0.0.1:8080",
              "timeout_secs": 10.0, "fill_timeout_secs": 30.0}
FEED: Doc = {"source": "file", "symbols": ["BTC-USDT", "ETH-USDT", "SOL-USDT"], "stale_secs": 10.0,
             "outlier_fraction": 0.2, "price": "mid", "file": "ticks.csv", "speed": 1.0, "sim_seed": 1,
             "sim_host": "127.0.0.1", "sim_port": 0, "sim_rate_hz": 20.0, "sim_swing": 0.05, "reconnect_max_secs": 30.0}
SERVICES: Doc = {
    "ledger": {"path": "var/keel.sqlite"},
    "metrics": {"enabled": True, "host": "127.0.0.1", "port": 9108},
    "mqtt": {"enabled": True, "host": "127.0.0.1", "port": 1883, "prefix": "keel/", "username_env": "KEEL_MQTT_USERNAME",
             "password_env": "KEEL_MQTT_PASSWORD", "tls": True, "ca_file": "ca.pem", "client_id": "keel",
             "drift_interval_secs": 1.0},
}
BASES: dict[str, Doc] = {
    "every_section": {
        "portfolio": {"name": "main", "quote": "USDT", "capital": 10000, "start": "holdings",
                      "holdings": {"BTC": 0.1, "USDT": 500}, "targets": {"BTC": 0.5, "ETH": 0.3, "SOL": 0.2},
                      "floor_value": 100.0},
        "rebalance": REBALANCE, "venue": VENUE, "feed": FEED, **SERVICES,
    },
    "hybrid": {
        "portfolios": [
            {"name": "a", "targets": {"BTC": 0.6, "USDT": 0.4},
             "rebalance": {"band": "hybrid", "abs_threshold": 0.05, "rel_threshold": 0.25,
                           "overrides": {"BTC": {"abs_threshold": 0.08, "rel_threshold": 0.3}}}},
            {"name": "b", "targets": {"ETH": 0.5, "SOL": 0.5}},
        ],
        "rebalance": {"mode": "hybrid", "interval": "4h"},
    },
    "equal": {"portfolio": {"name": "eq", "allocation": {"kind": "equal", "coins": ["BTC", "ETH"], "quote_weight": 0.2}}},
    "market_cap": {"portfolio": {"name": "mc", "allocation": {"kind": "market_cap", "coins": ["BTC", "ETH", "SOL"],
                                                             "supply_file": "supply.csv", "cap": 0.5,
                                                             "recompute_secs": 3600.0}}},
    "core_satellite": {"portfolio": {"name": "cs", "allocation": {
        "kind": "core_satellite", "core": "BTC", "core_weight": 0.6, "satellites": ["ETH", "SOL"],
        "satellite_weights": {"ETH": 2, "SOL": 1}}}},
}
# Keys whose wrong values only a cross-key rule can see; the message names the table it checks.
NAMED_BY_TABLE = {("portfolio", "targets"), ("portfolios", 0, "targets"), ("portfolios", 1, "targets")}


# ---- a small TOML writer (the standard library only reads TOML) ----------------------------------------

def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, int | str):
        return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    raise TypeError(type(value))


def dumps(doc: Doc) -> str:
    """TOML text: top-level scalars, then one [table] per section (nested tables inline), [[name]] for arrays."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items() if not _is_table(v)]
    for k, v in doc.items():
        blocks = [] if not _is_table(v) else [v] if isinstance(v, dict) else v
        for block in blocks:
            lines.append(f"\n[{'[' if isinstance(v, list) else ''}{toml_key(k)}{']' if isinstance(v, list) else ''}]")
            lines += [f"{toml_key(kk)} = {toml_value(vv)}" for kk, vv in block.items()]
    return "\n".join(lines) + "\n"


def _is_table(v: Any) -> bool:
    return (isinstance(v, dict) and bool(v)) or (isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v))


# ---- the catalogue of keys and their mutations ----------------------------------------------------------

def leaves(value: Any, at: Path_ = ()) -> Iterator[Path_]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from leaves(v, (*at, k))
    elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        for i, v in enumerate(value):
            yield from leaves(v, (*at, i))
    else:
        yield at


def tables(value: Any, at: Path_ = ()) -> Iterator[Path_]:
    """Paths of struct tables (not maps keyed by coin or symbol)."""
    if isinstance(value, dict):
        if not at or not _is_map(at):
            yield at
        for k, v in value.items():
            if isinstance(v, dict | list):
                yield from tables(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, dict):
                yield from tables(v, (*at, i))


def _is_map(at: Path_) -> bool:
    return bool(at) and at[-1] in ("targets", "holdings", "overrides", "symbols", "satellite_weights")


def dotted(at: Path_) -> str:
    out = ""
    for s in at:
        out += f"[{s}]" if isinstance(s, int) else ("." if out else "") + toml_key(s)
    return out


def get(doc: Any, at: Path_) -> Any:
    for s in at:
        doc = doc[s]
    return doc


def put(doc: Doc, at: Path_, value: Any) -> Doc:
    out = copy.deepcopy(doc)
    get(out, at[:-1])[at[-1]] = value
    return out


def drop(doc: Doc, at: Path_) -> Doc:
    out = copy.deepcopy(doc)
    del get(out, at[:-1])[at[-1]]
    return out


def spec_of(at: Path_) -> Any:
    """The declared field of a key path (None inside maps keyed by coin or symbol, whose values are checked)."""
    tp: Any = Config
    for s in at:
        base = unwrap(tp)[0]
        if isinstance(s, int):
            tp = base.__args__[0]
        elif is_section(base):
            specs = {f.name: f for f in field_specs(base)}
            tp = specs[s].annotated
        else:
            tp = base.__args__[1] if hasattr(base, "__args__") else None
    return tp


def wrong_values(at: Path_, value: Any) -> list[tuple[str, Any]]:
    """Values of another TOML type than the key's, and values outside its declared bounds or words."""
    out: list[tuple[str, Any]] = [("table_for_scalar", {"x": 1}), ("array_for_scalar", [1, 2])]
    if isinstance(value, bool):
        out.append(("string_for_bool", "yes"))
    elif isinstance(value, int | float):
        out += [("string_for_number", "text"), ("bool_for_number", True), ("nan", math.nan), ("infinite", -math.inf)]
    elif isinstance(value, str):
        out += [("number_for_string", 42), ("bool_for_string", False)]
    elif isinstance(value, list):
        out = [("string_for_array", "BTC"), ("array_of_numbers", [1, 2])]
    tp = spec_of(at)
    if tp is not None:
        base, _, metas = unwrap(tp)
        for m in metas:
            for k, bad in (("ge", -1.0), ("gt", 0.0), ("le", 1.0), ("lt", 0.0)):
                bound = getattr(m, k)
                if bound is not None:
                    v = bound + bad if k in ("ge", "le") else bound - bad if k == "lt" else bound
                    out.append((f"out_of_bounds_{k}", int(v) if isinstance(value, int) and not isinstance(value, bool)
                                else float(v)))
        if literal_values(base):
            out.append(("word_not_allowed", "bogus"))
    return out


CHECKED_VALUES: list[tuple[str, Path_, Any, str]] = [
    # base, key, value, what the message must name: rules the types cannot say, kept by ops.config's checker
    ("every_section", ("portfolio", "targets", "BTC"), 0.9, "portfolio.targets"),
    ("every_section", ("portfolio", "targets", "BTC"), 0.0, "portfolio.targets.BTC"),
    ("every_section", ("portfolio", "targets", "BTC"), -0.5, "portfolio.targets.BTC"),
    ("every_section", ("portfolio", "name"), "has space", "portfolio.name"),
    ("every_section", ("portfolio", "name"), "", "portfolio.name"),
    ("every_section", ("portfolio", "quote"), "usdt", "portfolio.quote"),
    ("every_section", ("portfolio", "capital"), 0, "portfolio.capital"),
    ("every_section", ("portfolio", "capital"), -5, "portfolio.capital"),
    ("every_section", ("portfolio", "holdings", "BTC"), -1, "portfolio.holdings.BTC"),
    ("every_section", ("portfolio", "holdings", "DOGE"), 1, "portfolio.holdings.DOGE"),
    ("every_section", ("rebalance", "threshold"), 0.005, "rebalance.threshold"),
    ("every_section", ("rebalance", "interval"), "5 minutes", "rebalance.interval"),
    ("every_section", ("rebalance", "overrides", "DOGE"), {"threshold": 0.1}, "rebalance.overrides.DOGE"),
    ("every_section", ("rebalance", "overrides", "SOL", "threshold"), 0.001, "rebalance.overrides.SOL.threshold"),
    ("every_section", ("venue", "fee_rate"), 0.5, "venue.fee_rate"),
    ("every_section", ("venue", "step_size"), 0, "venue.step_size"),
    ("every_section", ("venue", "min_notional"), -1, "venue.min_notional"),
    ("every_section", ("venue", "exchange"), "Bin ance", "venue.exchange"),
    ("every_section", ("venue", "api_key_env"), "0123456789abcdef0123456789abcdef", "venue.api_key_env"),
    ("every_section", ("venue", "base_url"), "ftp://x", "venue.base_url"),
    ("every_section", ("venue", "base_url"), "https://api.binance.com", "venue.base_url"),
    ("every_section", ("venue", "symbols", "BTCUSDT"), {"step_size": 1}, "venue.symbols"),
    ("every_section", ("feed", "symbols"), ["BTC-USDT", "BTC-USDT", "ETH-USDT", "SOL-USDT"], "feed.symbols[1]"),
    ("every_section", ("feed", "symbols"), ["BTC-USDT"], "feed.symbols"),
    ("every_section", ("feed", "file"), "../outside.csv", "feed.file"),
    ("every_section", ("feed", "file"), "/etc/passwd", "feed.file"),
    ("every_section", ("feed", "file"), "missing.csv", "feed.file"),
    ("every_section", ("ledger", "path"), "  ", "ledger.path"),
    ("every_section", ("metrics", "host"), "", "metrics.host"),
    ("every_section", ("mqtt", "prefix"), "keel/#", "mqtt.prefix"),
    ("every_section", ("mqtt", "client_id"), " ", "mqtt.client_id"),
    ("every_section", ("mqtt", "password_env"), "hunter2 is my password", "mqtt.password_env"),
    ("hybrid", ("portfolios", 1, "name"), "a", "portfolios[1].name"),
    ("hybrid", ("portfolios", 0, "rebalance", "abs_threshold"), 2.0, "portfolios[0].rebalance.abs_threshold"),
    ("equal", ("portfolio", "allocation", "coins"), ["BTC", "BTC"], "portfolio.allocation.coins"),
    ("equal", ("portfolio", "allocation", "core"), "BTC", "portfolio.allocation.core"),
    ("market_cap", ("portfolio", "allocation", "cap"), 0.2, "portfolio.allocation.cap"),
    ("market_cap", ("portfolio", "allocation", "supply_file"), "nope.csv", "portfolio.allocation.supply_file"),
    ("core_satellite", ("portfolio", "allocation", "satellite_weights", "SOL"), 0, "satellite_weights.SOL"),
    ("core_satellite", ("portfolio", "allocation", "satellites"), ["BTC"], "portfolio.allocation.satellites[0]"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fuzz-config")
    (d / "ticks.csv").write_text("ts_ns,symbol,bid,ask\n")
    (d / "supply.csv").write_text("coin,circulating_supply\nBTC,19700000\nETH,120100000\nSOL,462000000\n")
    return d


def answer(text: str, folder: Path) -> Config | str:
    """The loaded config, or the ConfigError message (asserted one line, file first); others are crashes."""
    try:
        return loads_config(text, name=NAME, base_dir=folder)
    except ConfigError as e:
        message = str(e)
        assert "\n" not in message and message.startswith(f"{NAME}: "), message
        return message
    except Exception:
        family("config").crashes += 1
        raise


def expect_error(text: str, folder: Path, needle: str, misses: list[tuple[str, str]]) -> None:
    tally = family("config")
    tally.tried += 1
    tally.bad += 1
    got = answer(text, folder)
    if isinstance(got, str) and needle in got:
        tally.answered += 1
    else:
        misses.append((needle, got if isinstance(got, str) else "accepted"))


def test_the_base_documents_load(folder: Path) -> None:
    for name, doc in BASES.items():
        assert isinstance(answer(dumps(doc), folder), Config), name


def test_every_key_wrong_in_every_way_names_the_key(folder: Path) -> None:
    misses: list[tuple[str, str]] = []
    for doc in BASES.values():
        for at in leaves(doc):
            key = dotted(at[:-1]) if at[:-1] in NAMED_BY_TABLE else dotted(at)
            for _, value in wrong_values(at, get(doc, at)):
                expect_error(dumps(put(doc, at, value)), folder, key, misses)
        for table in tables(doc):
            expect_error(dumps(put(doc, (*table, "bogus_key"), 1)), folder, f"unknown key {dotted((*table, 'bogus_key'))}",
                         misses)
    assert misses == []


def test_keys_in_the_wrong_table_are_unknown_there(folder: Path) -> None:
    misses: list[tuple[str, str]] = []
    doc = BASES["every_section"]
    sections = [s for s in doc if isinstance(doc[s], dict)]
    allowed = {s: {f.name for f in field_specs(unwrap(spec_of((s,)))[0])} for s in sections}
    for home in sections:
        for key, value in doc[home].items():
            for other in sections:
                if key not in allowed[other]:
                    moved = put(drop(doc, (home, key)) if key not in ("name",) else doc, (other, key), value)
                    expect_error(dumps(moved), folder, f"unknown key {other}.{key}", misses)
    assert misses == []


def test_missing_required_keys_are_named(folder: Path) -> None:
    misses: list[tuple[str, str]] = []
    expect_error(dumps(drop(BASES["every_section"], ("portfolio", "name"))), folder, "portfolio.name is required", misses)
    expect_error(dumps(drop(BASES["hybrid"], ("portfolios", 1, "name"))), folder, "portfolios[1].name is required", misses)
    for base in ("equal", "market_cap", "core_satellite"):
        expect_error(dumps(drop(BASES[base], ("portfolio", "allocation", "kind"))), folder,
                     "portfolio.allocation.kind is required", misses)
    expect_error(dumps({k: v for k, v in BASES["every_section"].items() if k != "portfolio"}), folder, "no portfolio",
                 misses)
    assert misses == []


def test_values_only_the_checker_can_judge_name_their_key(folder: Path) -> None:
    misses: list[tuple[str, str]] = []
    for base, at, value, needle in CHECKED_VALUES:
        expect_error(dumps(put(BASES[base], at, value)), folder, needle, misses)
    assert misses == []


def test_secrets_in_the_file_are_refused_without_echoing_them(folder: Path) -> None:
    secret = "7f3a9c1e5b2d8f4a6c0e9b1d3f5a7c9e"
    for table, key in (("venue", "api_key"), ("venue", "secret"), ("mqtt", "password"), ("mqtt", "username")):
        text = dumps(put(BASES["every_section"], (table, key), secret))
        family("config").tried += 1
        family("config").bad += 1
        got = answer(text, folder)
        assert isinstance(got, str) and f"{table}.{key}" in got and secret not in got, got
        family("config").answered += 1


SYNTAX_BREAKS = [
    ("unclosed string", lambda t: t.replace('name = "main"', 'name = "main')),
    ("missing value", lambda t: t.replace("threshold = 0.05", "threshold =")),
    ("bare word", lambda t: t.replace('band = "absolute"', "band = absolute")),
    ("duplicate table", lambda t: t + "\n[venue]\nkind = \"paper\"\n"),
    ("duplicate key", lambda t: t.replace("[ledger]\n", "[ledger]\npath = \"a\"\n")),
    ("unclosed array", lambda t: t.replace('"SOL-USDT"]', '"SOL-USDT"')),
    ("unclosed table header", lambda t: t.replace("[metrics]", "[metrics")),
    ("no equals sign", lambda t: t.replace("sandbox = false", "sandbox false")),
    ("tab inside a key", lambda t: t.replace("sim_seed", "sim\tseed")),
    ("stray bytes", lambda t: t + "\x00\x01"),
    ("only a header", lambda t: "[portfolio"),
]


@pytest.mark.parametrize("why, breaks", SYNTAX_BREAKS, ids=[w for w, _ in SYNTAX_BREAKS])
def test_toml_syntax_errors_name_the_place(folder: Path, why: str, breaks: Any) -> None:
    text = dumps(BASES["every_section"])
    broken = breaks(text)
    assert broken != text, why
    misses: list[tuple[str, str]] = []
    expect_error(broken, folder, "TOML syntax error at ", misses)
    assert misses == []
    assert re.search(r"at (line \d+, column \d+|the end of the file)", str(answer(broken, folder)))


toml_scalars = (st.text(st.characters(blacklist_categories=("Cs",)), max_size=20) | st.integers(-(2**63), 2**63 - 1)
                | st.floats() | st.booleans())
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
ALL_LEAVES = [(name, at) for name, doc in BASES.items() for at in leaves(doc)]


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(ALL_LEAVES), value=toml_values)
def test_any_value_at_any_key_is_a_config_or_one_error_line(folder: Path, which: tuple[str, Path_], value: Any) -> None:
    name, at = which
    tally = family("config")
    tally.tried += 1
    got = answer(dumps(put(BASES[name], at, value)), folder)
    if isinstance(got, str):
        tally.note("random values refused", 1)
        named = {dotted(at[:i]) for i in range(1, len(at) + 1)} | {"TOML syntax error"}
        assert any(n in got for n in named), (at, value, got)
    else:
        assert isinstance(got, Config)
        msgspec.structs.asdict(got)  # the loaded config is whole
