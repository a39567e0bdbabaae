"""Batches: create, look up, pause, resume and cancel.

Pause and cancel are one conditional UPDATE each, touching only recipients no worker has
claimed yet; a claim and a pause of the same recipient are serialised by its row lock, so
each recipient is either sent or stopped, never both. Cancelled recipients get their
`cancelled` events in the same transaction.

Each change writes the batch's own status first, conditionally: that write locks the batch row
(PostgreSQL) or the database (SQLite) before any recipient, so changes of one batch run one
after the other, and a pause or resume never overwrites a cancel committed since the batch
was read. Sends into a batch read its status under a share lock in their write transaction
(app.messages.service), so none slips in beside a cancel.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.batches.models import Batch, BatchStatus
from app.core import clock
from app.core.errors import BadRequest, NotFound
from app.events import service as events
from app.events.models import EventType
from app.messages.models import Message, Recipient, RecipientStatus

PAUSED_TOO_LONG = "paused for longer than PAUSED_EXPIRY after it was due"


@dataclass(frozen=True, slots=True)
class BatchChange:
    """What a pause, resume or cancel did."""

    batch: Batch
    recipients: int  # recipients whose status changed


async def create_batch(session: AsyncSession, *, account_id: str) -> Batch:
    """A new, active batch id."""
    batch = Batch(account_id=account_id, status=BatchStatus.ACTIVE)
    session.add(batch)
    await session.flush()
    return batch


async def get_batch(session: AsyncSession, *, account_id: str, batch_id: str) -> Batch:
    """The account's batch; 404 for anyone else's or an unknown id."""
    batch = await session.get(Batch, batch_id)
    if batch is None or batch.account_id != account_id:
        raise NotFound("batch id not found", "batch_id")
    return batch


async def scheduled_batches(session: AsyncSession, *, account_id: str) -> list[Batch]:
    """Batches that are paused or cancelled (SendGrid's "scheduled sends")."""
    query = (
        select(Batch)
        .where(Batch.account_id == account_id, Batch.status != BatchStatus.ACTIVE)
        .order_by(Batch.created_at)
    )
    return list((await session.execute(query)).scalars())


async def recipient_counts(session: AsyncSession, *, batch_id: str) -> dict[str, int]:
    """How many of the batch's recipients are in each status."""
    query = (
        select(Recipient.status, func.count())
        .join(Message, Message.id == Recipient.message_id)
        .where(Message.batch_id == batch_id)
        .group_by(Recipient.status)
    )
    return {status: count for status, count in (await session.execute(query)).all()}


def _of_batch(batch: Batch) -> object:
    """Recipients of the batch's messages (the messages' index on batch_id finds them)."""
    messages = select(Message.id).where(Message.batch_id == batch.id)
    return Recipient.message_id.in_(messages.scalar_subquery())


async def pause(session: AsyncSession, *, batch: Batch) -> BatchChange:
    """Hold every unclaimed recipient; their due times are kept for the resume."""
    now = clock.now()
    await _change_status(session, batch, BatchStatus.PAUSED, now=now)
    result = await session.execute(
        update(Recipient)
        .where(
            _of_batch(batch),  # type: ignore[arg-type]
            Recipient.status.in_((RecipientStatus.SCHEDULED, RecipientStatus.QUEUED)),
        )
        .values(status=RecipientStatus.PAUSED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return BatchChange(batch, int(getattr(result, "rowcount", 0) or 0))


async def resume(session: AsyncSession, *, batch: Batch) -> BatchChange:
    """Release paused recipients: scheduled if their time is still ahead, queued if due."""
    now = clock.now()
    await _change_status(session, batch, BatchStatus.ACTIVE, now=now)
    changed = 0
    for status, due in (
        (RecipientStatus.SCHEDULED, Recipient.next_attempt_at > now),
        (RecipientStatus.QUEUED, Recipient.next_attempt_at <= now),
    ):
        result = await session.execute(
            update(Recipient)
            .where(
                _of_batch(batch),  # type: ignore[arg-type]
                Recipient.status == RecipientStatus.PAUSED,
                due,
            )
            .values(status=status, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        changed += int(getattr(result, "rowcount", 0) or 0)
    return BatchChange(batch, changed)


async def cancel(session: AsyncSession, *, batch: Batch) -> BatchChange:
    """Cancel every recipient not claimed yet (and those waiting for a retry), with events."""
    now = clock.now()
    await _change_status(session, batch, BatchStatus.CANCELLED, now=now)
    rows = (
        await session.execute(
            update(Recipient)
            .where(
                _of_batch(batch),  # type: ignore[arg-type]
                Recipient.status.in_(
                    (
                        RecipientStatus.SCHEDULED,
                        RecipientStatus.QUEUED,
                        RecipientStatus.PAUSED,
                        RecipientStatus.DEFERRED,
                    )
                ),
            )
            .values(status=RecipientStatus.CANCELLED, next_attempt_at=None, updated_at=now)
            .returning(Recipient.id, Recipient.message_id, Recipient.email)
            .execution_options(synchronize_session=False)
        )
    ).all()
    await events.record(
        session,
        [
            events.NewEvent(
                account_id=batch.account_id,
                type=EventType.CANCELLED,
                message_id=message_id,
                recipient_id=recipient_id,
                data={"email": email, "batch_id": batch.id, "reason": "batch cancelled"},
            )
            for recipient_id, message_id, email in rows
        ],
    )
    return BatchChange(batch, len(rows))


async def expire_paused(session: AsyncSession, *, due_before: datetime, limit: int) -> int:
    """Expire up to `limit` recipients still paused although they were due before
    `due_before`, with an event each: SendGrid discards mail left paused for more than 72
    hours as expired (Scheduled Sends API). The caller commits."""
    stale = (
        select(Recipient.id)
        .where(Recipient.status == RecipientStatus.PAUSED, Recipient.next_attempt_at < due_before)
        .limit(limit)
    )
    rows = (
        await session.execute(
            update(Recipient)
            # Re-checked under the row lock, so a resume that got there first wins.
            .where(Recipient.id.in_(stale.scalar_subquery()))
            .where(Recipient.status == RecipientStatus.PAUSED)
            .values(status=RecipientStatus.EXPIRED, next_attempt_at=None, updated_at=clock.now())
            .returning(Recipient.id, Recipient.message_id, Recipient.account_id, Recipient.email)
            .execution_options(synchronize_session=False)
        )
    ).all()
    await events.record(
        session,
        [
            events.NewEvent(
                account_id=account_id,
                type=EventType.EXPIRED,
                message_id=message_id,
                recipient_id=recipient_id,
                data={"email": email, "reason": PAUSED_TOO_LONG},
            )
            for recipient_id, message_id, account_id, email in rows
        ],
    )
    return len(rows)


async def _change_status(
    session: AsyncSession, batch: Batch, status: BatchStatus, *, now: datetime
) -> None:
    """Write the batch's new status before its recipients' (see the module's docstring); a
    cancelled batch stays cancelled: 400 for a pause or resume, whoever cancelled it."""
    statement = update(Batch).where(Batch.id == batch.id).values(status=status, updated_at=now)
    if status != BatchStatus.CANCELLED:
        statement = statement.where(Batch.status != BatchStatus.CANCELLED)
    changed = await session.execute(
        statement.returning(Batch.id).execution_options(synchronize_session=False)
    )
    if changed.first() is None:
        raise BadRequest(
            "the batch is cancelled: its recipients were cancelled and cannot be paused or resumed",
            "batch_id",
        )
    # The object the caller holds says what was written, without writing it again.
    set_committed_value(batch, "status", status)
    set_committed_value(batch, "updated_at", now)
