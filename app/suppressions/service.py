"""Looking up and adding suppressions; the accept path drops suppressed recipients."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.ids import new_id
from app.suppressions.models import Suppression, SuppressionType


def suppression_key(email: str) -> str:
    """Addresses are compared case-insensitively."""
    return email.strip().lower()


async def suppressed(
    session: AsyncSession, *, account_id: str, emails: Iterable[str]
) -> dict[str, Suppression]:
    """The suppressions that apply to any of `emails`, keyed by lower-cased address."""
    keys = sorted({suppression_key(email) for email in emails})
    if not keys:
        return {}
    found: dict[str, Suppression] = {}
    for start in range(0, len(keys), 500):  # stay under bind-parameter limits
        query = select(Suppression).where(
            Suppression.account_id == account_id, Suppression.email.in_(keys[start : start + 500])
        )
        for row in (await session.execute(query)).scalars():
            found.setdefault(row.email, row)
    return found


async def all_suppressions(
    session: AsyncSession, *, account_id: str, emails: Iterable[str]
) -> dict[str, list[Suppression]]:
    """Every suppression of any of `emails` (an address may be on several lists), by address."""
    keys = sorted({suppression_key(email) for email in emails})
    found: dict[str, list[Suppression]] = {}
    for start in range(0, len(keys), 500):  # stay under bind-parameter limits
        query = select(Suppression).where(
            Suppression.account_id == account_id, Suppression.email.in_(keys[start : start + 500])
        )
        for row in (await session.execute(query)).scalars():
            found.setdefault(row.email, []).append(row)
    return found


async def suppress(
    session: AsyncSession,
    *,
    account_id: str,
    email: str,
    type: SuppressionType,
    reason: str,
) -> None:
    """Add a suppression; adding one that exists changes nothing (safe under concurrency)."""
    values = {
        "id": new_id(),
        "account_id": account_id,
        "email": suppression_key(email),
        "type": type.value,
        "reason": reason,
        "created_at": clock.now(),
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(insert(Suppression).values(values).on_conflict_do_nothing())


async def count(session: AsyncSession, *, account_id: str) -> int:
    """How many suppressions the account has."""
    query = (
        select(func.count()).select_from(Suppression).where(Suppression.account_id == account_id)
    )
    return int(await session.scalar(query) or 0)
