"""Accepting a send: validate against the account, then write everything in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.accounts.service import Principal
from app.common.fields import EmailAddress
from app.config import Settings
from app.domains.models import Domain
from app.domains.service import sending_domain_for
from app.errors import Forbidden, NotFound, PayloadTooLarge
from app.events import service as events
from app.events.models import EventType
from app.ids import new_id
from app.messages.models import (
    Attempt,
    Message,
    MessageAttachment,
    Recipient,
    RecipientKind,
    RecipientStatus,
)
from app.messages.schemas import (
    AttemptView,
    EventView,
    MessageView,
    RecipientAccepted,
    RecipientView,
    SendAccepted,
    SendRequest,
)
from app.suppressions import service as suppressions
from app.suppressions.models import SuppressionType


@dataclass(frozen=True, slots=True)
class AcceptPolicy:
    """The settings that decide whether a send is accepted."""

    hostname: str
    max_message_size: int
    require_verified_domains: bool


def policy_from(settings: Settings) -> AcceptPolicy:
    """The accept policy the settings describe."""
    return AcceptPolicy(
        hostname=settings.hostname,
        max_message_size=settings.max_message_size,
        require_verified_domains=settings.require_verified_domains,
    )


def _address_json(address: EmailAddress) -> dict[str, Any]:
    return {"email": address.email, "name": address.name}


def recipient_domain(email: str) -> str:
    """The ASCII (IDNA) domain of an address, the form MX lookups use."""
    domain = email.rpartition("@")[2].lower()
    return domain if domain.isascii() else domain.encode("idna").decode("ascii")


async def authorise_sender(
    session: AsyncSession, *, principal: Principal, email: str, policy: AcceptPolicy
) -> Domain:
    """The sending domain that covers `email`, or 403 saying how to add or verify it."""
    email_domain = email.rpartition("@")[2]
    domain = await sending_domain_for(
        session, account_id=principal.account.id, email_domain=email_domain
    )
    if domain is None:
        raise Forbidden(
            f"The from domain {email_domain} is not a sending domain of this account. Add it "
            f"with `columba domains add {email_domain} --account {principal.account.name}` "
            "and publish the DNS records it prints.",
            "from.email",
        )
    if policy.require_verified_domains and domain.verified_at is None:
        raise Forbidden(
            f"The sending domain {domain.name} is not verified yet. Publish its DNS records "
            f"(`columba domains list`), then run `columba domains verify {domain.name}`.",
            "from.email",
        )
    return domain


def content_size(request: SendRequest, attachments: list[bytes]) -> int:
    """Bytes the message will carry, before transfer encoding."""
    bodies = len((request.text or "").encode()) + len((request.html or "").encode())
    headers = sum(len(name) + len(value) for name, value in request.headers.items())
    return bodies + headers + len(request.subject.encode()) + sum(map(len, attachments))


def _recipient_rows(
    request: SendRequest, *, message_id: str, account_id: str
) -> list[dict[str, Any]]:
    now = clock.now()
    kinds = (
        (RecipientKind.TO, request.to),
        (RecipientKind.CC, request.cc),
        (RecipientKind.BCC, request.bcc),
    )
    return [
        {
            "id": new_id(),
            "message_id": message_id,
            "account_id": account_id,
            "email": address.email,
            "domain": recipient_domain(address.email),
            "kind": kind.value,
            "status": RecipientStatus.QUEUED.value,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for kind, addresses in kinds
        for address in addresses
    ]


async def accept(
    session: AsyncSession, *, principal: Principal, request: SendRequest, policy: AcceptPolicy
) -> SendAccepted:
    """Write the message, its recipients and a `processed` event each; the caller commits."""
    domain = await authorise_sender(
        session, principal=principal, email=request.from_.email, policy=policy
    )
    files = [attachment.decoded() for attachment in request.attachments]
    size = content_size(request, files)
    if size > policy.max_message_size:
        raise PayloadTooLarge(
            f"the message is {size} bytes; the limit is {policy.max_message_size} bytes"
        )
    message_id = new_id()
    session.add(_message_row(request, principal, domain, message_id, size, policy.hostname))
    session.add_all(_attachment_rows(request, files, message_id))
    await session.flush()
    rows = _recipient_rows(request, message_id=message_id, account_id=principal.account.id)
    drops = await _apply_suppressions(session, principal.account.id, rows)
    await session.execute(insert(Recipient), rows)
    await events.record(session, [drops.get(row["id"]) or _processed(row) for row in rows])
    return SendAccepted(
        id=message_id,
        recipients=[
            RecipientAccepted(id=r["id"], email=r["email"], status=r["status"]) for r in rows
        ],
    )


def _message_row(
    request: SendRequest,
    principal: Principal,
    domain: Domain,
    message_id: str,
    size: int,
    hostname: str,
) -> Message:
    return Message(
        id=message_id,
        account_id=principal.account.id,
        api_key_id=principal.api_key.id,
        domain_id=domain.id,
        from_email=request.from_.email,
        from_name=request.from_.name,
        to_header=[_address_json(a) for a in request.to],
        cc_header=[_address_json(a) for a in request.cc],
        reply_to=[_address_json(a) for a in request.reply_to],
        subject=request.subject,
        text=request.text,
        html=request.html,
        headers=[[name, value] for name, value in request.headers.items()],
        categories=request.categories,
        custom_args=request.metadata,
        # RFC 5322 §3.6.4: globally unique; our id is unique and the host name scopes it.
        message_id_header=f"<{message_id.lower()}@{hostname}>",
        size=size,
        created_at=clock.now(),
    )


def _attachment_rows(
    request: SendRequest, files: list[bytes], message_id: str
) -> list[MessageAttachment]:
    return [
        MessageAttachment(
            message_id=message_id,
            position=position,
            filename=attachment.filename,
            content_type=attachment.content_type,
            content_id=attachment.content_id,
            disposition=attachment.disposition
            or ("inline" if attachment.content_id else "attachment"),
            data=data,
        )
        for position, (attachment, data) in enumerate(zip(request.attachments, files, strict=True))
    ]


# SendGrid's drop reasons, so SendGrid-format consumers see familiar texts.
DROP_REASONS = {
    SuppressionType.BOUNCE: "Bounced Address",
    SuppressionType.COMPLAINT: "Spam Reporting Address",
    SuppressionType.UNSUBSCRIBE: "Unsubscribed Address",
    SuppressionType.MANUAL: "Suppressed Address",
    SuppressionType.INVALID: "Invalid",
}


async def _apply_suppressions(
    session: AsyncSession, account_id: str, rows: list[dict[str, Any]]
) -> dict[str, events.NewEvent]:
    """Mark suppressed recipients `dropped` (never attempted); their events by recipient id."""
    found = await suppressions.suppressed(
        session, account_id=account_id, emails=[row["email"] for row in rows]
    )
    drops: dict[str, events.NewEvent] = {}
    for row in rows:
        entry = found.get(suppressions.suppression_key(row["email"]))
        if entry is None:
            continue
        row["status"] = RecipientStatus.DROPPED.value
        row["next_attempt_at"] = None
        drops[row["id"]] = events.NewEvent(
            account_id=account_id,
            type=EventType.DROPPED,
            message_id=row["message_id"],
            recipient_id=row["id"],
            data={
                "email": row["email"],
                "reason": DROP_REASONS[SuppressionType(entry.type)],
                "suppression": entry.type,
            },
        )
    return drops


def _processed(row: dict[str, Any]) -> events.NewEvent:
    return events.NewEvent(
        account_id=row["account_id"],
        type=EventType.PROCESSED,
        message_id=row["message_id"],
        recipient_id=row["id"],
        data={"email": row["email"]},
    )


async def get_message_view(
    session: AsyncSession, *, account_id: str, message_id: str
) -> MessageView:
    """The message with every recipient's status, attempts and events; 404 across accounts."""
    message = await session.get(Message, message_id)
    if message is None or message.account_id != account_id:
        raise NotFound("message not found", "id")
    recipients = (
        await session.execute(
            select(Recipient).where(Recipient.message_id == message_id).order_by(Recipient.id)
        )
    ).scalars()
    attempts = (
        await session.execute(
            select(Attempt).where(Attempt.message_id == message_id).order_by(Attempt.id)
        )
    ).scalars()
    by_recipient: dict[str, list[AttemptView]] = {}
    for attempt in attempts:
        by_recipient.setdefault(attempt.recipient_id, []).append(
            AttemptView.model_validate(attempt)
        )
    event_views: dict[str | None, list[EventView]] = {}
    for event in await events.for_message(session, message_id=message_id):
        event_views.setdefault(event.recipient_id, []).append(EventView.model_validate(event))
    return MessageView.model_validate(
        {
            "id": message.id,
            "message_id": message.message_id_header,
            "from": {"email": message.from_email, "name": message.from_name},
            "subject": message.subject,
            "categories": message.categories,
            "metadata": message.custom_args,
            "created_at": message.created_at,
            "size": message.size,
            "recipients": [
                _recipient_view(r, by_recipient.get(r.id, []), event_views.get(r.id, []))
                for r in recipients
            ],
        }
    )


def _recipient_view(
    recipient: Recipient, attempts: list[AttemptView], event_list: list[EventView]
) -> RecipientView:
    return RecipientView(
        id=recipient.id,
        email=recipient.email,
        kind=recipient.kind,
        status=recipient.status,
        attempt_count=recipient.attempt_count,
        next_attempt_at=recipient.next_attempt_at,
        last_code=recipient.last_code,
        last_enhanced_code=recipient.last_enhanced_code,
        last_response=recipient.last_response,
        attempts=attempts,
        events=event_list,
    )
