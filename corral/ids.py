"""Object ids: a type prefix plus a time-ordered, unguessable suffix (`sesn_011C...`)."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"  # base58: no 0/O/I/l


def _base58(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 58)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits))


def new_id(prefix: str) -> str:
    """`prefix_011C` + 8 chars of milliseconds + 14 random chars; sorts by creation time within a prefix."""
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_011C{_base58(millis, 8)}{_base58(secrets.randbits(82), 14)}"


PREFIXES = {
    "agent": "agent",
    "environment": "env",
    "session": "sesn",
    "event": "sevt",
    "workspace": "wrkspc",
    "api_key": "apikey",
    "request": "req",
}
