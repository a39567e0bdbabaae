"""Applying inbound reports: bounce or complaint events on the original recipient.

Each (recipient, kind) is recorded once in inbound_reports, so repeated reports change
nothing (CHECKLIST 29). A bounce moves a delivered recipient to bounced (RFC 3464 reports
arrive after the remote server accepted the message); hard bounces and complaints suppress the
address; policy blocks are listed, as SendGrid lists them, without suppressing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.bounces import verp
from app.bounces.models import InboundReport, ReportKind
from app.bounces.reports import DeliveryReport, FeedbackReport, RecipientStatus
from app.core import clock
from app.delivery.classify import BounceKind, Bucket, Classification, classify, suppresses
from app.delivery.idn import envelope_address
from app.delivery.replies import Reply
from app.domains.models import Domain
from app.events import service as events
from app.events.models import EventType
from app.messages.models import Recipient
from app.messages.models import RecipientStatus as Status
from app.suppressions import service as suppressions
from app.suppressions.models import SuppressionType

log = logging.getLogger(__name__)

# RFC 3463 §3.2: the destination domain itself is unknown or accepts no mail.
_DOMAIN_GONE = {"5.1.2"}


async def is_bounce_domain(session: AsyncSession, domain: str) -> bool:
    """Whether some sending domain uses `domain` as its bounce (return-path) domain."""
    query = select(Domain.id).where(Domain.bounce_domain == domain.lower()).limit(1)
    return (await session.execute(query)).first() is not None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one report did."""

    events: int = 0
    duplicates: int = 0


async def apply(
    session: AsyncSession,
    *,
    leaders: Sequence[verp.VerpAddress],
    report: DeliveryReport | FeedbackReport,
    secret_key: bytes,
) -> Outcome:
    """Record what the report says about the recipients of the leaders' transactions."""
    total = Outcome()
    for leader_address in leaders:
        leader = await session.get(Recipient, leader_address.recipient_id)
        if leader is None:
            continue  # the message was deleted; nothing to record
        if isinstance(report, DeliveryReport):
            outcome = await _apply_dsn(session, leader, report)
        else:
            target = await _complained_recipient(session, leader, report, secret_key)
            outcome = await _complaint(session, target, report)
        total = Outcome(total.events + outcome.events, total.duplicates + outcome.duplicates)
    return total


async def _siblings(session: AsyncSession, leader: Recipient) -> dict[str, Recipient]:
    """The recipients of the leader's message by their address as sent (domains as A-labels,
    app.delivery.idn), lower-cased."""
    query = select(Recipient).where(Recipient.message_id == leader.message_id)
    return {_as_sent(r.email): r for r in (await session.execute(query)).scalars()}


def _named(status: RecipientStatus, siblings: dict[str, Recipient]) -> Recipient | None:
    """The recipient a DSN block names: Original-Recipient first (it is what we sent to when
    the remote side forwarded), then Final-Recipient; by A-label or U-label alike."""
    for address in (status.original_recipient, status.final_recipient):
        if address and _as_sent(address) in siblings:
            return siblings[_as_sent(address)]
    return None


def _as_sent(address: str) -> str:
    return envelope_address(address).lower()


async def _apply_dsn(session: AsyncSession, leader: Recipient, report: DeliveryReport) -> Outcome:
    """A bounce for each failed recipient block; the leader when a block names no recipient."""
    siblings = await _siblings(session, leader)
    recorded = duplicates = 0
    for status in report.recipients:
        if not status.failed:
            continue  # delayed, delivered, relayed, expanded: nothing changes
        target = _named(status, siblings) or leader
        if await _bounce(session, target, status, report.reporting_mta):
            recorded += 1
        else:
            duplicates += 1
    return Outcome(recorded, duplicates)


async def _first_report(
    session: AsyncSession,
    recipient: Recipient,
    kind: ReportKind,
    *,
    status: str | None,
    diagnostic: str | None,
    reporter: str | None,
) -> bool:
    """Record the report; False when one of this kind was already recorded."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(InboundReport)
        .values(
            account_id=recipient.account_id,
            recipient_id=recipient.id,
            kind=kind.value,
            status=status,
            diagnostic=(diagnostic or "")[:2000] or None,
            reporter=(reporter or "")[:255] or None,
            received_at=clock.now(),
        )
        .on_conflict_do_nothing()
        .returning(InboundReport.id)
    )
    return (await session.execute(statement)).first() is not None


async def _bounce(
    session: AsyncSession, recipient: Recipient, status: RecipientStatus, reporter: str | None
) -> bool:
    """delivered → bounced, with its event and suppression; False for a repeat."""
    reply = status.reply()
    if not await _first_report(
        session,
        recipient,
        ReportKind.BOUNCE,
        status=reply.enhanced,
        diagnostic=str(reply),
        reporter=reporter,
    ):
        return False
    moved = await session.execute(
        update(Recipient)
        .where(Recipient.id == recipient.id, Recipient.status == Status.DELIVERED)
        .values(
            status=Status.BOUNCED,
            last_code=reply.code,
            last_enhanced_code=reply.enhanced,
            last_response=reply.text,
            updated_at=clock.now(),
        )
        .returning(Recipient.id)
        .execution_options(synchronize_session=False)
    )
    if moved.first() is None:
        return False  # not delivered (already bounced, or never accepted): nothing to add
    classification = classify(reply)
    await events.record(
        session,
        [
            events.NewEvent(
                account_id=recipient.account_id,
                type=EventType.BOUNCED,
                message_id=recipient.message_id,
                recipient_id=recipient.id,
                data={
                    "email": recipient.email,
                    "code": reply.code,
                    "enhanced_code": reply.enhanced,
                    "response": str(reply),
                    "bounce_type": classification.kind.value,
                    "bounce_classification": str(classification.bucket),
                    "classification_rule": classification.rule,
                    "asynchronous": True,
                    "reporting_mta": reporter,
                    "remote_mta": status.remote_mta,
                },
            )
        ],
    )
    await _suppress_bounce(session, recipient, reply, classification)
    return True


async def _suppress_bounce(
    session: AsyncSession, recipient: Recipient, reply: Reply, classification: Classification
) -> None:
    """Hard bounces suppress (as invalid when the domain is gone); blocks are only listed;
    soft and unrecognised failures change nothing."""
    if classification.kind is BounceKind.BLOCK:
        entry = SuppressionType.BLOCK
    elif not suppresses(classification):
        return
    elif reply.enhanced in _DOMAIN_GONE and classification.bucket is Bucket.INVALID_ADDRESS:
        entry = SuppressionType.INVALID
    else:
        entry = SuppressionType.BOUNCE
    await suppressions.suppress(
        session,
        account_id=recipient.account_id,
        email=recipient.email,
        type=entry,
        reason=str(reply),
        status=reply.enhanced or "",
    )


async def _complained_recipient(
    session: AsyncSession, leader: Recipient, report: FeedbackReport, secret_key: bytes
) -> Recipient:
    """Whom the complaint is about. FBLs send reports to a fixed address or to the Return-Path,
    so the transaction is found from the reported message's VERP Return-Path (when it is ours,
    of the same account) or else the envelope; within it, the recipient the report names
    (Original-Rcpt-To, or Hotmail's X-HmXmrOriginalRecipient), else the transaction's leader."""
    base = leader
    from_headers = _return_path_recipient(report.original_headers, secret_key)
    if from_headers is not None:
        found = await session.get(Recipient, from_headers)
        if found is not None and found.account_id == leader.account_id:
            base = found
    siblings = await _siblings(session, base)
    for address in _reported_recipients(report):
        if address.lower() in siblings:
            return siblings[address.lower()]
    return base


def _reported_recipients(report: FeedbackReport) -> list[str]:
    """The addresses a report says the message was sent to."""
    found = list(report.original_rcpt_to)
    if report.original_headers is not None:
        for value in report.original_headers.get_all("X-HmXmrOriginalRecipient", []):
            found.append(str(value).strip().strip("<>"))
    return found


def _return_path_recipient(headers: Message | None, secret_key: bytes) -> str | None:
    """The recipient id in the reported message's Return-Path, when it is a valid VERP."""
    if headers is None or headers.get("Return-Path") is None:
        return None
    try:
        return verp.parse(str(headers["Return-Path"]), secret_key=secret_key).recipient_id
    except verp.InvalidVerpAddress:
        return None


async def _complaint(
    session: AsyncSession, recipient: Recipient, report: FeedbackReport
) -> Outcome:
    """A `complained` event and a complaint suppression, once per recipient."""
    if not await _first_report(
        session,
        recipient,
        ReportKind.COMPLAINT,
        status=None,
        diagnostic=report.feedback_type,
        reporter=report.user_agent or report.reporting_mta,
    ):
        return Outcome(duplicates=1)
    await events.record(
        session,
        [
            events.NewEvent(
                account_id=recipient.account_id,
                type=EventType.COMPLAINED,
                message_id=recipient.message_id,
                recipient_id=recipient.id,
                data={
                    "email": recipient.email,
                    "feedback_type": report.feedback_type,
                    "user_agent": report.user_agent,
                },
            )
        ],
    )
    await suppressions.suppress(
        session,
        account_id=recipient.account_id,
        email=recipient.email,
        type=SuppressionType.COMPLAINT,
        reason=f"{report.feedback_type} report from {report.user_agent or 'a feedback loop'}",
    )
    return Outcome(events=1)
