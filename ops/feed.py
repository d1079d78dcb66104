"""The service's market data: the embedded simulator, a real exchange, or a recorded file, all through
cryptofeed's own parsers (the simulator speaks Binance's wire format over TLS on 127.0.0.1)."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from engine.sensor import NULL_SENSOR, Sensor
from feeds.cryptofeed_source import CryptofeedSource
from feeds.simulator import ExchangeSimulator, ReplaySource, SyntheticSource
from feeds.simulator.exchange_info import EXCHANGES
from ops.config import Config, resolve_data_path

log = logging.getLogger(__name__)


def make_simulator(config: Config, symbols: list[str], cert_dir: Path) -> ExchangeSimulator | None:
    """The embedded simulator for feed.source = sim or file; None for a real exchange."""
    f = config.feed
    if f.source == "sim":
        source = SyntheticSource(symbols, seed=f.sim_seed, rate_hz=f.sim_rate_hz * len(symbols), swing=f.sim_swing,
                                 swing_period_secs=max(5.0, 120.0 / max(f.speed, 1e-9)))
    elif f.source == "file":
        from feeds.files import read_ticks

        assert f.file is not None
        cols, report = read_ticks(resolve_data_path(config, f.file, key="feed.file"))
        if report.dropped:
            log.warning("feed file: dropped %d bad rows %s", sum(report.dropped.values()), dict(report.dropped))
        source = ReplaySource(cols, speed=f.speed)
    else:
        return None
    return ExchangeSimulator(host=f.sim_host, port=f.sim_port, cert_dir=cert_dir, source=source, exchanges=("binance",))


@contextlib.asynccontextmanager
async def feed_source(config: Config, symbols: list[str], *, cert_dir: Path, sensor: Sensor = NULL_SENSOR,
                      simulator: ExchangeSimulator | None = None) -> AsyncIterator[CryptofeedSource]:
    """A started cryptofeed source (and the simulator behind it, when embedded)."""
    sim = simulator if simulator is not None else make_simulator(config, symbols, cert_dir)
    exchange = "binance" if sim is not None else config.feed.source
    if exchange not in EXCHANGES:
        raise ValueError(f"feed.source {config.feed.source!r} has no live adapter")
    if sim is not None:
        await sim.start()
        log.info("embedded exchange simulator at %s", sim.ws_url("binance"))

    def bad_frame(reason: str) -> None:
        sensor.on_bad_tick("*", reason)

    source = CryptofeedSource(
        exchange,  # type: ignore[arg-type]
        symbols,
        ws_url=sim.ws_url("binance") if sim is not None else None,
        rest_url=sim.rest_url("binance") if sim is not None else None,
        ssl_context=sim.ssl_context_for_clients() if sim is not None else None,
        on_bad_frame=bad_frame,
        reconnect_max_secs=config.feed.reconnect_max_secs,
        stale_secs=max(config.feed.stale_secs, 5.0) if config.feed.stale_secs > 0 else 60.0,
        on_reconnect=lambda: sensor.on_reconnect(exchange),
    )
    try:
        yield source
    finally:
        if sim is not None and simulator is None:
            await sim.stop()
