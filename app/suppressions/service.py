"""Suppressions: looking them up for the accept path, and the list/add/delete of the APIs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.db import conflict_insert
from app.core.ids import new_id
from app.suppressions import tombstones
from app.suppressions.models import Suppression, SuppressionType

SUPPRESSING_TYPES = tuple(t.value for t in SuppressionType if t.suppresses)
LOOKUP_CHUNK = 500  # stay under bind-parameter limits


def suppression_key(email: str) -> str:
    """Addresses are compared case-insensitively."""
    return email.strip().lower()


async def suppressed(
    session: AsyncSession, *, account_id: str, emails: Iterable[str]
) -> dict[str, Suppression]:
    """The suppressions that apply to any of `emails`, keyed by lower-cased address (blocks
    are listed but do not suppress, as in SendGrid)."""
    keys = sorted({suppression_key(email) for email in emails})
    found: dict[str, Suppression] = {}
    for start in range(0, len(keys), LOOKUP_CHUNK):
        query = (
            select(Suppression)
            .where(
                Suppression.account_id == account_id,
                Suppression.email.in_(keys[start : start + LOOKUP_CHUNK]),
                Suppression.type.in_(SUPPRESSING_TYPES),
            )
            .order_by(Suppression.id)
        )
        for row in (await session.execute(query)).scalars():
            found.setdefault(row.email, row)
    return found


@dataclass(frozen=True, slots=True)
class NewSuppression:
    """An entry to add."""

    email: str
    type: SuppressionType
    reason: str = ""
    status: str = ""


async def all_suppressions(
    session: AsyncSession, *, account_id: str, emails: Iterable[str], tombstone_key: bytes = b""
) -> dict[str, list[Suppression]]:
    """Every suppression of any of `emails` (an address may be on several lists), by address,
    those an erasure left as tombstones (app.suppressions.tombstones) included; blocks are
    left out: they are listed, as SendGrid lists them, but suppress nothing."""
    addresses = sorted({suppression_key(email) for email in emails})
    erased = tombstones.tombstones_of(addresses, tombstone_key)
    keys = addresses + sorted(erased)
    found: dict[str, list[Suppression]] = {}
    for start in range(0, len(keys), 500):  # stay under bind-parameter limits
        query = select(Suppression).where(
            Suppression.account_id == account_id,
            Suppression.email.in_(keys[start : start + 500]),
            Suppression.type.in_(SUPPRESSING_TYPES),
        )
        for row in (await session.execute(query)).scalars():
            found.setdefault(erased.get(row.email, row.email), []).append(row)
    return found


async def suppress(
    session: AsyncSession,
    *,
    account_id: str,
    email: str,
    type: SuppressionType,
    reason: str,
    status: str = "",
) -> None:
    """Add a suppression; adding one that exists changes nothing (safe under concurrency)."""
    entry = NewSuppression(email=email, type=type, reason=reason, status=status)
    await _insert(session, account_id, [entry])


async def add_many(
    session: AsyncSession, *, account_id: str, entries: Sequence[NewSuppression]
) -> list[Suppression]:
    """Add entries (existing ones are kept as they are); returns them all, as stored."""
    keys = await _insert(session, account_id, entries)
    return await _stored(session, account_id, keys)


async def _insert(
    session: AsyncSession, account_id: str, entries: Sequence[NewSuppression]
) -> list[tuple[str, str]]:
    """INSERT … ON CONFLICT DO NOTHING; returns the (email, type) keys given."""
    now = clock.now()
    rows = {
        (suppression_key(entry.email), entry.type.value): {
            "id": new_id(),
            "account_id": account_id,
            "email": suppression_key(entry.email),
            "type": entry.type.value,
            "reason": entry.reason,
            "status": entry.status,
            "created_at": now,
        }
        for entry in entries
    }
    insert = conflict_insert(session)
    values = list(rows.values())
    for start in range(0, len(values), LOOKUP_CHUNK):
        statement = insert(Suppression).values(values[start : start + LOOKUP_CHUNK])
        await session.execute(statement.on_conflict_do_nothing())
    return list(rows)


async def _stored(
    session: AsyncSession, account_id: str, keys: list[tuple[str, str]]
) -> list[Suppression]:
    """The stored entries for (email, type) keys, in the order given."""
    found: dict[tuple[str, str], Suppression] = {}
    emails = sorted({email for email, _ in keys})
    for start in range(0, len(emails), LOOKUP_CHUNK):
        query = select(Suppression).where(
            Suppression.account_id == account_id,
            Suppression.email.in_(emails[start : start + LOOKUP_CHUNK]),
        )
        for row in (await session.execute(query)).scalars():
            found[(row.email, row.type)] = row
    return [found[key] for key in keys if key in found]


async def count(session: AsyncSession, *, account_id: str) -> int:
    """How many suppressions the account has."""
    query = (
        select(func.count()).select_from(Suppression).where(Suppression.account_id == account_id)
    )
    return int(await session.scalar(query) or 0)


def email_pattern(text: str) -> str:
    """SendGrid's `email` filter as a LIKE pattern: a prefix, `%` a wildcard."""
    escaped = text.lower().replace("\\", "\\\\").replace("_", "\\_")
    return escaped + ("" if escaped.endswith("%") else "%")


@dataclass(frozen=True, slots=True)
class ListFilter:
    """Which entries a list asks for."""

    account_id: str
    types: tuple[str, ...] = ()
    email: str | None = None  # SendGrid-style prefix/wildcard pattern
    created_from: datetime | None = None
    created_to: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The WHERE clauses."""
        found = [Suppression.account_id == self.account_id]
        if self.types:
            found.append(Suppression.type.in_(self.types))
        if self.email:
            found.append(Suppression.email.like(email_pattern(self.email), escape="\\"))
        if self.created_from is not None:
            found.append(Suppression.created_at >= self.created_from)
        if self.created_to is not None:
            found.append(Suppression.created_at <= self.created_to)
        return found


async def list_after(
    session: AsyncSession, *, where: ListFilter, after: str | None, limit: int
) -> list[Suppression]:
    """Entries in id (creation) order after the cursor id: cursor pagination."""
    query = select(Suppression).where(*where.conditions()).order_by(Suppression.id).limit(limit)
    if after:
        query = query.where(Suppression.id > after)
    return list((await session.execute(query)).scalars())


async def list_offset(
    session: AsyncSession, *, where: ListFilter, offset: int, limit: int
) -> list[Suppression]:
    """Entries newest first with offset pagination (SendGrid's /v3 lists)."""
    query = (
        select(Suppression)
        .where(*where.conditions())
        .order_by(Suppression.created_at.desc(), Suppression.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def lookup(
    session: AsyncSession, *, account_id: str, email: str, types: Sequence[str] = ()
) -> list[Suppression]:
    """Every entry for one address (of the given types)."""
    where = ListFilter(account_id=account_id, types=tuple(types))
    query = (
        select(Suppression)
        .where(*where.conditions(), Suppression.email == suppression_key(email))
        .order_by(Suppression.id)
    )
    return list((await session.execute(query)).scalars())


async def remove(
    session: AsyncSession,
    *,
    account_id: str,
    types: Sequence[str],
    emails: Sequence[str] | None,
) -> int:
    """Delete entries of these types for these addresses (None: every address)."""
    statement = delete(Suppression).where(
        Suppression.account_id == account_id, Suppression.type.in_(list(types))
    )
    if emails is None:
        result = await session.execute(statement)
        return int(getattr(result, "rowcount", 0) or 0)
    keys = sorted({suppression_key(email) for email in emails})
    removed = 0
    for start in range(0, len(keys), LOOKUP_CHUNK):
        chunk = statement.where(Suppression.email.in_(keys[start : start + LOOKUP_CHUNK]))
        result = await session.execute(chunk)
        removed += int(getattr(result, "rowcount", 0) or 0)
    return removed
