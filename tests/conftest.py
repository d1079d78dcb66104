"""Test session guards (only loopback connections), shared-data discovery, and the feed tests' certs and symbol cache."""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.integration.actor_kit")  # its shared checks fail with full detail
pytest.register_assert_rewrite("tests.unit.config_kit")  # the one-line error check, in full detail too

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check_address(address: object) -> None:
    if isinstance(address, tuple) and address:
        host = address[0]
        if isinstance(host, str):
            if host == "localhost":
                return
            try:
                ip = ipaddress.ip_address(host.split("%")[0])
            except ValueError:
                raise ConnectionRefusedError(f"test guard: refusing to resolve and connect to {host!r}") from None
            if not ip.is_loopback:
                raise ConnectionRefusedError(f"test guard: refusing a connection to {host!r} (tests stay on 127.0.0.1)")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _check_address(address)
    return _real_connect(self, address)  # type: ignore[arg-type]


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _check_address(address)
    return _real_connect_ex(self, address)  # type: ignore[arg-type]


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip with the reason when this checkout has none beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data not found at {SHARED_DATA} (only present beside the project's root)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the exchange simulator's TLS certificates, shared by one test module."""
    return tmp_path_factory.mktemp("sim-certs")


@pytest.fixture
def clear_symbols() -> Iterator[None]:
    """cryptofeed's process-wide symbol cache, empty before and after the test (each feed test seeds its own)."""
    from cryptofeed.symbols import Symbols  # here, not at the top: most tests never load cryptofeed

    Symbols.clear()
    yield
    Symbols.clear()
