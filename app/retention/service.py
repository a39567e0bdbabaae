"""Retention: what is older than COLUMBA_RETENTION is deleted, in small batches, so that the
database of a busy sender does not grow without end (SendGrid keeps its activity feed for 30
days too).

A message goes once every one of its recipients is final (delivered, bounced, expired,
dropped, cancelled): its recipients, attempts, events and their webhook outbox rows go with it
(ON DELETE CASCADE). Mail still scheduled, queued or deferred stays however old it is. Events
of no message, finished webhook batches (with their attempts) and the messages `columba
inbound` received go by age. The stats counters
and suppressions stay: they are what dashboards and future sends rely on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.bounces.models import InboundMessage
from app.events.models import Event
from app.messages.models import FINAL_STATUSES, Message, Recipient
from app.webhooks.models import BatchState, WebhookBatch

_MESSAGES: Table = Message.__table__  # type: ignore[assignment]
_EVENTS: Table = Event.__table__  # type: ignore[assignment]
_BATCHES: Table = WebhookBatch.__table__  # type: ignore[assignment]
_INBOUND: Table = InboundMessage.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Purged:
    """Rows one batch deleted (cascaded rows not counted)."""

    messages: int = 0
    events: int = 0
    webhook_batches: int = 0
    inbound_messages: int = 0

    def __add__(self, other: Purged) -> Purged:
        return Purged(
            self.messages + other.messages,
            self.events + other.events,
            self.webhook_batches + other.webhook_batches,
            self.inbound_messages + other.inbound_messages,
        )

    @property
    def total(self) -> int:
        """All rows deleted."""
        return self.messages + self.events + self.webhook_batches + self.inbound_messages

    @property
    def largest(self) -> int:
        """The most rows of one kind: a batch below the limit means that kind is done."""
        return max(self.messages, self.events, self.webhook_batches, self.inbound_messages)


async def purge_batch(session: AsyncSession, *, before: datetime, limit: int) -> Purged:
    """Delete up to `limit` rows of each kind created (or finished) before `before`; the
    caller commits, so one batch is one short transaction."""
    return Purged(
        messages=await _delete(session, _MESSAGES, _finished_messages(before, limit)),
        events=await _delete(session, _EVENTS, _unowned_events(before, limit)),
        webhook_batches=await _delete(session, _BATCHES, _finished_batches(before, limit)),
        inbound_messages=await _delete(session, _INBOUND, _old_inbound(before, limit)),
    )


def _finished_messages(before: datetime, limit: int) -> Select[Any]:
    """Ids of old messages none of whose recipients will be tried again."""
    unfinished = exists().where(
        Recipient.message_id == Message.id,
        Recipient.status.not_in([str(status) for status in FINAL_STATUSES]),
    )
    return (
        select(Message.id)
        .where(Message.created_at < before, ~unfinished)
        .order_by(Message.created_at)
        .limit(limit)
    )


def _unowned_events(before: datetime, limit: int) -> Select[Any]:
    """Ids of old events that belong to no message."""
    return (
        select(Event.id)
        .where(Event.message_id.is_(None), Event.created_at < before)
        .order_by(Event.created_at)
        .limit(limit)
    )


def _finished_batches(before: datetime, limit: int) -> Select[Any]:
    """Ids of webhook batches delivered or given up on before `before`."""
    return (
        select(WebhookBatch.id)
        .where(WebhookBatch.state != BatchState.PENDING, WebhookBatch.completed_at < before)
        .order_by(WebhookBatch.completed_at)
        .limit(limit)
    )


def _old_inbound(before: datetime, limit: int) -> Select[Any]:
    """Ids of messages `columba inbound` received before `before`."""
    return (
        select(InboundMessage.id)
        .where(InboundMessage.received_at < before)
        .order_by(InboundMessage.received_at)
        .limit(limit)
    )


async def _delete(session: AsyncSession, table: Table, ids: Select[Any]) -> int:
    """DELETE the rows of `table` whose id the query selects."""
    result = await session.execute(delete(table).where(table.c.id.in_(ids.scalar_subquery())))
    return int(getattr(result, "rowcount", 0) or 0)
