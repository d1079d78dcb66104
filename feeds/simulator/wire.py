"""Websocket framing for the simulator's fast path: server frames are unmasked, so they can be built once."""
from __future__ import annotations

import struct

_TEXT = 0x81  # FIN + opcode 1 (text)


def text_frame(payload: bytes) -> bytes:
    """One complete unmasked websocket text frame carrying `payload` (UTF-8 JSON)."""
    n = len(payload)
    if n < 126:
        return bytes((_TEXT, n)) + payload
    if n < 65536:
        return struct.pack(">BBH", _TEXT, 126, n) + payload
    return struct.pack(">BBQ", _TEXT, 127, n) + payload


def price_text(x: float) -> str:
    """A price as the exchanges send it, a decimal string; `repr` round-trips the float bit for bit."""
    return repr(float(x))
