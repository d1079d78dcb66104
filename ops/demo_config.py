"""The demo's embedded default: a paper portfolio on the local simulator (BTC 40, ETH 30, SOL 10, USDT 20)."""
from __future__ import annotations

DEMO_TOML = """
# keel demo: a paper portfolio on the embedded exchange simulator (127.0.0.1, TLS, Binance wire format).
[portfolio]
name = "demo"
quote = "USDT"
capital = 10000

[portfolio.targets]
BTC = 0.4
ETH = 0.3
SOL = 0.1
USDT = 0.2          # a stablecoin sleeve: rallies move profit into it, dips spend it

[rebalance]
mode = "threshold"
band = "absolute"
threshold = 0.03
debounce_secs = 0
window_secs = {window_secs}

[venue]
kind = "paper"
fee_rate = 0.001
latency_ms = 20

[feed]
source = "sim"
sim_seed = {seed}
sim_rate_hz = {rate_hz}
sim_swing = 0.12
speed = {speed}
stale_secs = 10

[ledger]
path = "{ledger}"

[metrics]
port = {metrics_port}
"""


def demo_toml(*, seed: int = 1, speed: float = 1.0, ledger: str = "var/demo/keel.sqlite", metrics_port: int = 9108) -> str:
    """The demo config; `speed` shortens the window and quickens the market."""
    return DEMO_TOML.format(seed=seed, window_secs=max(1.0, 60.0 / speed), rate_hz=min(200.0, 10.0 * speed),
                            ledger=ledger, metrics_port=metrics_port, speed=speed)
