"""Feed positions in commit order, so a reader following the cursor never skips an event.

Event ids come from an autoincrement assigned at INSERT, but on PostgreSQL transactions commit
in any order: a reader that has seen id 11 (committed) may later find id 10 (committed late)
behind its cursor. Positions fix that. They are assigned only to committed rows, by one
sequencer at a time (an advisory lock on PostgreSQL; SQLite has a single writer anyway), each
run numbering after the largest position so far. A run commits all its positions at once and
every later run numbers higher, so positions become visible strictly in increasing order.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# pg_advisory_xact_lock key: "columba" feed sequencer (any constant unique to this use).
SEQUENCER_LOCK = 0x636F6C756D6261
BATCH = 10_000

# The base (the largest position so far) is read inside the UPDATE, not before it: on SQLite
# a SELECT runs outside the transaction the UPDATE begins, so a base read first could be stale
# by the time the write lock is held, and two sequencers handed out the same positions
# (UNIQUE constraint failed: events.position). One statement reads and writes under one lock.
_NUMBER = text(
    """
    UPDATE events SET position = numbered.position
    FROM (
        SELECT id,
               (SELECT coalesce(max(position), 0) FROM events)
               + row_number() OVER (ORDER BY id) AS position
        FROM events WHERE position IS NULL ORDER BY id LIMIT :limit
    ) AS numbered
    WHERE events.id = numbered.id
    """
)


async def _take_lock(session: AsyncSession) -> bool:
    """The sequencer's lock for this transaction; False when another sequencer holds it."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    result = await session.execute(
        text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SEQUENCER_LOCK}
    )
    return bool(result.scalar())


async def sequence(session: AsyncSession, *, limit: int = BATCH) -> int:
    """Give committed events without a position the next positions, in id order; returns how
    many were numbered. The caller commits (which releases the lock)."""
    # A read first: long polls call this several times a second, and an UPDATE would take
    # SQLite's write lock (and PostgreSQL's advisory lock) even with nothing to number.
    waiting = await session.execute(text("SELECT 1 FROM events WHERE position IS NULL LIMIT 1"))
    if waiting.first() is None:
        return 0
    if not await _take_lock(session):
        return 0  # another process is numbering right now; its rows show up on the next read
    result = await session.execute(_NUMBER, {"limit": limit})
    return int(getattr(result, "rowcount", 0) or 0)
