"""`keel exchange-sim`: run the simulator on a synthetic market or a file replay until told to stop."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from engine.columns import TickColumns
from feeds.simulator.certs import DEFAULT_CERT_DIR, PEM_NAME
from feeds.simulator.server import ExchangeSimulator
from feeds.simulator.sources import DEFAULT_SYMBOLS, ReplaySource, SyntheticSource, TickSource

log = logging.getLogger(__name__)


def load_columns(file: Path, symbols: Sequence[str]) -> TickColumns:
    """Tick columns from a tick file, or from a candle file replayed as the one symbol in `symbols`."""
    from feeds import files  # the file readers; imported here so the live path does not depend on them

    try:
        columns, report = files.read_ticks(file)
    except files.TickFileError as not_ticks:
        if len(symbols) != 1:
            raise files.TickFileError(
                f"{not_ticks} (a candle file replays as one symbol: name exactly one symbol)"
            ) from not_ticks
        columns, report = files.read_candles(file, symbols[0])
    if report.rows_dropped:
        log.warning("%s: %d of %d rows dropped (%s)", file, report.rows_dropped, report.rows_read, report.dropped)
    if len(columns) == 0:
        raise files.TickFileError(f"{file}: no ticks to replay")
    return columns


async def run_exchange_sim(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 0,
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    rate_hz: float = 10.0,
    speed: float = 1.0,
    file: Path | None = None,
    cert_dir: Path = DEFAULT_CERT_DIR,
    swing: float = 0.0,
    stop: asyncio.Event,
) -> None:
    """Serve a synthetic market (or replay `file` at `speed`; 0 or inf: as fast as possible) until `stop` is set.

    `rate_hz` is the synthetic market's total frames per second (0 or inf: as fast as possible). Logs the
    addresses at INFO and prints nothing.
    """
    source: TickSource
    if file is not None:
        columns = await asyncio.to_thread(load_columns, Path(file), symbols)
        source = ReplaySource(columns, speed=speed)
    else:
        source = SyntheticSource(symbols, seed=seed, rate_hz=rate_hz, swing=swing)
    sim = ExchangeSimulator(host=host, port=port, cert_dir=Path(cert_dir), source=source)
    await sim.start()
    try:
        log.info(
            "exchange simulator on %s:%d: binance %s, kraken %s, okx %s, REST %s, %s and %s; TLS certificate %s; "
            "symbols %s", host, sim.port, sim.ws_url("binance"), sim.ws_url("kraken"), sim.ws_url("okx"),
            sim.rest_url("binance"), sim.rest_url("kraken"), sim.rest_url("okx"), Path(cert_dir) / PEM_NAME,
            ", ".join(sim.symbols),
        )
        await sim.serve_until(stop)
    finally:
        await sim.stop()
        stats = sim.stats
        log.info("exchange simulator stopped: %d frames sent, %d connections", stats.frames_sent,
                 stats.connections_accepted)
