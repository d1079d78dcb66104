"""TOML syntax and msgspec validation errors turned into one line naming the key, the value and the fix."""
from __future__ import annotations

import ast
import difflib
import functools
import re
from typing import Any, get_args, get_origin

import msgspec

from ops.config_rules import COIN
from ops.config_schema import (
    Config,
    FieldSpec,
    MqttConfig,
    PortfolioConfig,
    VenueConfig,
    field_specs,
    is_section,
    literal_values,
    toml_key,
    toml_value,
    unwrap,
)

_SECRET_WORDS = frozenset({"api_key", "apikey", "key", "secret", "api_secret", "password", "passphrase",
                           "token", "username", "private_key"})
_TYPE_WORDS = {"float": "a number", "int": "a whole number", "decimal": "a number", "str": "a string in double quotes",
               "bool": "true or false", "object": "a table", "array": "an array [...]", "date": "a date",
               "datetime": "a date-time", "time": "a time", "null": "empty"}
_ERROR_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
Segments = list[str | int]


def syntax_message(name: str, message: str) -> str:
    """tomllib's `Cannot declare ('a',) twice (at line 3, column 1)` -> where, what and how to fix it."""
    m = re.search(r"\s*\(at (?:line (\d+), column (\d+)|(end of document))\)$", message)
    what = message[: m.start()] if m else message
    if declared := re.fullmatch(r"Cannot declare (\(.*\)) twice", what):
        what = f"the table [{dotted(list(ast.literal_eval(declared.group(1))))}] is declared twice"
    where = ("the end of the file" if m.group(3) else f"line {m.group(1)}, column {m.group(2)}") if m else "?"
    return (f"{name}: TOML syntax error at {where}: {what}; fix the syntax there "
            "(strings in double quotes, one key = value per line, each [table] once)")


def dotted(segments: Segments) -> str:
    """["portfolios", 0, "targets", "BTC"] -> portfolios[0].targets.BTC"""
    out = ""
    for s in segments:
        out += f"[{s}]" if isinstance(s, int) else (("." if out else "") + toml_key(s))
    return out


@functools.cache
def _specs(cls: type[msgspec.Struct]) -> dict[str, FieldSpec]:
    return {f.name: f for f in field_specs(cls)}


def _walk(raw: dict[str, Any], path: str) -> tuple[Segments, Any, Any]:
    """Follow msgspec's `$.a[0].b[...]` path through the data: (segments with dict keys named, value, type)."""
    tp: Any = Config
    value: Any = raw
    out: Segments = []
    for name, index in _SEGMENT.findall(path):
        base = unwrap(tp)[0]
        if name and is_section(base):
            tp = _specs(base)[name].annotated
            value = value.get(name) if isinstance(value, dict) else None
            out.append(name)
        elif index.isdigit() and get_origin(base) is list:
            tp = get_args(base)[0]
            value = value[int(index)] if isinstance(value, list) else None
            out.append(int(index))
        elif index == "..." and get_origin(base) is dict and isinstance(value, dict):
            tp = get_args(base)[1]
            key = next((k for k, v in value.items() if not _converts(v, tp)), "...")
            value = value.get(key)
            out.append(key)
    return out, value, tp


def _converts(value: Any, tp: Any) -> bool:
    try:
        msgspec.convert(value, tp)
    except msgspec.ValidationError:
        return False
    return True


def translate(message: str, raw: dict[str, Any]) -> str:
    """msgspec's `Expected `float`, got `str` - at `$.rebalance.threshold`` -> the key, the value and the fix."""
    m = _ERROR_AT.match(message)
    what, at = (m.group("what"), m.group("path") or "") if m else (message, "")
    segments, value, tp = _walk(raw, at)
    key = dotted(segments)
    shown = "(hidden)" if segments and str(segments[-1]).lower().endswith(("_env", *_SECRET_WORDS)) else (
        toml_value(value))
    base = unwrap(tp)[0]
    if m := re.fullmatch(r"Object contains unknown field `(.+)`", what):
        return _unknown_key(segments, m.group(1), base)
    if m := re.fullmatch(r"Object missing required field `(.+)`", what):
        field = _specs(base)[m.group(1)]
        allowed = literal_values(field.base)
        example = f'"{allowed[0]}" (one of {", ".join(allowed)})' if allowed else '"main"'
        return f"{dotted([*segments, field.name])} is required; add {field.name} = {example}"
    if m := re.fullmatch(r"Expected `([^`]+)`, got `([^`]+)`", what):
        want = _TYPE_WORDS.get(m.group(1).removesuffix(" | null"), m.group(1))
        got = {"str": "a string", "bool": "a boolean"}.get(m.group(2)) or _TYPE_WORDS.get(m.group(2), m.group(2))
        if want == "an array [...]" and got == "a table":
            return f"{key} is a table; it must be an array of tables: write [[{key}]] (double brackets) above each one"
        if want == "a table":
            return f"{key} = {shown} is {got}; it must be a table: write [{key}] on its own line and its keys below"
        return f"{key} = {shown} is {got}; it must be {want}"
    if re.fullmatch(r"Expected `[^`]+` [<>]=? ?.*", what):
        return f"{key} = {shown} is out of range; it must be {_range_words(tp)}"
    if what.startswith("Invalid enum value"):
        allowed = literal_values(base) or ()
        return f"{key} = {shown} is not allowed; use one of {', '.join(toml_value(a) for a in allowed)}"
    if what.startswith("Invalid decimal string"):
        return f"{key} = {shown} is not a number; write a plain number such as 0.001"
    return f"{key or 'the file'}: {what}"


def _unknown_key(segments: Segments, name: str, section: Any) -> str:
    key = dotted([*segments, name])
    allowed = [f for f in _specs(section) if not (section is Config and f == "path")]
    if section in (VenueConfig, MqttConfig) and name.lower() in _SECRET_WORDS:
        envs = ", ".join(f"{dotted([*segments, f])}" for f in allowed if f.endswith("_env"))
        return (f"{key} is not allowed: secrets never go in the file; put it in an environment variable "
                f"and write that variable's NAME in {envs}")
    hint = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    if hint:
        extra = f" (did you mean {hint[0]}?)"
    elif section is PortfolioConfig and COIN.fullmatch(name):
        extra = f" (coin weights go in {dotted([*segments, 'targets'])})"
    else:
        extra = ""
    return f"unknown key {key}{extra}; allowed keys: {', '.join(allowed)}"


def _range_words(tp: Any) -> str:
    bounds = {k: v for m in unwrap(tp)[2] for k in ("gt", "ge", "lt", "le") if (v := getattr(m, k)) is not None}
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = ("]", bounds["le"]) if "le" in bounds else (")", bounds["lt"]) if "lt" in bounds else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    return f"{'<=' if high and high[0] == ']' else '<'} {high[1] if high else 0:g}"
