"""The one source of "now": every timestamp written or compared goes through `now()`.

The database's own clock is never used, so tests can move time by setting `_offset`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset = timedelta(0)  # tests move time forward through this; always zero in production


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC) + _offset
