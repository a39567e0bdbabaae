"""Writing the hits of the hot endpoints (opens, clicks, one-click unsubscribes), many per
transaction: one read of what the tokens cannot carry (each recipient's delivery time and
its message's categories, by primary key; the unsubscribe groups still there), then one
statement per table: the first engagements, the opt-outs, the events (with their counters
and webhook outbox rows).

A first open or click is known by its INSERT succeeding, and an opt-out that changed
something by its own: INSERT … ON CONFLICT DO NOTHING RETURNING is atomic, so two
concurrent hits of one recipient can never both count as the first (a read, then a write,
could).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.asm.models import GroupSuppression, UnsubscribeGroup
from app.core import clock
from app.core.db import conflict_insert
from app.core.ids import new_id
from app.events import service as events
from app.events.models import EventType
from app.messages.models import Message, Recipient, RecipientStatus
from app.suppressions.models import Suppression, SuppressionType
from app.suppressions.service import suppression_key
from app.tracking.machines import MachineKind, machine_kind
from app.tracking.models import Engagement
from app.tracking.tokens import Kind, Token, TrackedRecipient

OPEN, CLICK = "open", "click"
MAX_USER_AGENT = 1024  # stored in every event: a client may send any length
GLOBAL_REASON = "Unsubscribed Address"  # SendGrid's reason for the global list
# Rows are inserted in key order: two transactions in flight at once then take their row
# locks in the same order and cannot deadlock (app.tracking.committer runs two).
# Core tables, one statement run with many parameter sets: SQLAlchemy compiles it once per
# process ("insertmanyvalues"), where a multi-row VALUES would be compiled for every batch size.
_SUPPRESSIONS: Table = Suppression.__table__  # type: ignore[assignment]
_GROUP_SUPPRESSIONS: Table = GroupSuppression.__table__  # type: ignore[assignment]
_ENGAGEMENTS: Table = Engagement.__table__  # type: ignore[assignment]
# Reads as Core too: the ORM's per-statement context costs more than these small queries.
_RECIPIENTS: Table = Recipient.__table__  # type: ignore[assignment]
_MESSAGES: Table = Message.__table__  # type: ignore[assignment]
_GROUPS: Table = UnsubscribeGroup.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who made the request: its user agent and address (as the proxy settings allow)."""

    useragent: str
    ip: str | None

    def data(self) -> dict[str, Any]:
        """The event fields describing the visitor."""
        return {"useragent": self.useragent[:MAX_USER_AGENT], "ip": self.ip}


@dataclass(frozen=True, slots=True)
class Hit:
    """One request of a hot endpoint: an OPEN or CLICK token (an engagement), or an
    unsubscribe token POSTed one-click (RFC 8058)."""

    token: Token
    visitor: Visitor


@dataclass(frozen=True, slots=True)
class Facts:
    """What the token cannot carry, read by the recipient's primary key."""

    delivered_at: datetime | None
    categories: tuple[str, ...]


def target_group(token: Token) -> int | None:
    """The group a token's unsubscribe acts on; None: every mail of the account."""
    if token.kind is Kind.GLOBAL_UNSUBSCRIBE:
        return None
    return token.recipient.group_id


async def facts_of(
    session: AsyncSession, recipients: Iterable[TrackedRecipient]
) -> dict[str, Facts]:
    """Facts by recipient id, for the recipients that still exist in the token's account
    (retention, or the account's deletion, may have removed them)."""
    wanted = {r.recipient_id: r.account_id for r in recipients}
    if not wanted:
        return {}
    recipient, message = _RECIPIENTS.c, _MESSAGES.c
    query = (
        select(
            recipient.id,
            recipient.account_id,
            recipient.status,
            recipient.updated_at,
            message.categories,
        )
        .join_from(_RECIPIENTS, _MESSAGES, message.id == recipient.message_id)
        .where(recipient.id.in_(sorted(wanted)))
    )
    found = {}
    for row in await session.execute(query):
        if wanted.get(row.id) != row.account_id:
            continue
        # A delivered recipient changes no more (until an asynchronous bounce): its last
        # update is its delivery.
        delivered = row.updated_at if row.status == RecipientStatus.DELIVERED else None
        found[row.id] = Facts(delivered, tuple(row.categories or ()))
    return found


async def existing_groups(session: AsyncSession, pairs: set[tuple[str, int]]) -> set[int]:
    """Which of the (account, group) pairs are groups that still exist."""
    if not pairs:
        return set()
    group = _GROUPS.c
    query = select(group.id, group.account_id).where(
        group.id.in_(sorted({group_id for _, group_id in pairs}))
    )
    return {row.id for row in await session.execute(query) if (row.account_id, row.id) in pairs}


async def first_engagements(session: AsyncSession, keys: Sequence[tuple[str, str]]) -> set[Any]:
    """Insert (recipient, kind) engagements; the keys that were not there before."""
    if not keys:
        return set()
    now = clock.now()
    rows = [{"recipient_id": r, "kind": k, "created_at": now} for r, k in sorted(set(keys))]
    statement = (
        conflict_insert(session)(_ENGAGEMENTS)
        .on_conflict_do_nothing()
        .returning(_ENGAGEMENTS.c.recipient_id, _ENGAGEMENTS.c.kind)
    )
    return {(row[0], row[1]) for row in await session.execute(statement, rows)}


async def opt_out_globally(session: AsyncSession, keys: Sequence[tuple[str, str]]) -> set[Any]:
    """Add (account, email) to the global unsubscribe list; the keys that were not on it."""
    if not keys:
        return set()
    now = clock.now()
    rows = [
        {"id": new_id(), "account_id": account, "email": email, "created_at": now,
         "type": SuppressionType.UNSUBSCRIBE.value, "reason": GLOBAL_REASON, "status": ""}
        for account, email in sorted(set(keys))
    ]  # fmt: skip
    statement = (
        conflict_insert(session)(_SUPPRESSIONS)
        .on_conflict_do_nothing()
        .returning(_SUPPRESSIONS.c.account_id, _SUPPRESSIONS.c.email)
    )
    return {(row[0], row[1]) for row in await session.execute(statement, rows)}


async def opt_out_of_groups(
    session: AsyncSession, keys: Sequence[tuple[str, int, str]]
) -> set[Any]:
    """Add (account, group, email) opt-outs; the keys that were not there before."""
    if not keys:
        return set()
    now = clock.now()
    rows = [
        {"account_id": account, "group_id": group, "email": email, "created_at": now}
        for account, group, email in sorted(set(keys))
    ]
    table = _GROUP_SUPPRESSIONS.c
    statement = (
        conflict_insert(session)(_GROUP_SUPPRESSIONS)
        .on_conflict_do_nothing()
        .returning(table.account_id, table.group_id, table.email)
    )
    return {(row[0], row[1], row[2]) for row in await session.execute(statement, rows)}


def _kind(hit: Hit) -> str:
    return OPEN if hit.token.kind is Kind.OPEN else CLICK


def _judged(hit: Hit, facts: Facts, now: datetime) -> MachineKind | None:
    """Whether a machine made the hit (and which kind), or a person (None)."""
    return machine_kind(
        useragent=hit.visitor.useragent,
        ip=hit.visitor.ip,
        delivered_at=facts.delivered_at,
        now=now,
        is_open=hit.token.kind is Kind.OPEN,
    )


def _engagement_event(
    hit: Hit, facts: Facts, machine: MachineKind | None, *, unique: bool
) -> events.NewEvent:
    """The `opened` or `clicked` event of one hit."""
    token, tracked = hit.token, hit.token.recipient
    data: dict[str, Any] = {
        "email": tracked.email,
        **hit.visitor.data(),
        "unique": unique,
        "machine": machine is not None,
    }
    if machine is not None:
        data["machine_reason"] = machine.value
    if token.kind is Kind.CLICK:
        data["url"] = token.url
    return events.NewEvent(
        account_id=tracked.account_id,
        type=EventType.OPENED if token.kind is Kind.OPEN else EventType.CLICKED,
        message_id=tracked.message_id,
        recipient_id=tracked.recipient_id,
        data=data,
        categories=facts.categories,
    )


async def _engagements(
    session: AsyncSession, hits: Sequence[Hit], facts: dict[str, Facts], claimed: set[Any]
) -> dict[int, events.NewEvent]:
    """An event per open or click of a recipient still there; a person's first (not a
    machine's: Apple's proxy or a scanner must not take it) is `unique`."""
    now = clock.now()
    judged = [
        (hit, facts[rid], _judged(hit, facts[rid], now))
        for hit in hits
        if (rid := hit.token.recipient.recipient_id) in facts
    ]
    people = [(h.token.recipient.recipient_id, _kind(h)) for h, _, machine in judged if not machine]
    first = await first_engagements(session, people)
    written = {}
    for hit, known, machine in judged:
        key = (hit.token.recipient.recipient_id, _kind(hit))
        unique = machine is None and key in first and key not in claimed
        if unique:
            claimed.add(key)  # two hits of one batch: only the first is the unique one
        written[id(hit)] = _engagement_event(hit, known, machine, unique=unique)
    return written


def subscription_event(
    token: Token,
    *,
    group_id: int | None,
    subscribed: bool,
    source: str,
    visitor: Visitor | None,
    facts: Facts | None,
) -> events.NewEvent:
    """`unsubscribed`, `group_unsubscribed` or `group_resubscribed`. Without facts the
    message is gone (retention): the event stays the account's, with the address."""
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
    return events.NewEvent(
        account_id=tracked.account_id,
        type=event_type,
        message_id=tracked.message_id if facts is not None else None,
        recipient_id=tracked.recipient_id if facts is not None else None,
        data=data,
        categories=facts.categories if facts is not None else (),
    )


def _opt_out_key(token: Token, group_id: int | None) -> tuple[Any, ...]:
    tracked = token.recipient
    email = suppression_key(tracked.email)
    if group_id is None:
        return (tracked.account_id, email)
    return (tracked.account_id, group_id, email)


async def record_hits(session: AsyncSession, hits: Sequence[Hit]) -> list[bool]:
    """Write what the hits did, in the caller's transaction; for each, whether it wrote an
    event (an open or click of a recipient that is gone, or a repeated one-click, writes
    none)."""
    facts = await facts_of(session, (hit.token.recipient for hit in hits))
    engaging = [hit for hit in hits if hit.token.kind in (Kind.OPEN, Kind.CLICK)]
    leaving = [hit for hit in hits if hit.token.kind not in (Kind.OPEN, Kind.CLICK)]
    claimed: set[Any] = set()
    written = await _engagements(session, engaging, facts, claimed)
    written.update(await _opt_outs(session, leaving, facts, claimed))
    await events.record(session, list(written.values()))
    return [id(hit) in written for hit in hits]


async def _opt_outs(
    session: AsyncSession, hits: Sequence[Hit], facts: dict[str, Facts], claimed: set[Any]
) -> dict[int, events.NewEvent]:
    """RFC 8058 one-click: each recipient leaves its token's group (or all mail); an event
    for each opt-out that changed something."""
    wanted = {(h.token.recipient.account_id, g) for h in hits if (g := target_group(h.token))}
    groups = await existing_groups(session, wanted)
    # A group deleted since the mail was sent means every mail, as SendGrid does it
    # (app.asm.service.unsubscribe).
    targets = [g if g in groups else None for g in map(target_group, (h.token for h in hits))]
    keys = [_opt_out_key(h.token, g) for h, g in zip(hits, targets, strict=True)]
    changed = await opt_out_globally(session, [k for k in keys if len(k) == 2])
    changed |= await opt_out_of_groups(session, [k for k in keys if len(k) == 3])
    written = {}
    for hit, group_id, key in zip(hits, targets, keys, strict=True):
        if key not in changed or key in claimed:
            continue
        claimed.add(key)
        written[id(hit)] = subscription_event(
            hit.token,
            group_id=group_id,
            subscribed=False,
            source="one_click",
            visitor=hit.visitor,
            facts=facts.get(hit.token.recipient.recipient_id),
        )
    return written
