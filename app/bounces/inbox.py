"""The inbox: every message `columba inbound` accepted, with what was concluded about it.

Nothing that reaches the listener is dropped silently: each message is stored (its first
COLUMBA_INBOUND_STORE_MAX_SIZE bytes) in the same transaction as what it changed, listed by
`GET /v1/inbound`, and deleted after COLUMBA_RETENTION with the rest of the activity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.bounces.intake import Outcome, Reading
from app.bounces.models import InboundMessage
from app.bounces.service import Applied, Effect
from app.core import clock
from app.messages.models import Recipient

_MAX_DIAGNOSTIC = 2000


@dataclass(frozen=True, slots=True)
class Arrival:
    """One message as the listener received it, for one VERP address."""

    verp: str
    envelope_sender: str
    data: bytes


def store(
    session: AsyncSession,
    *,
    arrival: Arrival,
    leader: Recipient | None,
    reading: Reading,
    applied: Applied,
    max_size: int,
) -> InboundMessage:
    """Add the message and its conclusion to the session (the caller commits)."""
    row = InboundMessage(
        account_id=leader.account_id if leader else None,
        recipient_id=leader.id if leader else None,
        message_id=leader.message_id if leader else None,
        email=leader.email.lower() if leader else None,
        verp=arrival.verp[:320],
        envelope_sender=arrival.envelope_sender[:320],
        outcome=reading.outcome.value,
        detector=reading.detector,
        feedback_type=reading.feedback.feedback_type[:32] if reading.feedback else None,
        reporting_mta=(reading.reporting_mta or "")[:255] or None,
        reason=_reason(reading, leader),
        recipients=[_effect_view(effect) for effect in applied.effects] or _named(reading),
        events=applied.events,
        duplicates=applied.duplicates,
        subject=reading.subject[:500],
        sender=reading.sender,
        size=len(arrival.data),
        raw=arrival.data[:max_size],
        raw_truncated=len(arrival.data) > max_size,
        received_at=clock.now(),
    )
    _classify_row(row, reading, applied)
    session.add(row)
    return row


def _reason(reading: Reading, leader: Recipient | None) -> str | None:
    """Why nothing happened, when that needs saying."""
    if leader is None:
        return "the recipient this bounce address names no longer exists"
    return reading.reason


def _classify_row(row: InboundMessage, reading: Reading, applied: Applied) -> None:
    """The first failure's classification and reply, as the row's summary."""
    first = next((e for e in applied.effects if e.status is not None), None)
    status = first.status if first else (reading.statuses[0] if reading.statuses else None)
    if status is None:
        return
    reply = status.reply() if status.failed else None
    row.status = reply.enhanced if reply else status.status
    row.diagnostic = (str(reply) if reply else status.diagnostic or "")[:_MAX_DIAGNOSTIC] or None
    if first is not None and first.classification is not None:
        row.bounce_type = first.classification.kind.value
        row.bounce_classification = str(first.classification.bucket)
        row.classification_rule = first.classification.rule


def _effect_view(effect: Effect) -> dict[str, Any]:
    """One recipient's part in the outcome, as stored."""
    view: dict[str, Any] = {
        "email": effect.recipient.email,
        "recipient_id": effect.recipient.id,
        "action": effect.action,
        "recorded": effect.recorded,
    }
    if effect.status is not None:
        view["status"] = effect.status.status
    if effect.classification is not None:
        view["bounce_type"] = effect.classification.kind.value
        view["bounce_classification"] = str(effect.classification.bucket)
    return view


def _named(reading: Reading) -> list[dict[str, Any]]:
    """The addresses a report named, when it changed nothing (delays, confirmations)."""
    return [
        {"email": (s.original_recipient or s.final_recipient or "")[:320], "action": s.action}
        for s in reading.statuses[:50]
    ]


@dataclass(frozen=True, slots=True)
class InboxFilter:
    """What `GET /v1/inbound` asks for."""

    account_id: str
    outcome: Outcome | None = None
    bounce_type: str | None = None
    email: str | None = None
    message_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _query(where: InboxFilter) -> Select[Any]:
    """The filtered messages, newest first."""
    query = select(InboundMessage).where(InboundMessage.account_id == where.account_id)
    if where.outcome is not None:
        query = query.where(InboundMessage.outcome == where.outcome.value)
    if where.bounce_type is not None:
        query = query.where(InboundMessage.bounce_type == where.bounce_type)
    if where.email is not None:
        query = query.where(InboundMessage.email == where.email.strip().lower())
    if where.message_id is not None:
        query = query.where(InboundMessage.message_id == where.message_id)
    if where.since is not None:
        query = query.where(InboundMessage.received_at >= where.since)
    if where.until is not None:
        query = query.where(InboundMessage.received_at < where.until)
    return query.order_by(InboundMessage.id.desc())


async def list_before(
    session: AsyncSession, *, where: InboxFilter, before: str | None, limit: int
) -> list[InboundMessage]:
    """A page of messages, newest first, older than the cursor `before` (an id)."""
    query = _query(where)
    if before is not None:
        query = query.where(InboundMessage.id < before)
    return list((await session.execute(query.limit(limit))).scalars())


async def get(session: AsyncSession, *, account_id: str, id: str) -> InboundMessage | None:
    """One of the account's messages."""
    row = await session.get(InboundMessage, id)
    return row if row is not None and row.account_id == account_id else None
