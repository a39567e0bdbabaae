"""Unsubscribe groups and who opted out of them; the global list is app.suppressions'
`unsubscribe` type. Shared by the ASM API, the unsubscribe endpoints and `columba inbound`."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.asm.models import GroupSuppression, UnsubscribeGroup
from app.core import clock
from app.core.ids import new_id
from app.suppressions import service as suppressions
from app.suppressions.models import Suppression, SuppressionType

LOOKUP_CHUNK = 500  # stay under bind-parameter limits


async def group_of(
    session: AsyncSession, *, account_id: str, group_id: int
) -> UnsubscribeGroup | None:
    """The account's group with this id (None for another account's, or none)."""
    query = select(UnsubscribeGroup).where(
        UnsubscribeGroup.id == group_id, UnsubscribeGroup.account_id == account_id
    )
    return (await session.execute(query)).scalar_one_or_none()


async def unsubscribe(
    session: AsyncSession, *, account_id: str, email: str, group_id: int | None, reason: str = ""
) -> bool:
    """Opt `email` out of the group, or of every mail of the account without one; idempotent.
    Returns whether it was subscribed until now."""
    key = suppressions.suppression_key(email)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    if group_id is None:
        # One atomic INSERT … RETURNING, not a read then a write: two concurrent requests
        # must not both find the address subscribed (each would record an unsubscribe).
        added = (
            insert(Suppression)
            .values(
                id=new_id(),
                account_id=account_id,
                email=key,
                type=SuppressionType.UNSUBSCRIBE.value,
                reason=reason or "Unsubscribed Address",
                status="",
                created_at=clock.now(),
            )
            .on_conflict_do_nothing()
            .returning(Suppression.id)
        )
        return (await session.execute(added)).first() is not None
    statement = (
        insert(GroupSuppression)
        .values(group_id=group_id, email=key, account_id=account_id, created_at=clock.now())
        .on_conflict_do_nothing()
        .returning(GroupSuppression.group_id)
    )
    return (await session.execute(statement)).first() is not None


async def resubscribe(
    session: AsyncSession, *, account_id: str, email: str, group_id: int | None
) -> bool:
    """Undo `unsubscribe`; returns whether the address had opted out."""
    key = suppressions.suppression_key(email)
    if group_id is None:
        removed = await suppressions.remove(
            session, account_id=account_id, types=[SuppressionType.UNSUBSCRIBE], emails=[key]
        )
        return removed > 0
    result = await session.execute(
        delete(GroupSuppression).where(
            GroupSuppression.group_id == group_id,
            GroupSuppression.account_id == account_id,
            GroupSuppression.email == key,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0) > 0


async def _globally_unsubscribed(session: AsyncSession, *, account_id: str, email: str) -> bool:
    query = select(Suppression.id).where(
        Suppression.account_id == account_id,
        Suppression.email == email,
        Suppression.type == SuppressionType.UNSUBSCRIBE,
    )
    return (await session.execute(query.limit(1))).first() is not None


async def unsubscribed_from(
    session: AsyncSession, *, group_id: int, emails: Iterable[str]
) -> set[str]:
    """Which of `emails` (lower-cased) opted out of the group: one query per 500."""
    keys = sorted({suppressions.suppression_key(email) for email in emails})
    found: set[str] = set()
    for start in range(0, len(keys), LOOKUP_CHUNK):
        query = select(GroupSuppression.email).where(
            GroupSuppression.group_id == group_id,
            GroupSuppression.email.in_(keys[start : start + LOOKUP_CHUNK]),
        )
        found.update((await session.execute(query)).scalars())
    return found


async def groups_left(session: AsyncSession, *, account_id: str, email: str) -> set[int]:
    """The ids of the groups `email` opted out of."""
    query = select(GroupSuppression.group_id).where(
        GroupSuppression.account_id == account_id,
        GroupSuppression.email == suppressions.suppression_key(email),
    )
    return set((await session.execute(query)).scalars())
