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
from sqlalchemy.ext.asyncio import AsyncSession

from app.asm import service as asm
from app.asm.models import UnsubscribeGroup
from app.bounces import verp
from app.bounces.intake import Outcome, Reading
from app.bounces.models import InboundReport, ReportKind
from app.bounces.reports import FeedbackReport, RecipientStatus
from app.core import clock
from app.core.db import conflict_insert
from app.delivery.classify import BounceKind, Bucket, Classification, classify, suppresses
from app.delivery.idn import envelope_address
from app.delivery.replies import Reply
from app.domains.models import Domain
from app.events import service as events
from app.events.models import EventType
from app.messages.models import Message as StoredMessage
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
class Effect:
    """What a reading did to one recipient."""

    recipient: Recipient
    action: str
    recorded: bool
    status: RecipientStatus | None = None
    classification: Classification | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """What one reading did for one VERP address."""

    effects: tuple[Effect, ...] = ()

    @property
    def events(self) -> int:
        """Events written."""
        return sum(1 for e in self.effects if e.recorded)

    @property
    def duplicates(self) -> int:
        """Reports already recorded before."""
        return sum(1 for e in self.effects if not e.recorded)


async def apply(
    session: AsyncSession, *, leader: Recipient, reading: Reading, secret_key: bytes
) -> Applied:
    """Do what the reading says to the recipients of the leader's transaction."""
    if reading.outcome is Outcome.BOUNCE:
        return await _apply_failures(session, leader, reading)
    if reading.outcome is Outcome.COMPLAINT and reading.feedback is not None:
        target = await _complained_recipient(session, leader, reading.feedback, secret_key)
        return Applied((await _complaint(session, target, reading.feedback),))
    if reading.outcome is Outcome.UNSUBSCRIBE:
        return Applied((await _unsubscribe(session, leader, reading),))
    return Applied()  # delays, confirmations, auto-replies, feedback, unclassified: kept only


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
    """The address as Columba sent it, lower-cased, for comparing."""
    return envelope_address(address).lower()


def _targets(
    leader: Recipient,
    failures: Sequence[RecipientStatus],
    siblings: dict[str, Recipient],
) -> list[tuple[Recipient, RecipientStatus]]:
    """Whom the failures are about. VERP first: the blocks that name recipients of the
    leader's message count, each once; when none does (no address, or one the remote side
    rewrote), the VERP address's own recipient, with the first failure."""
    named: dict[str, tuple[Recipient, RecipientStatus]] = {}
    for status in failures:
        target = _named(status, siblings)
        if target is not None and target.id not in named:
            named[target.id] = (target, status)
    if named:
        return list(named.values())
    return [(leader, failures[0])] if failures else []


async def _apply_failures(session: AsyncSession, leader: Recipient, reading: Reading) -> Applied:
    """A bounce for each failed recipient the reading names (or the leader)."""
    siblings = await _siblings(session, leader)
    effects = []
    for target, status in _targets(leader, reading.failures, siblings):
        effects.append(await _bounce(session, target, status, reading.reporting_mta))
    return Applied(tuple(effects))


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
    insert = conflict_insert(session)
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
) -> Effect:
    """delivered → bounced, with its event and suppression; not recorded for a repeat."""
    reply = status.reply()
    classification = classify(reply)  # reply() never gives a 2xx code
    repeat = Effect(recipient, "bounce", False, status, classification)
    if not await _first_report(
        session,
        recipient,
        ReportKind.BOUNCE,
        status=reply.enhanced,
        diagnostic=str(reply),
        reporter=reporter,
    ):
        return repeat
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
        return repeat  # not delivered (already bounced, or never accepted): nothing to add
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
    return Effect(recipient, "bounce", True, status, classification)


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


async def _complaint(session: AsyncSession, recipient: Recipient, report: FeedbackReport) -> Effect:
    """A `complained` event and a complaint suppression, once per recipient."""
    if not await _first_report(
        session,
        recipient,
        ReportKind.COMPLAINT,
        status=None,
        diagnostic=report.feedback_type,
        reporter=report.user_agent or report.reporting_mta,
    ):
        return Effect(recipient, "complaint", False)
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
    return Effect(recipient, "complaint", True)


async def _unsubscribe(session: AsyncSession, recipient: Recipient, reading: Reading) -> Effect:
    """A mailto List-Unsubscribe request (RFC 2369 §3.2): the recipient leaves its message's
    unsubscribe group, or all mail of the account when the message has none; an event when
    that changed something (asking twice changes nothing)."""
    await _first_report(
        session,
        recipient,
        ReportKind.UNSUBSCRIBE,
        status=None,
        diagnostic=reading.subject,
        reporter=reading.sender,
    )
    group_id = await _group_of_message(session, recipient)
    changed = await asm.unsubscribe(
        session,
        account_id=recipient.account_id,
        email=recipient.email,
        group_id=group_id,
        reason="unsubscribed by mail (List-Unsubscribe mailto)",
    )
    if not changed:
        return Effect(recipient, "unsubscribe", False)
    data: dict[str, object] = {"email": recipient.email, "method": "mailto", "source": "mailto"}
    if group_id is not None:
        data["asm_group_id"] = group_id
    await events.record(
        session,
        [
            events.NewEvent(
                account_id=recipient.account_id,
                type=EventType.UNSUBSCRIBED if group_id is None else EventType.GROUP_UNSUBSCRIBED,
                message_id=recipient.message_id,
                recipient_id=recipient.id,
                data=data,
            )
        ],
    )
    return Effect(recipient, "unsubscribe", True)


async def _group_of_message(session: AsyncSession, recipient: Recipient) -> int | None:
    """The unsubscribe group of the recipient's message, if it still exists."""
    query = (
        select(UnsubscribeGroup.id)
        .join(StoredMessage, StoredMessage.asm_group_id == UnsubscribeGroup.id)
        .where(
            StoredMessage.id == recipient.message_id,
            UnsubscribeGroup.account_id == recipient.account_id,
        )
    )
    return (await session.execute(query)).scalar_one_or_none()
