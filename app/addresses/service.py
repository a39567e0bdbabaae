"""Erasing one address from everything an account stores (`DELETE /v1/addresses/{email}`).

Each step works through ids in batches of at most BATCH rows, a transaction each, so no lock
is held for long however much mail the address received; an erase interrupted half-way is
finished by running it again (every step finds what is left). What happens to each table:

- a message whose every recipient is the address: deleted, with everything that hangs off it
  (recipients, attempts, events and their webhook outbox rows, attachments, tags, tracking
  engagements, inbound reports, SMTP submission details: ON DELETE CASCADE);
- the address's recipient rows of a message shared with others: deleted (with their attempts,
  events, engagements, inbound reports and outbox rows); the message itself, and any other
  message of the account that names the address, is scrubbed: every occurrence in its
  headers, bodies, raw MIME, template data, metadata and settings becomes
  `erased@erased.invalid` (and the display name next to it goes);
- other recipients' personalizations and SMTP replies, attempts' replies, inbound reports'
  diagnostics that name it: scrubbed;
- events that name it (tracking hits kept after their message, …), activity search tags,
  idempotency-key responses and received bounces or complaints (`inbound_messages`) that
  name it: deleted;
- suppressions and group opt-outs: kept as tombstones (app.suppressions.tombstones), so
  mail to the address stays dropped; blocks (which suppress nothing) are deleted;
- stats counters are aggregates with no address: kept.

The fact of the erase is recorded in `erasures`, with the rows touched per table, never the
address.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, Text, cast, delete, false, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.addresses.models import Erasure
from app.addresses.scrub import Scrubber
from app.asm.models import GroupSuppression
from app.bounces.models import InboundMessage, InboundReport
from app.core import clock
from app.core.db import Database
from app.events.models import Event
from app.idempotency.models import IdempotencyKey
from app.messages.models import Attempt, Message, MessageTag, Recipient
from app.suppressions.models import Suppression, SuppressionType
from app.suppressions.service import suppression_key
from app.suppressions.tombstones import tombstone_of
from app.tracking.models import Engagement

BATCH = 500  # rows per transaction: each holds its locks for milliseconds
MESSAGE_BATCH = 100  # whole messages per transaction (each takes its children along)

# Message columns that may name a recipient (from_email is the account's own sender).
_MESSAGE_TEXT = ("from_name", "subject", "text", "html")
_MESSAGE_JSON = (
    "to_header",
    "cc_header",
    "reply_to",
    "alternatives",
    "headers",
    "categories",
    "custom_args",
    "template_data",
    "sections",
    "settings",
)
_INBOUND_TEXT = (
    "email",
    "verp",
    "envelope_sender",
    "diagnostic",
    "reason",
    "subject",
    "sender",
    "recipients",
)


@dataclass(frozen=True, slots=True)
class Target:
    """The address to erase, in one account."""

    account_id: str
    email: str  # lower-cased (suppression_key)
    tombstone_key: bytes

    @property
    def scrubber(self) -> Scrubber:
        """Finds and replaces the address in stored values."""
        return Scrubber(self.email)

    def naming(self, *columns: Any) -> ColumnElement[bool]:
        """SQL: any of `columns` (text or JSON) contains the address, whatever its case."""
        needles = self.scrubber.needles
        found = [
            func.lower(cast(column, Text)).contains(needle, autoescape=True)
            for column in columns
            for needle in needles
        ]
        return or_(false(), *found)


@dataclass(frozen=True, slots=True)
class Erased:
    """What one erase did: its audit row's id and the rows touched per table."""

    id: str
    counts: dict[str, int]


async def erase(
    db: Database, *, account_id: str, email: str, actor: str, tombstone_key: bytes
) -> Erased:
    """Erase `email` from the account's data, batch by batch; record the erase (not the
    address) in `erasures`."""
    target = Target(account_id, suppression_key(email), tombstone_key)
    async with db.session() as session:
        audit = Erasure(account_id=account_id, actor=actor, counts={})
        session.add(audit)
        await session.commit()
        erasure_id = audit.id
    counts: Counter[str] = Counter()
    shared = await _delete_mail(db, target, counts)
    await _scrub_messages(db, target, shared, counts)
    await _scrub_others(db, target, counts)
    await _delete_naming(db, target, counts)
    await _bury_suppressions(db, target, counts)
    totals = {name: counts[name] for name in sorted(counts)}
    async with db.session() as session:
        await session.execute(
            update(Erasure)
            .where(Erasure.id == erasure_id)
            .values(counts=totals, completed_at=clock.now())
        )
        await session.commit()
    return Erased(id=erasure_id, counts=totals)


def _chunks(ids: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [ids[start : start + size] for start in range(0, len(ids), size)]


async def _count(session: AsyncSession, column: Any, condition: ColumnElement[bool]) -> int:
    query = select(func.count()).select_from(column.table).where(condition)
    return int(await session.scalar(query) or 0)


async def _recipients(db: Database, target: Target) -> tuple[list[tuple[str, str]], set[str]]:
    """The address's (recipient id, message id) pairs, and the ids of those of its messages
    that other recipients share."""
    async with db.session() as session:
        query = select(Recipient.id, Recipient.message_id).where(
            Recipient.account_id == target.account_id,
            func.lower(Recipient.email) == target.email,
        )
        rows = [(row[0], row[1]) for row in (await session.execute(query)).all()]
        shared: set[str] = set()
        for chunk in _chunks(sorted({message_id for _, message_id in rows}), BATCH):
            others = select(Recipient.message_id).where(
                Recipient.message_id.in_(chunk), func.lower(Recipient.email) != target.email
            )
            shared.update((await session.execute(others.distinct())).scalars())
    return rows, shared


async def _delete_mail(db: Database, target: Target, counts: Counter[str]) -> set[str]:
    """Delete the messages only the address received, and its copies of shared ones;
    returns the ids of the shared messages."""
    rows, shared = await _recipients(db, target)
    sole = sorted({message_id for _, message_id in rows} - shared)
    for chunk in _chunks(sole, MESSAGE_BATCH):
        async with db.session() as session:
            await _count_history(session, Recipient.message_id.in_(chunk), counts)
            counts["events_deleted"] += await _count(
                session, Event.id, Event.message_id.in_(chunk) & Event.recipient_id.is_(None)
            )
            result = await session.execute(delete(Message).where(Message.id.in_(chunk)))
            counts["messages_deleted"] += _rowcount(result)
            await session.commit()
    copies = [recipient_id for recipient_id, message_id in rows if message_id in shared]
    for chunk in _chunks(copies, BATCH):
        async with db.session() as session:
            await _count_history(session, Recipient.id.in_(chunk), counts)
            await session.execute(delete(Recipient).where(Recipient.id.in_(chunk)))
            await session.commit()
    return shared


async def _count_history(
    session: AsyncSession, recipients: ColumnElement[bool], counts: Counter[str]
) -> None:
    """Count the recipients about to go and the rows that cascade with them."""
    ids = select(Recipient.id).where(recipients).scalar_subquery()
    counts["recipients_deleted"] += await _count(session, Recipient.id, recipients)
    counts["attempts_deleted"] += await _count(session, Attempt.id, Attempt.recipient_id.in_(ids))
    counts["events_deleted"] += await _count(session, Event.id, Event.recipient_id.in_(ids))
    counts["engagements_deleted"] += await _count(
        session, Engagement.recipient_id, Engagement.recipient_id.in_(ids)
    )


async def _scrub_messages(
    db: Database, target: Target, shared: set[str], counts: Counter[str]
) -> None:
    """Replace the address in every message of the account that still names it: the shared
    messages it received (their raw MIME too) and any other whose fields name it."""
    names = target.naming(*(getattr(Message, name) for name in _MESSAGE_TEXT + _MESSAGE_JSON))
    async with db.session() as session:
        query = select(Message.id).where(Message.account_id == target.account_id, names)
        ids = shared | set((await session.execute(query)).scalars())
    for chunk in _chunks(sorted(ids), MESSAGE_BATCH):
        async with db.session() as session:
            loaded = await session.execute(select(Message).where(Message.id.in_(chunk)))
            for message in loaded.scalars():
                if _scrub_message(message, target.scrubber):
                    counts["messages_scrubbed"] += 1
            await session.commit()


def _scrub_message(message: Message, scrubber: Scrubber) -> bool:
    """Scrub one loaded message in place; whether it named the address."""
    changed = False
    for name in _MESSAGE_TEXT + _MESSAGE_JSON:
        value = getattr(message, name)
        if scrubber.names(value):
            setattr(message, name, scrubber.document(value))
            changed = True
    if scrubber.names(message.raw_mime):
        message.raw_mime = scrubber.raw(message.raw_mime)
        changed = True
    return changed


async def _scrub_others(db: Database, target: Target, counts: Counter[str]) -> None:
    """Other recipients' personalizations and replies, attempts' replies and inbound
    reports' diagnostics that name the address."""
    scrubber = target.scrubber
    await _scrub_rows(
        db,
        select(Recipient).where(
            Recipient.account_id == target.account_id,
            target.naming(Recipient.personalization, Recipient.last_response),
        ),
        ("personalization", "last_response"),
        scrubber,
        counts,
        "recipients_scrubbed",
    )
    await _scrub_rows(
        db,
        select(Attempt).where(
            Attempt.account_id == target.account_id, target.naming(Attempt.response)
        ),
        ("response",),
        scrubber,
        counts,
        "attempts_scrubbed",
    )
    await _scrub_rows(
        db,
        select(InboundReport).where(
            InboundReport.account_id == target.account_id,
            target.naming(InboundReport.diagnostic),
        ),
        ("diagnostic",),
        scrubber,
        counts,
        "inbound_reports_scrubbed",
    )


async def _scrub_rows(
    db: Database,
    query: Select[Any],
    columns: tuple[str, ...],
    scrubber: Scrubber,
    counts: Counter[str],
    name: str,
) -> None:
    """Scrub `columns` of the rows `query` finds, BATCH rows per transaction, walking the
    primary key (so a row the database matches but nothing changes is visited once)."""
    entity = query.column_descriptions[0]["entity"]
    key = entity.__mapper__.primary_key[0]
    after: Any = None
    while True:
        async with db.session() as session:
            page = query.order_by(key).limit(BATCH)
            if after is not None:
                page = page.where(key > after)
            rows = list((await session.execute(page)).scalars())
            if not rows:
                return
            after = getattr(rows[-1], key.key)
            for row in rows:
                for column in columns:
                    setattr(row, column, scrubber.document(getattr(row, column)))
            counts[name] += len(rows)
            await session.commit()


async def _delete_matching(
    db: Database, id_column: Any, where: ColumnElement[bool], counts: Counter[str], name: str
) -> None:
    """Delete the rows `where` finds, BATCH per transaction."""
    query = select(id_column).where(where).limit(BATCH)
    while True:
        async with db.session() as session:
            ids = list((await session.execute(query)).scalars())
            if not ids:
                return
            statement = delete(id_column.table).where(id_column.in_(ids), where)
            result = await session.execute(statement)
            counts[name] += _rowcount(result)
            await session.commit()


async def _delete_naming(db: Database, target: Target, counts: Counter[str]) -> None:
    """Events, search tags, idempotency responses and inbound mail that name the address."""
    account = target.account_id
    await _delete_matching(
        db,
        Event.id,
        (Event.account_id == account) & target.naming(Event.data),
        counts,
        "events_deleted",
    )
    await _delete_matching(
        db,
        IdempotencyKey.id,
        (IdempotencyKey.account_id == account) & target.naming(IdempotencyKey.response_body),
        counts,
        "idempotency_keys_deleted",
    )
    await _delete_matching(
        db,
        MessageTag.message_id,
        (MessageTag.account_id == account) & target.naming(MessageTag.tag),
        counts,
        "message_tags_deleted",
    )
    columns = (getattr(InboundMessage, name) for name in _INBOUND_TEXT)
    await _delete_matching(
        db,
        InboundMessage.id,
        (InboundMessage.account_id == account) & target.naming(*columns),
        counts,
        "inbound_messages_deleted",
    )
    await _delete_inbound_raw(db, target, counts)


async def _delete_inbound_raw(db: Database, target: Target, counts: Counter[str]) -> None:
    """Received messages whose stored bytes name the address (quoted headers of a bounce)."""
    scrubber = target.scrubber
    after = ""
    while True:
        async with db.session() as session:
            query = (
                select(InboundMessage.id, InboundMessage.raw)
                .where(InboundMessage.account_id == target.account_id, InboundMessage.id > after)
                .order_by(InboundMessage.id)
                .limit(BATCH // 10)  # up to INBOUND_STORE_MAX_SIZE bytes each
            )
            rows = (await session.execute(query)).all()
            if not rows:
                return
            after = rows[-1][0]
            naming = [row_id for row_id, raw in rows if scrubber.names(raw)]
            if naming:
                result = await session.execute(
                    delete(InboundMessage).where(InboundMessage.id.in_(naming))
                )
                counts["inbound_messages_deleted"] += _rowcount(result)
                await session.commit()


async def _bury_suppressions(db: Database, target: Target, counts: Counter[str]) -> None:
    """Replace the address on the suppression lists by its tombstone (blocks, which suppress
    nothing, and entries without a secret key to hash with, are deleted)."""
    tombstone = tombstone_of(target.email, target.tombstone_key) if target.tombstone_key else ""
    async with db.session() as session:
        entries = list(
            (
                await session.execute(
                    select(Suppression).where(
                        Suppression.account_id == target.account_id,
                        Suppression.email == target.email,
                    )
                )
            ).scalars()
        )
        buried = set(
            (
                await session.execute(
                    select(Suppression.type).where(
                        Suppression.account_id == target.account_id,
                        Suppression.email == tombstone,
                    )
                )
            ).scalars()
        )
        for entry in entries:
            if not tombstone or entry.type == SuppressionType.BLOCK or entry.type in buried:
                await session.delete(entry)
                counts["suppressions_deleted"] += 1
            else:
                entry.email, entry.reason = tombstone, ""
                counts["suppressions_tombstoned"] += 1
        await _bury_group_opt_outs(session, target, tombstone, counts)
        await session.commit()


async def _bury_group_opt_outs(
    session: AsyncSession, target: Target, tombstone: str, counts: Counter[str]
) -> None:
    """The same for opt-outs of unsubscribe groups."""
    mine = GroupSuppression.account_id == target.account_id
    entries = list(
        (
            await session.execute(
                select(GroupSuppression).where(mine, GroupSuppression.email == target.email)
            )
        ).scalars()
    )
    buried = set(
        (
            await session.execute(
                select(GroupSuppression.group_id).where(mine, GroupSuppression.email == tombstone)
            )
        ).scalars()
    )
    for entry in entries:
        if not tombstone or entry.group_id in buried:
            await session.delete(entry)
            counts["group_suppressions_deleted"] += 1
        else:
            entry.email = tombstone
            counts["group_suppressions_tombstoned"] += 1


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


_STEPS = (_delete_mail, _scrub_messages, _scrub_others, _delete_naming, _bury_suppressions)
