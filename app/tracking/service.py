"""What the unsubscribe page does: show a recipient's groups and opt it out of (and back
into) mail. The hot endpoints (pixel, click, one-click) are app.tracking.hits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.asm import service as asm
from app.asm.models import UnsubscribeGroup
from app.events import service as events
from app.messages.models import Message
from app.suppressions.models import Suppression, SuppressionType
from app.suppressions.service import suppression_key
from app.tracking import hits
from app.tracking.hits import Visitor
from app.tracking.tokens import Kind, Token


async def set_subscription(
    session: AsyncSession,
    token: Token,
    *,
    group_id: int | None,
    subscribed: bool,
    source: str,
    visitor: Visitor | None = None,
) -> bool:
    """Opt the token's recipient out of (or back into) a group, or all mail (group None);
    records an event only when something changed. Returns whether it did."""
    tracked = token.recipient
    if group_id is not None and not await hits.existing_groups(
        session, {(tracked.account_id, group_id)}
    ):
        if subscribed:
            return False  # a deleted group: nothing to come back to
        group_id = None  # leaving a deleted group means every mail, as SendGrid does it
    if subscribed:
        changed = await asm.resubscribe(
            session, account_id=tracked.account_id, email=tracked.email, group_id=group_id
        )
    else:
        changed = await asm.unsubscribe(
            session, account_id=tracked.account_id, email=tracked.email, group_id=group_id
        )
    if changed:
        facts = (await hits.facts_of(session, [tracked])).get(tracked.recipient_id)
        event = hits.subscription_event(
            token,
            group_id=group_id,
            subscribed=subscribed,
            source=source,
            visitor=visitor,
            facts=facts,
        )
        await events.record(session, [event])
    return changed


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
