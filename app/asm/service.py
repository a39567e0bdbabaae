"""Unsubscribe groups and who opted out of them; the global list is app.suppressions'
`unsubscribe` type. Shared by the ASM API, the unsubscribe endpoints and `columba inbound`."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import String, delete, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.asm.models import GroupSuppression, UnsubscribeGroup
from app.common.fields import MAX_INT64, as_int64
from app.core import clock
from app.core.db import UTCDateTime, conflict_insert
from app.core.errors import BadRequest, NotFound
from app.core.ids import new_id
from app.suppressions import service as suppressions
from app.suppressions import tombstones
from app.suppressions.models import Suppression, SuppressionType

LOOKUP_CHUNK = 500  # stay under bind-parameter limits
MAX_GROUPS = 200  # SendGrid: "You can create and retrieve up to 200 suppression groups"
GROUP_NOT_FOUND = "Unsubscribe group not found"
DUPLICATE_NAME = "Another group with this name already exists"


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
    Returns whether it was subscribed until now. A group that is no longer the account's
    (deleted since the mail was sent) means every mail, as SendGrid does it."""
    key = suppressions.suppression_key(email)
    if group_id is not None:
        if await _opt_out_of_group(session, account_id=account_id, email=key, group_id=group_id):
            return True
        if await group_of(session, account_id=account_id, group_id=group_id) is not None:
            return False  # opted out already
    return await _opt_out_globally(session, account_id=account_id, email=key, reason=reason)


async def _opt_out_globally(
    session: AsyncSession, *, account_id: str, email: str, reason: str
) -> bool:
    """Put the address on the global unsubscribe list; whether it was not on it. One atomic
    INSERT … RETURNING, not a read then a write: two concurrent requests must not both find
    the address subscribed (each would record an unsubscribe)."""
    insert = conflict_insert(session)
    statement = (
        insert(Suppression)
        .values(
            id=new_id(),
            account_id=account_id,
            email=email,
            type=SuppressionType.UNSUBSCRIBE.value,
            reason=reason or "Unsubscribed Address",
            status="",
            created_at=clock.now(),
        )
        .on_conflict_do_nothing()
        .returning(Suppression.id)
    )
    return (await session.execute(statement)).first() is not None


async def _opt_out_of_group(
    session: AsyncSession, *, account_id: str, email: str, group_id: int
) -> bool:
    """Insert the opt-out if the group is the account's (INSERT … SELECT: one statement);
    whether a row was added."""
    insert = conflict_insert(session)
    # SQLite reads ON CONFLICT after INSERT … SELECT only when the SELECT has a WHERE clause.
    source = select(
        UnsubscribeGroup.id,
        literal(email, String()),
        UnsubscribeGroup.account_id,
        literal(clock.now(), UTCDateTime()),
    ).where(UnsubscribeGroup.id == group_id, UnsubscribeGroup.account_id == account_id)
    statement = (
        insert(GroupSuppression)
        .from_select(["group_id", "email", "account_id", "created_at"], source)
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


async def globally_unsubscribed(session: AsyncSession, *, account_id: str, email: str) -> bool:
    """Whether `email` is on the account's global unsubscribe list."""
    query = select(Suppression.id).where(
        Suppression.account_id == account_id,
        Suppression.email == suppressions.suppression_key(email),
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


def parse_group_id(text: str) -> int | None:
    """A group id from a URL path (SendGrid types it as a string), None when it is none."""
    return as_int64(text)


async def get_group(session: AsyncSession, *, account_id: str, group_id: str) -> UnsubscribeGroup:
    """The account's group with the id in the path; 404 for another account's, or none."""
    number = parse_group_id(group_id)
    group = None
    if number is not None:
        group = await group_of(session, account_id=account_id, group_id=number)
    if group is None:
        raise NotFound(GROUP_NOT_FOUND, "group_id")
    return group


async def list_groups(
    session: AsyncSession, *, account_id: str, ids: Collection[int] = ()
) -> list[tuple[UnsubscribeGroup, int]]:
    """The account's groups (only `ids` when given), oldest first, each with how many
    addresses opted out of it: one query."""
    counts = (
        select(GroupSuppression.group_id, func.count().label("unsubscribes"))
        .where(GroupSuppression.account_id == account_id)
        .group_by(GroupSuppression.group_id)
        .subquery()
    )
    query = (
        select(UnsubscribeGroup, func.coalesce(counts.c.unsubscribes, 0))
        .outerjoin(counts, counts.c.group_id == UnsubscribeGroup.id)
        .where(UnsubscribeGroup.account_id == account_id)
        .order_by(UnsubscribeGroup.id)
    )
    if ids:
        query = query.where(UnsubscribeGroup.id.in_(sorted(set(ids))))
    return [(group, int(count)) for group, count in (await session.execute(query)).all()]


async def unsubscribes_of(session: AsyncSession, *, group_id: int) -> int:
    """How many addresses opted out of the group."""
    query = select(func.count()).where(GroupSuppression.group_id == group_id)
    return int(await session.scalar(query) or 0)


async def create_group(
    session: AsyncSession, *, account_id: str, name: str, description: str, is_default: bool
) -> UnsubscribeGroup:
    """A new group; 400 past MAX_GROUPS or for a name the account already uses."""
    await accounts.lock_account(session, account_id=account_id)  # concurrent creates count in turn
    count = select(func.count()).where(UnsubscribeGroup.account_id == account_id)
    if int(await session.scalar(count) or 0) >= MAX_GROUPS:
        raise BadRequest(f"An account may have at most {MAX_GROUPS} unsubscribe groups.", None)
    now = clock.now()
    group = UnsubscribeGroup(
        account_id=account_id,
        name=name,
        description=description,
        is_default=False,
        created_at=now,
        updated_at=now,
    )
    session.add(group)
    await _flush_unique_name(session)
    if is_default:
        await _make_default(session, group)
    return group


async def update_group(
    session: AsyncSession, *, group: UnsubscribeGroup, changes: dict[str, Any]
) -> UnsubscribeGroup:
    """Change name, description or is_default; 400 for a name the account already uses."""
    for key in ("name", "description"):
        if key in changes:
            setattr(group, key, changes[key])
    group.updated_at = clock.now()
    await _flush_unique_name(session)
    if changes.get("is_default") is True:
        await _make_default(session, group)
    elif changes.get("is_default") is False:
        group.is_default = False
        await session.flush()
    return group


async def _flush_unique_name(session: AsyncSession) -> None:
    """Flush; the (account, name) unique constraint becomes a 400 (the request then ends
    without committing, so the failed transaction needs no savepoint)."""
    try:
        await session.flush()
    except IntegrityError as exc:
        raise BadRequest(DUPLICATE_NAME, "name") from exc


async def _make_default(session: AsyncSession, group: UnsubscribeGroup) -> None:
    """At most one default group per account: this one becomes it, the previous one stops."""
    await session.execute(
        update(UnsubscribeGroup)
        .where(
            UnsubscribeGroup.account_id == group.account_id,
            UnsubscribeGroup.id != group.id,
            UnsubscribeGroup.is_default.is_(True),
        )
        .values(is_default=False)
        .execution_options(synchronize_session=False)
    )
    group.is_default = True
    await session.flush()


async def delete_group(session: AsyncSession, *, group: UnsubscribeGroup) -> None:
    """Delete a group and its opt-outs: mail to those addresses is sent again (SendGrid)."""
    await session.execute(delete(GroupSuppression).where(GroupSuppression.group_id == group.id))
    await session.delete(group)
    await session.flush()


async def add_to_group(
    session: AsyncSession, *, group: UnsubscribeGroup, emails: Sequence[str]
) -> list[str]:
    """Opt addresses out of the group (those already out stay as they are); returns them,
    lower-cased, in the order given."""
    keys = list(dict.fromkeys(suppressions.suppression_key(email) for email in emails))
    now = clock.now()
    rows = [
        {"group_id": group.id, "email": key, "account_id": group.account_id, "created_at": now}
        for key in keys
    ]
    insert = conflict_insert(session)
    for start in range(0, len(rows), LOOKUP_CHUNK):
        statement = insert(GroupSuppression).values(rows[start : start + LOOKUP_CHUNK])
        await session.execute(statement.on_conflict_do_nothing())
    return keys


async def members(session: AsyncSession, *, group_id: int) -> list[str]:
    """Every address that opted out of the group, in address order."""
    query = (
        select(GroupSuppression.email)
        .where(GroupSuppression.group_id == group_id)
        .order_by(GroupSuppression.email)
    )
    return list((await session.execute(query)).scalars())


async def all_opt_outs(
    session: AsyncSession, *, account_id: str
) -> list[tuple[GroupSuppression, str]]:
    """Every opt-out of every group of the account, with the group's name."""
    query = (
        select(GroupSuppression, UnsubscribeGroup.name)
        .join(UnsubscribeGroup, UnsubscribeGroup.id == GroupSuppression.group_id)
        .where(GroupSuppression.account_id == account_id)
        .order_by(GroupSuppression.email, GroupSuppression.group_id)
    )
    return [(row, name) for row, name in (await session.execute(query)).all()]


async def groups_of_address(
    session: AsyncSession, *, account_id: str, email: str
) -> list[tuple[UnsubscribeGroup, bool]]:
    """Every group of the account, and whether `email` opted out of it."""
    left = await groups_left(session, account_id=account_id, email=email)
    groups = await list_groups(session, account_id=account_id)
    return [(group, group.id in left) for group, _ in groups]


async def unsubscribe_globally(
    session: AsyncSession, *, account_id: str, emails: Sequence[str]
) -> list[str]:
    """Put addresses on the global unsubscribe list (the `unsubscribe` suppressions SendGrid
    also serves as /v3/suppression/unsubscribes); returns them lower-cased, in order."""
    keys = list(dict.fromkeys(suppressions.suppression_key(email) for email in emails))
    entries = [
        suppressions.NewSuppression(
            email=key, type=SuppressionType.UNSUBSCRIBE, reason="Unsubscribed Address"
        )
        for key in keys
    ]
    await suppressions.add_many(session, account_id=account_id, entries=entries)
    return keys


async def existing_groups(
    session: AsyncSession, *, account_id: str, ids: Collection[int]
) -> set[int]:
    """Which of `ids` are groups of the account: one query (a send names at most 26)."""
    wanted = sorted({group_id for group_id in ids if 0 <= group_id <= MAX_INT64})
    if not wanted:
        return set()
    query = select(UnsubscribeGroup.id).where(
        UnsubscribeGroup.account_id == account_id, UnsubscribeGroup.id.in_(wanted)
    )
    return set((await session.execute(query)).scalars())


async def opted_out(
    session: AsyncSession,
    *,
    account_id: str,
    group_ids: Collection[int],
    emails: Iterable[str],
    tombstone_key: bytes = b"",
) -> set[tuple[int, str]]:
    """(group, lower-cased address) pairs among `group_ids` × `emails` that opted out (or
    whose opt-out an erasure left as a tombstone): one query per 500 addresses, however many
    groups (the accept path asks once per request)."""
    addresses = sorted({suppressions.suppression_key(email) for email in emails})
    erased = tombstones.tombstones_of(addresses, tombstone_key)
    keys = addresses + sorted(erased)
    groups = sorted(set(group_ids))
    found: set[tuple[int, str]] = set()
    if not groups:
        return found
    for start in range(0, len(keys), LOOKUP_CHUNK):
        query = select(GroupSuppression.group_id, GroupSuppression.email).where(
            GroupSuppression.account_id == account_id,
            GroupSuppression.group_id.in_(groups),
            GroupSuppression.email.in_(keys[start : start + LOOKUP_CHUNK]),
        )
        rows = (await session.execute(query)).all()
        found.update((group_id, erased.get(email, email)) for group_id, email in rows)
    return found


def groups_to_display(settings: Mapping[str, Any], group_id: int | None) -> list[int]:
    """The groups a message's preference page offers: its own group, then the send's
    `groups_to_display` (kept in the message's settings["asm"] by every send API), each once."""
    asm = settings.get("asm") or {}
    shown = [group_id, *asm.get("groups_to_display", ())]
    return list(dict.fromkeys(g for g in shown if isinstance(g, int)))


async def preferences(
    session: AsyncSession, *, account_id: str, email: str, group_ids: Sequence[int]
) -> list[tuple[UnsubscribeGroup, bool]]:
    """The account's groups among `group_ids`, in that order (deleted ones left out), and
    whether `email` opted out of each: what a preference page shows. Two queries."""
    if not group_ids:
        return []
    listed = await list_groups(session, account_id=account_id, ids=group_ids)
    found = {group.id: group for group, _ in listed}
    left = await groups_left(session, account_id=account_id, email=email)
    return [(found[g], g in left) for g in dict.fromkeys(group_ids) if g in found]
