"""Load keel's TOML config into frozen typed structs; every mistake is one line naming the file, key and fix."""
from __future__ import annotations

import logging
import math
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from msgspec.structs import replace

from ops.config_messages import Segments, dotted, syntax_message, translate
from ops.config_rules import ConfigError, check_rules, resolve_data_path
from ops.config_schema import (
    AllocationConfig,
    BandOverride,
    Config,
    FeedConfig,
    LedgerConfig,
    MetricsConfig,
    MqttConfig,
    PortfolioConfig,
    RebalanceConfig,
    VenueConfig,
    VenueSymbolConfig,
    toml_value,
)
from ops.configdoc import explain

__all__ = [
    "AllocationConfig", "BandOverride", "Config", "ConfigError", "FeedConfig", "LedgerConfig", "MetricsConfig",
    "MqttConfig", "PortfolioConfig", "RebalanceConfig", "VenueConfig", "VenueSymbolConfig",
    "explain", "load_config", "loads_config", "resolve_data_path",
]

log = logging.getLogger(__name__)


def load_config(path: str | Path) -> Config:
    """Read and validate a keel TOML file; relative data paths are relative to its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"{p}: cannot read the config file ({reason}); check the path") from None
    return _load(text, str(p), str(p.resolve()))


def loads_config(text: str, *, name: str = "keel.toml", base_dir: Path | None = None) -> Config:
    """Validate TOML text; `name` labels errors, `base_dir` anchors data paths (default: the current folder)."""
    path = str(Path(base_dir).resolve() / Path(name).name) if base_dir is not None else ""
    return _load(text, name, path)


def _load(text: str, name: str, path: str) -> Config:
    try:
        raw = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(syntax_message(name, str(e))) from None
    _check_finite(name, raw, [])
    if "path" in raw:
        raise ConfigError(f"{name}: path is set by the loader (the file the config came from); remove the key path")
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{name}: {translate(str(e), raw)}") from None
    config = check_rules(name, replace(config, path=path))
    log.info("config %s: %d portfolio(s), venue %s, feed %s", name, len(config.all_portfolios()),
             config.venue.kind, config.feed.source)
    return config


def _check_finite(name: str, value: Any, at: Segments) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(name, v, [*at, k])
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(name, v, [*at, i])
    elif isinstance(value, Decimal | float) and not math.isfinite(value):
        raise ConfigError(f"{name}: {dotted(at)} = {toml_value(value)} is not a finite number; write a plain number")

