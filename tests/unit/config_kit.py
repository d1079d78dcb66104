"""Loading config text in the ops.config tests: a minimal base portfolio, and the one-line error of a mistake."""
from __future__ import annotations

from pathlib import Path

import pytest

from ops.config import Config, ConfigError, loads_config

ROOT = Path(__file__).resolve().parents[2]
BASE = '[portfolio]\nname = "main"\ntargets = { BTC = 0.5, ETH = 0.3, SOL = 0.2 }\n'
SUPPLY = "coin,circulating_supply\nBTC,19700000\nETH,120100000\nSOL,462000000\n"


def load(extra: str = "", base: str = BASE, **kw: object) -> Config:
    """The config of `base` followed by `extra` (keyword arguments go to loads_config)."""
    return loads_config(base + extra, **kw)  # type: ignore[arg-type]


def error(extra: str = "", base: str = BASE, **kw: object) -> str:
    """The ConfigError message for a config; asserts the one-line, file-first form."""
    with pytest.raises(ConfigError) as e:
        loads_config(base + extra, **kw)  # type: ignore[arg-type]
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{kw.get('name', 'keel.toml')}: ")
    return message
