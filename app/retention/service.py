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
recipients or events a message had. A batch first reads the keys of every row it will write
(plain SELECTs, which on SQLite run before the transaction takes the database's one write
lock), then writes them by key: the lock is held for the writes and the commit only.
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


class _Plan:
    """The rows a batch will write, read first by key within its budget, written at once."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.steps: list[tuple[Table, list[Any], dict[str, Any] | None]] = []

    async def take(
        self,
        session: AsyncSession,
        table: Table,
        where: Select[Any],
        values: dict[str, Any] | None = None,
    ) -> bool:
        """Plan to delete (or, with `values`, update) up to `left` rows of `table` that
        `where` selects (its columns: the table's primary key); True when that was all of
        them, so the budget is not spent."""
        if self.left <= 0:
            return False
        keys = [tuple(row) for row in (await session.execute(where.limit(self.left))).all()]
        if keys:
            self.steps.append((table, keys, values))
            self.left -= len(keys)
        return self.left > 0

    async def write(self, session: AsyncSession) -> Purged:
        """Run the planned DELETEs and UPDATEs, in plan order (children before parents)."""
        rows: Counter[str] = Counter()
        for table, keys, values in self.steps:
            key = table.primary_key.columns.values()
            for chunk in _chunks(keys):
                matching: ColumnElement[bool] = key[0].in_({k[0] for k in chunk})
                if len(key) > 1:  # the first column's index finds them; the pair picks them
                    matching = matching & tuple_(*key).in_(chunk)
                statement = (
                    delete(table).where(matching)
                    if values is None
                    else update(table).where(matching).values(**values)
                )
                result = await session.execute(statement)
                rows[table.name] += int(getattr(result, "rowcount", 0) or 0)
        return Purged({name: count for name, count in rows.items() if count})


def _chunks(keys: list[Any], size: int = 500) -> list[list[Any]]:
    """Keys in lists short enough for any database's limit on bound parameters."""
    return [keys[start : start + size] for start in range(0, len(keys), size)]


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
    plan = _Plan(limit)
    messages = await _oldest(session, limit, *_finished_before(before))
    if messages:
        await _plan_messages(session, plan, messages)
    await plan.take(
        session,
        _table(Event),
        select(Event.id)
        .where(Event.message_id.is_(None), Event.created_at < before)
        .order_by(Event.created_at),
    )
    await _plan_webhook_batches(session, plan, before)
    await plan.take(
        session,
        _table(InboundMessage),
        select(InboundMessage.id)
        .where(InboundMessage.received_at < before)
        .order_by(InboundMessage.received_at),
    )
    return await plan.write(session)


async def _plan_messages(session: AsyncSession, plan: _Plan, ids: list[str]) -> None:
    """Children first, each table within the budget; the messages once none is left."""
    recipients = select(Recipient.id).where(Recipient.message_id.in_(ids))
    events = select(Event.id).where(Event.message_id.in_(ids))
    children = [
        (WebhookOutbox, select(WebhookOutbox.id).where(WebhookOutbox.event_id.in_(events))),
        (Engagement, _of(Engagement, Engagement.recipient_id, recipients)),
        (InboundReport, _of(InboundReport, InboundReport.recipient_id, recipients)),
        (Event, events),
        (Attempt, _of(Attempt, Attempt.message_id, ids)),
        (MessageAttachment, _of(MessageAttachment, MessageAttachment.message_id, ids)),
        (SmtpSubmission, _of(SmtpSubmission, SmtpSubmission.message_id, ids)),
        (MessageTag, _of(MessageTag, MessageTag.message_id, ids)),
        (Recipient, recipients),
        (Message, select(Message.id).where(Message.id.in_(ids))),
    ]
    for model, keys in children:
        if not await plan.take(session, _table(model), keys):
            return  # the budget is spent: the rest is the next batch's


def _of(model: Any, parent: Any, parents: Any) -> Select[Any]:
    """The primary keys of the rows of `model` whose `parent` column is among `parents`."""
    return select(*_table(model).primary_key.columns).where(parent.in_(parents))


async def _plan_webhook_batches(session: AsyncSession, plan: _Plan, before: datetime) -> None:
    """Finished webhook batches, their attempts and outbox rows first."""
    if plan.left <= 0:
        return
    finished = (
        select(WebhookBatch.id)
        .where(WebhookBatch.state != BatchState.PENDING, WebhookBatch.completed_at < before)
        .order_by(WebhookBatch.completed_at)
        .limit(plan.left)
    )
    ids = list((await session.execute(finished)).scalars())
    if not ids:
        return
    for model, keys in (
        (WebhookAttempt, _of(WebhookAttempt, WebhookAttempt.batch_id, ids)),
        (WebhookOutbox, _of(WebhookOutbox, WebhookOutbox.batch_id, ids)),
        (WebhookBatch, _of(WebhookBatch, WebhookBatch.id, ids)),
    ):
        if not await plan.take(session, _table(model), keys):
            return


async def purge_content_batch(session: AsyncSession, *, before: datetime, limit: int) -> Purged:
    """Remove the content of finished messages older than `before` (COLUMBA_CONTENT_RETENTION),
    writing up to `limit` rows; the caller commits."""
    plan = _Plan(limit)
    ids = await _oldest(
        session, limit, Message.content_purged_at.is_(None), *_finished_before(before)
    )
    steps = [
        (MessageAttachment, _of(MessageAttachment, MessageAttachment.message_id, ids), None),
        (
            Recipient,
            _of(Recipient, Recipient.message_id, ids).where(Recipient.personalization.is_not(None)),
            {"personalization": null()},  # SQL NULL, not JSON null
        ),
    ]
    for model, keys, values in steps:
        if not await plan.take(session, _table(model), keys, values):
            return await plan.write(session)
    if plan.left > 0 and ids:
        await _plan_emptying(session, plan, ids[: plan.left])
    return await plan.write(session)


async def _plan_emptying(session: AsyncSession, plan: _Plan, ids: list[str]) -> None:
    """Clear the content columns and mark the messages; a raw MIME message keeps its header
    block (its Message-ID and addresses, which the row keeps anyway), not its body."""
    emptied: dict[str, Any] = {
        "text": None,
        "html": None,
        "alternatives": null(),
        "template_data": null(),
        "sections": {},
        "content_purged_at": clock.now(),
    }
    raw = select(Message.id, Message.raw_mime).where(
        Message.id.in_(ids), Message.raw_mime.is_not(None)
    )
    heads: dict[str, bytes] = {}
    for message_id, data in (await session.execute(raw)).all():
        heads[message_id] = bytes(data or b"").split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    plain = [message_id for message_id in ids if message_id not in heads]
    messages = _table(Message)
    if plain:
        await plan.take(session, messages, select(Message.id).where(Message.id.in_(plain)), emptied)
    for message_id, head in heads.items():  # one UPDATE each: their heads differ
        keys = select(Message.id).where(Message.id == message_id)
        await plan.take(session, messages, keys, emptied | {"raw_mime": head})


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
