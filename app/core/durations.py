"""Parse the short duration strings used in settings: `30s`, `90m`, `1h`, `5d`."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*\Z")


def parse_duration(text: str) -> timedelta:
    """`5m` → 5 minutes; a bare number is seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use a number with s, m, h or d (e.g. 5m)")
    amount, unit = match.groups()
    return timedelta(seconds=int(amount) * _UNITS[unit or "s"])


def parse_schedule(text: str) -> tuple[timedelta, ...]:
    """`5m,10m,1h` → the waits between attempts; at least one entry."""
    waits = tuple(parse_duration(part) for part in text.split(",") if part.strip())
    if not waits:
        raise ValueError("the retry schedule needs at least one duration")
    return waits


def format_duration(value: timedelta) -> str:
    """The shortest exact form: 300 s → `5m`."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
