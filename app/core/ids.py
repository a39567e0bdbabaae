"""Identifiers: time-ordered, URL-safe, 26 characters (the ULID layout, Crockford base32)."""

from __future__ import annotations

import secrets

from app.core import clock

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id() -> str:
    """48 bits of milliseconds then 80 random bits: sortable by creation, unguessable."""
    millis = int(clock.now().timestamp() * 1000)
    value = (millis << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, index = divmod(value, 32)
        chars.append(_ALPHABET[index])
    return "".join(reversed(chars))
