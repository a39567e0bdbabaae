"""What the public tracking and unsubscribe endpoints do: record opens and clicks, opt
recipients out of (and back into) mail.

An open or a click costs one primary-key read (the recipient's delivery time and its
message's categories: what the token cannot carry) and writes one event, with the first open
or click of a recipient marked `unique` by an INSERT that succeeds once (a write, not a read).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.asm import service as asm
from app.asm.models import UnsubscribeGroup
from app.core import clock
from app.events import service as events
from app.events.models import EventType
from app.messages.models import Message, Recipient, RecipientStatus
from app.suppressions.models import Suppression, SuppressionType
from app.suppressions.service import suppression_key
from app.tracking.machines import machine_kind
from app.tracking.models import Engagement
from app.tracking.tokens import Kind, Token, TrackedRecipient

OPEN, CLICK = "open", "click"
MAX_USER_AGENT = 1024  # stored in every event: a client may send any length


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who made the request: its user agent and address (as the proxy settings allow)."""

    useragent: str
    ip: str | None

    def data(self) -> dict[str, Any]:
        """The event fields describing the visitor."""
        return {"useragent": self.useragent[:MAX_USER_AGENT], "ip": self.ip}


@dataclass(frozen=True, slots=True)
class Facts:
    """What the token cannot carry: read with one primary-key lookup of the recipient."""

    delivered_at: datetime | None
    categories: tuple[str, ...]
    group_exists: bool


async def _facts(session: AsyncSession, tracked: TrackedRecipient) -> Facts | None:
    """The recipient's delivery time and its message's categories (None: they were deleted,
    by retention or with the account); whether the token's group still exists."""
    query = (
        select(Recipient.status, Recipient.updated_at, Message.categories)
        .join(Message, Message.id == Recipient.message_id)
        .where(Recipient.id == tracked.recipient_id, Recipient.account_id == tracked.account_id)
    )
    if tracked.group_id is not None:
        query = query.add_columns(_group_exists(tracked).label("group_exists"))
    row = (await session.execute(query)).first()
    if row is None:
        return None
    # A delivered recipient changes no more (until an asynchronous bounce): its last update
    # is the delivery.
    delivered = row.updated_at if row.status == RecipientStatus.DELIVERED else None
    group_exists = bool(row.group_exists) if tracked.group_id is not None else False
    return Facts(delivered, tuple(row.categories or ()), group_exists)


def _group_exists(tracked: TrackedRecipient) -> Any:
    return exists().where(
        UnsubscribeGroup.id == tracked.group_id,
        UnsubscribeGroup.account_id == tracked.account_id,
    )


async def _first(session: AsyncSession, recipient_id: str, kind: str) -> bool:
    """Whether this is the recipient's first `kind` (open or click): the INSERT succeeds once."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(Engagement)
        .values(recipient_id=recipient_id, kind=kind, created_at=clock.now())
        .on_conflict_do_nothing()
        .returning(Engagement.recipient_id)
    )
    return (await session.execute(statement)).first() is not None


async def record_engagement(session: AsyncSession, token: Token, visitor: Visitor) -> bool:
    """Record an open (OPEN token) or a click (CLICK token); False when the recipient is gone.

    Machine opens and clicks are flagged and do not take the recipient's unique one."""
    tracked = token.recipient
    facts = await _facts(session, tracked)
    if facts is None:
        return False
    is_open = token.kind is Kind.OPEN
    machine = machine_kind(
        useragent=visitor.useragent,
        ip=visitor.ip,
        delivered_at=facts.delivered_at,
        now=clock.now(),
        is_open=is_open,
    )
    kind = OPEN if is_open else CLICK
    unique = machine is None and await _first(session, tracked.recipient_id, kind)
    data: dict[str, Any] = {
        "email": tracked.email,
        **visitor.data(),
        "unique": unique,
        "machine": machine is not None,
    }
    if machine is not None:
        data["machine_reason"] = machine.value
    if not is_open:
        data["url"] = token.url
    event = events.NewEvent(
        account_id=tracked.account_id,
        type=EventType.OPENED if is_open else EventType.CLICKED,
        message_id=tracked.message_id,
        recipient_id=tracked.recipient_id,
        data=data,
        categories=facts.categories,
    )
    await events.record(session, [event])
    return True


def target_group(token: Token) -> int | None:
    """The group a token's unsubscribe acts on; None: every mail of the account."""
    if token.kind is Kind.GLOBAL_UNSUBSCRIBE:
        return None
    return token.recipient.group_id


async def set_subscription(
    session: AsyncSession,
    token: Token,
    *,
    group_id: int | None,
    subscribed: bool,
    source: str,
    visitor: Visitor | None = None,
    facts: Facts | None = None,
) -> bool:
    """Opt the token's recipient out of (or back into) a group, or all mail (group None);
    records an event only when something changed. Returns whether it did."""
    tracked = token.recipient
    if group_id is not None and not await _group_known(session, tracked, group_id, facts):
        return False  # the group was deleted: its mail can no longer be sent anyway
    if subscribed:
        changed = await asm.resubscribe(
            session, account_id=tracked.account_id, email=tracked.email, group_id=group_id
        )
    else:
        changed = await asm.unsubscribe(
            session, account_id=tracked.account_id, email=tracked.email, group_id=group_id
        )
    if changed:
        await _record_change(session, token, group_id, subscribed, source, visitor, facts)
    return changed


async def _group_known(
    session: AsyncSession, tracked: TrackedRecipient, group_id: int, facts: Facts | None
) -> bool:
    """Whether the group is still the account's (from the facts read when it is the token's)."""
    if facts is not None and group_id == tracked.group_id:
        return facts.group_exists
    return await asm.group_of(session, account_id=tracked.account_id, group_id=group_id) is not None


async def _record_change(
    session: AsyncSession,
    token: Token,
    group_id: int | None,
    subscribed: bool,
    source: str,
    visitor: Visitor | None,
    facts: Facts | None,
) -> None:
    """One event: unsubscribed, group_unsubscribed or group_resubscribed."""
    tracked = token.recipient
    if subscribed:
        event_type = EventType.GROUP_RESUBSCRIBED
    else:
        event_type = EventType.UNSUBSCRIBED if group_id is None else EventType.GROUP_UNSUBSCRIBED
    data: dict[str, Any] = {"email": tracked.email, "source": source}
    if group_id is not None:
        data["asm_group_id"] = group_id
    if visitor is not None:
        data.update(visitor.data())
    owned = facts is not None  # the message may be gone (retention): keep the event anyway
    event = events.NewEvent(
        account_id=tracked.account_id,
        type=event_type,
        message_id=tracked.message_id if owned else None,
        recipient_id=tracked.recipient_id if owned else None,
        data=data,
        categories=facts.categories if facts is not None else (),
    )
    await events.record(session, [event])


async def one_click(session: AsyncSession, token: Token, visitor: Visitor) -> bool:
    """RFC 8058 §3.2: unsubscribe at once, from the token's group or from everything."""
    facts = await _facts(session, token.recipient)
    return await set_subscription(
        session,
        token,
        group_id=target_group(token),
        subscribed=False,
        source="one_click",
        visitor=visitor,
        facts=facts,
    )


async def recipient_facts(session: AsyncSession, token: Token) -> Facts | None:
    """The facts of a token's recipient (for the page's actions)."""
    return await _facts(session, token.recipient)


@dataclass(frozen=True, slots=True)
class GroupChoice:
    """A group the page offers, and whether the recipient still gets its mail."""

    id: int
    name: str
    description: str
    subscribed: bool


async def page_groups(
    session: AsyncSession, token: Token, *, display: Iterable[int]
) -> list[GroupChoice]:
    """The groups the page shows (the token's own first, then `display`), with their state;
    ids that are not groups of the account are left out."""
    tracked = token.recipient
    wanted = list(dict.fromkeys([g for g in (tracked.group_id, *display) if g is not None]))
    if not wanted:
        return []
    query = select(UnsubscribeGroup).where(
        UnsubscribeGroup.account_id == tracked.account_id, UnsubscribeGroup.id.in_(wanted)
    )
    groups = {group.id: group for group in (await session.execute(query)).scalars()}
    left = await asm.groups_left(session, account_id=tracked.account_id, email=tracked.email)
    return [
        GroupChoice(g, groups[g].name, groups[g].description, g not in left)
        for g in wanted
        if g in groups
    ]


async def groups_to_display(session: AsyncSession, token: Token) -> list[int]:
    """The message's `asm.groups_to_display` (none when the message is gone)."""
    query = select(Message.settings).where(
        Message.id == token.recipient.message_id,
        Message.account_id == token.recipient.account_id,
    )
    settings = (await session.execute(query)).scalar_one_or_none() or {}
    asm_settings = settings.get("asm") or {}
    shown = asm_settings.get("groups_to_display") if isinstance(asm_settings, dict) else None
    return [g for g in shown or () if isinstance(g, int) and not isinstance(g, bool)]


async def account_groups(session: AsyncSession, token: Token) -> list[int]:
    """The ids of every group of the token's account, oldest first."""
    query = select(UnsubscribeGroup.id).where(
        UnsubscribeGroup.account_id == token.recipient.account_id
    )
    return list((await session.execute(query.order_by(UnsubscribeGroup.id))).scalars())


async def page_display(session: AsyncSession, token: Token) -> list[int]:
    """The groups the page offers as checkboxes: the message's `groups_to_display`, or, on
    the preferences page of a message without them, every group of the account."""
    display = await groups_to_display(session, token)
    if token.kind is Kind.PREFERENCES and not display:
        display = await account_groups(session, token)
    return display


async def globally_unsubscribed(session: AsyncSession, token: Token) -> bool:
    """Whether the recipient opted out of every mail of the account."""
    tracked = token.recipient
    query = select(Suppression.id).where(
        Suppression.account_id == tracked.account_id,
        Suppression.email == suppression_key(tracked.email),
        Suppression.type == SuppressionType.UNSUBSCRIBE,
    )
    return (await session.execute(query.limit(1))).first() is not None
