"""Retention: what is older than COLUMBA_RETENTION is deleted, in small batches, so that the
database of a busy sender does not grow without end (SendGrid keeps its activity feed for 30
days too).

A message goes once every one of its recipients is final (delivered, bounced, expired,
dropped, cancelled), with its recipients, attempts, events, their webhook outbox rows and
everything else that hangs off it. Mail still scheduled, queued or deferred stays however old
it is. Events of no message, finished webhook batches (with their attempts) and the messages
`columba inbound` received go by age. The stats counters and suppressions stay: they are
what dashboards and future sends rely on.

COLUMBA_CONTENT_RETENTION, shorter, removes only the content of a finished message (bodies,
attachments, raw MIME, template data, personalizations) and marks it `content_purged_at`.

Every batch is one transaction that writes at most `limit` rows, cascades included: the
children of a message are deleted explicitly, table by table, before the message itself, so
that ON DELETE CASCADE has nothing left to do and no statement's size depends on how many
recipients or events a message had. Locks are held for one batch only (milliseconds).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    delete,
    exists,
    null,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.bounces.models import InboundMessage, InboundReport
from app.core import clock
from app.core.db import Database
from app.events.models import Event
from app.messages.models import (
    FINAL_STATUSES,
    Attempt,
    Message,
    MessageAttachment,
    MessageTag,
    Recipient,
)
from app.submission.models import SmtpSubmission
from app.tracking.models import Engagement
from app.webhooks.models import BatchState, WebhookAttempt, WebhookBatch, WebhookOutbox


@dataclass(frozen=True, slots=True)
class Purged:
    """Rows one batch (or run) deleted or emptied, per table."""

    rows: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: Purged) -> Purged:
        return Purged(dict(Counter(self.rows) + Counter(other.rows)))

    def __getitem__(self, table: str) -> int:
        return self.rows.get(table, 0)

    @property
    def total(self) -> int:
        """All rows written."""
        return sum(self.rows.values())

    def __str__(self) -> str:
        return ", ".join(f"{table} {count}" for table, count in sorted(self.rows.items()))


class _Budget:
    """Rows a batch may still write; each statement takes at most what is left."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.rows: Counter[str] = Counter()

    async def delete(self, session: AsyncSession, table: Table, ids: Select[Any]) -> bool:
        """DELETE up to `left` rows of `table` whose key `ids` selects; True when the table
        had no more (the budget was not used up by it)."""
        if self.left <= 0:
            return False
        key = table.primary_key.columns.values()[0]
        chosen = ids.limit(self.left).scalar_subquery()
        result = await session.execute(delete(table).where(key.in_(chosen)))
        return self.spent(table.name, result)

    async def update(
        self, session: AsyncSession, table: Table, ids: Select[Any], values: dict[str, Any]
    ) -> bool:
        """UPDATE up to `left` rows (see delete)."""
        if self.left <= 0:
            return False
        key = table.primary_key.columns.values()[0]
        chosen = ids.limit(self.left).scalar_subquery()
        result = await session.execute(update(table).where(key.in_(chosen)).values(**values))
        return self.spent(table.name, result)

    def spent(self, name: str, result: Any) -> bool:
        """Count what a statement wrote; True while some budget is left."""
        count = int(getattr(result, "rowcount", 0) or 0)
        self.rows[name] += count
        self.left -= count
        return self.left > 0

    @property
    def purged(self) -> Purged:
        """What the batch wrote."""
        return Purged({name: count for name, count in self.rows.items() if count})


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def _finished_before(before: datetime) -> list[ColumnElement[bool]]:
    """Messages older than `before` none of whose recipients will be tried again."""
    unfinished = exists().where(
        Recipient.message_id == Message.id,
        Recipient.status.not_in([str(status) for status in FINAL_STATUSES]),
    )
    return [Message.created_at < before, ~unfinished]


async def _oldest(session: AsyncSession, limit: int, *where: ColumnElement[bool]) -> list[str]:
    """Ids of up to `limit` of the oldest messages matching `where`."""
    query = select(Message.id).where(*where).order_by(Message.created_at).limit(limit)
    return list((await session.execute(query)).scalars())


async def purge_batch(session: AsyncSession, *, before: datetime, limit: int) -> Purged:
    """Delete up to `limit` rows (in all tables together) of what is older than `before`; the
    caller commits, so one batch is one short transaction. A batch that wrote fewer than
    `limit` rows left nothing to do."""
    budget = _Budget(limit)
    messages = await _oldest(session, limit, *_finished_before(before))
    if messages:
        await _delete_messages(session, budget, messages)
    await budget.delete(
        session,
        _table(Event),
        select(Event.id)
        .where(Event.message_id.is_(None), Event.created_at < before)
        .order_by(Event.created_at),
    )
    await _delete_webhook_batches(session, budget, before)
    await budget.delete(
        session,
        _table(InboundMessage),
        select(InboundMessage.id)
        .where(InboundMessage.received_at < before)
        .order_by(InboundMessage.received_at),
    )
    return budget.purged


async def _delete_messages(session: AsyncSession, budget: _Budget, ids: list[str]) -> None:
    """Children first, each table within the budget; the messages once none is left."""
    recipients = select(Recipient.id).where(Recipient.message_id.in_(ids))
    events = select(Event.id).where(Event.message_id.in_(ids))
    children = [
        (WebhookOutbox, select(WebhookOutbox.id).where(WebhookOutbox.event_id.in_(events))),
        (Engagement, _engagement_keys(recipients)),
        (InboundReport, _of(InboundReport.id, InboundReport.recipient_id, recipients)),
        (Event, events),
        (Attempt, _of(Attempt.id, Attempt.message_id, ids)),
        (MessageAttachment, _of(MessageAttachment.id, MessageAttachment.message_id, ids)),
        (SmtpSubmission, _of(SmtpSubmission.message_id, SmtpSubmission.message_id, ids)),
        (Recipient, recipients),
    ]
    for model, keys in children:
        if not await budget.delete(session, _table(model), keys):
            return  # the budget is spent: the rest is the next batch's
    if await _delete_tags(session, budget, ids):
        await budget.delete(session, _table(Message), select(Message.id).where(Message.id.in_(ids)))


def _of(key: Any, parent: Any, parents: Any) -> Select[Any]:
    """The keys of the rows whose `parent` column is among `parents`."""
    return select(key).where(parent.in_(parents))


def _engagement_keys(recipients: Select[Any]) -> Select[Any]:
    """Engagements (an open and a click at most per recipient) by their recipient id: the
    one statement that may write a row more than its limit."""
    return select(Engagement.recipient_id).where(Engagement.recipient_id.in_(recipients))


async def _delete_tags(session: AsyncSession, budget: _Budget, ids: list[str]) -> bool:
    """message_tags (keyed by message and tag together) of the messages, within the budget."""
    if budget.left <= 0:
        return False
    key = tuple_(MessageTag.message_id, MessageTag.tag)
    chosen = select(MessageTag.message_id, MessageTag.tag).where(MessageTag.message_id.in_(ids))
    result = await session.execute(delete(MessageTag).where(key.in_(chosen.limit(budget.left))))
    return budget.spent("message_tags", result)


async def _delete_webhook_batches(session: AsyncSession, budget: _Budget, before: datetime) -> None:
    """Finished webhook batches, their attempts and outbox rows first."""
    finished = (
        select(WebhookBatch.id)
        .where(WebhookBatch.state != BatchState.PENDING, WebhookBatch.completed_at < before)
        .order_by(WebhookBatch.completed_at)
        .limit(budget.left if budget.left > 0 else 1)
    )
    ids = list((await session.execute(finished)).scalars())
    if not ids:
        return
    if not await budget.delete(
        session,
        _table(WebhookAttempt),
        select(WebhookAttempt.id).where(WebhookAttempt.batch_id.in_(ids)),
    ):
        return
    if not await budget.delete(
        session,
        _table(WebhookOutbox),
        select(WebhookOutbox.id).where(WebhookOutbox.batch_id.in_(ids)),
    ):
        return
    await budget.delete(
        session, _table(WebhookBatch), select(WebhookBatch.id).where(WebhookBatch.id.in_(ids))
    )


async def purge_content_batch(session: AsyncSession, *, before: datetime, limit: int) -> Purged:
    """Remove the content of up to `limit` rows' worth of finished messages older than
    `before` (COLUMBA_CONTENT_RETENTION); the caller commits."""
    budget = _Budget(limit)
    ids = await _oldest(
        session, limit, Message.content_purged_at.is_(None), *_finished_before(before)
    )
    if not ids:
        return budget.purged
    steps: list[tuple[Table, Select[Any], dict[str, Any] | None]] = [
        (
            _table(MessageAttachment),
            select(MessageAttachment.id).where(MessageAttachment.message_id.in_(ids)),
            None,
        ),
        (
            _table(Recipient),
            select(Recipient.id).where(
                Recipient.message_id.in_(ids), Recipient.personalization.is_not(None)
            ),
            {"personalization": null()},  # SQL NULL, not JSON null
        ),
    ]
    for table, keys, values in steps:
        done = (
            await budget.delete(session, table, keys)
            if values is None
            else await budget.update(session, table, keys, values)
        )
        if not done:
            return budget.purged
    await _empty_messages(session, budget, ids)
    return budget.purged


async def _empty_messages(session: AsyncSession, budget: _Budget, ids: list[str]) -> None:
    """Clear the content columns and mark the messages; a raw MIME message keeps its header
    block (its Message-ID and addresses, which the row keeps anyway), not its body."""
    chosen = ids[: max(budget.left, 0)]
    emptied: dict[str, Any] = {
        "text": None,
        "html": None,
        "alternatives": null(),
        "template_data": null(),
        "sections": {},
        "content_purged_at": clock.now(),
    }
    raw = select(Message.id, Message.raw_mime).where(
        Message.id.in_(chosen), Message.raw_mime.is_not(None)
    )
    for message_id, data in (await session.execute(raw)).all():
        head = bytes(data or b"").split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        await session.execute(update(Message).where(Message.id == message_id).values(raw_mime=head))
    result = await session.execute(update(Message).where(Message.id.in_(chosen)).values(**emptied))
    budget.spent("messages", result)


BatchFunction = Callable[..., Awaitable[Purged]]


async def run_batches(
    db: Database,
    batch: BatchFunction,
    *,
    before: datetime,
    limit: int,
    max_batches: int,
    pause: float = 0.0,
) -> Purged:
    """Call `batch` (purge_batch or purge_content_batch) a transaction at a time until one
    writes fewer than `limit` rows, or `max_batches` ran. `pause` seconds between batches let
    other writers in: SQLite has one write lock, and a writer polling for it could otherwise
    find it taken again by the next batch every time it looks."""
    total = Purged()
    for number in range(max_batches):
        if number and pause:
            await asyncio.sleep(pause)
        async with db.session() as session:
            done = await batch(session, before=before, limit=limit)
            await session.commit()
        total += done
        if done.total < limit:
            break
    return total
