"""Accepting a send: validate against the account, then write everything in one transaction."""

from __future__ import annotations

import email.policy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from typing import Any

from sqlalchemy import Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.service import Principal
from app.asm import service as asm
from app.batches import service as batches
from app.batches.models import Batch, BatchStatus
from app.common.fields import EmailAddress
from app.core import clock, jsontext
from app.core.config import Settings
from app.core.durations import format_duration
from app.core.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge
from app.core.ids import new_id
from app.delivery.idn import ascii_domain
from app.domains.models import Domain
from app.domains.service import sending_domain_for
from app.events import service as events
from app.events.models import EventType
from app.messages import search
from app.messages.models import (
    Attempt,
    Message,
    MessageAttachment,
    MessageTag,
    Recipient,
    RecipientStatus,
)
from app.messages.personalize import copy_message_id
from app.messages.precedence import template_parts
from app.messages.schemas import (
    AttemptView,
    EventView,
    MessageView,
    RecipientAccepted,
    RecipientView,
    SendAccepted,
)
from app.messages.submission import Personalization, Submission
from app.observability.accepting import note_accepted
from app.observability.logs import REQUEST_ID
from app.suppressions import service as suppressions
from app.suppressions import tombstones
from app.suppressions.models import Suppression, SuppressionType
from app.templates import service as templates
from app.tracking import defaults as tracking

_MESSAGES: Table = Message.__table__  # type: ignore[assignment]
_ATTACHMENTS: Table = MessageAttachment.__table__  # type: ignore[assignment]
_RECIPIENTS: Table = Recipient.__table__  # type: ignore[assignment]
_TAGS: Table = MessageTag.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class AcceptPolicy:
    """The settings that decide whether a send is accepted."""

    hostname: str
    max_message_size: int
    require_verified_domains: bool
    max_schedule_ahead: timedelta = timedelta(days=7)
    # Hashes erased addresses on the suppression lists (app.suppressions.tombstones);
    # empty: no tombstone is looked for.
    tombstone_key: bytes = b""


def policy_from(settings: Settings) -> AcceptPolicy:
    """The accept policy the settings describe."""
    return AcceptPolicy(
        hostname=settings.hostname,
        max_message_size=settings.max_message_size,
        require_verified_domains=settings.require_verified_domains,
        max_schedule_ahead=settings.max_schedule_ahead,
        tombstone_key=(
            tombstones.tombstone_key(settings.secret_key_bytes()) if settings.secret_key else b""
        ),
    )


@dataclass(frozen=True, slots=True)
class Accepted:
    """An accepted message: its id and a row per recipient."""

    message_id: str
    recipients: tuple[RecipientAccepted, ...]

    def view(self) -> SendAccepted:
        """The 202 body of POST /v1/send."""
        return SendAccepted(id=self.message_id, recipients=list(self.recipients))


def _address_json(address: EmailAddress) -> dict[str, Any]:
    return {"email": address.email, "name": address.name}


def recipient_domain(email: str) -> str:
    """The ASCII (IDNA) domain of an address, the form MX lookups use."""
    return ascii_domain(email.rpartition("@")[2])


def sg_message_id(message_id: str, recipient_id: str) -> str:
    """SendGrid's per-recipient id: `<X-Message-Id>.<recipient id>`."""
    return f"{message_id}.{recipient_id}"


async def authorise_sender(
    session: AsyncSession,
    *,
    principal: Principal,
    email: str,
    policy: AcceptPolicy,
    field: str = "from.email",
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
            field,
        )
    if policy.require_verified_domains and domain.verified_at is None:
        raise Forbidden(
            f"The sending domain {domain.name} is not verified yet. Publish its DNS records "
            f"(`columba domains list`), then run `columba domains verify {domain.name}`.",
            field,
        )
    return domain


@dataclass(frozen=True, slots=True)
class _Content:
    """What the message row stores as its content, after any template is resolved."""

    subject: str
    text: str | None
    html: str | None
    template_id: str | None
    engine: str | None


async def _resolve_content(
    session: AsyncSession, *, principal: Principal, submission: Submission
) -> tuple[_Content, Submission]:
    """The stored template's active version (and the submission as its copies use it: see
    app.messages.precedence), or the inline content (checked when templated)."""
    if submission.template_id is None:
        if submission.template_engine is not None:
            templates.check_version(
                submission.template_engine,
                subject=submission.subject or "",
                html=submission.html,
                text=submission.text,
            )
        _require_subject(submission, submission.subject)
        content = _Content(
            submission.subject or "",
            submission.text,
            submission.html,
            None,
            submission.template_engine,
        )
        return content, submission
    field = submission.field_name("template_id")
    try:
        template, version = await templates.active_version(
            session, account_id=principal.account.id, template_id=submission.template_id
        )
    except NotFound as exc:
        raise BadRequest(
            f"The template_id {submission.template_id} is not a template of this account.", field
        ) from exc
    if version is None:
        raise BadRequest(f"The template {template.id} has no active version.", field)
    parts, submission = template_parts(template.engine, version, submission)
    if parts.engine is None:  # legacy: "a template with a subject defined" needs no other
        _require_subject(submission, version.subject)
    content = _Content(parts.subject, parts.text, parts.html, template.id, parts.engine)
    return content, submission


def _require_subject(submission: Submission, subject: str | None) -> None:
    if subject or all(p.subject for p in submission.personalizations):
        return
    raise BadRequest(
        "The subject is required. You can get around this requirement if you use a template "
        "with a subject defined or if every personalization has a subject defined.",
        "subject",
    )


async def _check_personal_senders(
    session: AsyncSession,
    *,
    principal: Principal,
    submission: Submission,
    domain: Domain,
    policy: AcceptPolicy,
) -> None:
    """A personalization's own From must be signed by the same domain (DKIM alignment)."""
    for personal in submission.personalizations:
        if personal.sender is None:
            continue
        field = f"{personal.field_path}.from.email"
        other = await authorise_sender(
            session, principal=principal, email=personal.sender.email, policy=policy, field=field
        )
        if other.id != domain.id:
            raise BadRequest(
                f"Every from address of one send must belong to the sending domain "
                f"{domain.name}, so that one DKIM signature covers every copy.",
                field,
            )


async def _batch_status(
    session: AsyncSession, *, principal: Principal, submission: Submission
) -> str | None:
    """The batch's status, or 400 for an unknown batch id."""
    if submission.batch_id is None:
        return None
    try:
        batch = await batches.get_batch(
            session, account_id=principal.account.id, batch_id=submission.batch_id
        )
    except NotFound as exc:
        raise BadRequest("invalid batch id", submission.field_name("batch_id")) from exc
    return batch.status


async def check_groups(session: AsyncSession, *, account_id: str, submission: Submission) -> None:
    """The send's unsubscribe group and the groups to display must be groups of the account:
    one query, never cached, so a group created a moment ago is known."""
    group_id = submission.asm_group_id
    if group_id is None and not submission.groups_to_display:
        return
    wanted = {*submission.groups_to_display, *([] if group_id is None else [group_id])}
    known = await asm.existing_groups(session, account_id=account_id, ids=wanted)
    if group_id is not None and group_id not in known:
        raise BadRequest(
            f"The unsubscribe group {group_id} is not a group of this account (/v3/asm/groups).",
            submission.field_name("asm.group_id"),
        )
    for index, shown in enumerate(submission.groups_to_display):
        if shown not in known:
            raise BadRequest(
                f"The unsubscribe group {shown} is not a group of this account (/v3/asm/groups).",
                f"{submission.field_name('asm.groups_to_display')}.{index}",
            )


def _check_send_times(submission: Submission, policy: AcceptPolicy) -> None:
    """send_at may lie at most `max_schedule_ahead` ahead (a time past means now)."""
    horizon = clock.now() + policy.max_schedule_ahead
    times = [(submission.field_name("send_at"), submission.send_at)] + [
        (f"{p.field_path}.send_at", p.send_at) for p in submission.personalizations
    ]
    for field, when in times:
        if when is not None and when > horizon:
            raise BadRequest(
                f"send_at may be at most {format_duration(policy.max_schedule_ahead)} ahead "
                f"(until {horizon.isoformat()}).",
                field,
            )


def content_size(content: _Content, submission: Submission) -> int:
    """Bytes the message will carry, before transfer encoding."""
    bodies = len((content.text or "").encode()) + len((content.html or "").encode())
    bodies += sum(len(value.encode()) for _, value in submission.alternatives)
    headers = sum(len(name) + len(value) for name, value in submission.headers.items())
    files = sum(len(file.data) for file in submission.attachments)
    return bodies + headers + len(content.subject.encode()) + files


@dataclass(frozen=True, slots=True)
class Checked:
    """A send that passed every check: the message row to write, and what it came from."""

    message: Message
    submission: Submission
    batch_status: str | None = None
    tombstone_key: bytes = b""  # AcceptPolicy.tombstone_key


SANDBOXED = Accepted(message_id="", recipients=())  # sandbox mode: valid, nothing written


async def check(
    session: AsyncSession,
    *,
    principal: Principal,
    submission: Submission,
    policy: AcceptPolicy,
) -> Checked | None:
    """Every check of a send, in the caller's session, writing nothing; None for a sandbox
    send (valid, not to be written)."""
    domain = await authorise_sender(
        session,
        principal=principal,
        email=submission.sender.email,
        policy=policy,
        field=submission.field_name("from.email"),
    )
    await _check_personal_senders(
        session, principal=principal, submission=submission, domain=domain, policy=policy
    )
    content, submission = await _resolve_content(
        session, principal=principal, submission=submission
    )
    batch_status = await _batch_status(session, principal=principal, submission=submission)
    await check_groups(session, account_id=principal.account.id, submission=submission)
    _check_send_times(submission, policy)
    size = content_size(content, submission)
    check_size(size, policy=policy)
    if submission.sandbox:
        return None
    message = _message_row(submission, content, principal, domain, size, policy.hostname)
    message.settings = await tracking.with_account_defaults(
        session, principal.account.id, message.settings
    )
    return Checked(
        message=message,
        submission=submission,
        batch_status=batch_status,
        tombstone_key=policy.tombstone_key,
    )


async def accept(
    session: AsyncSession,
    *,
    principal: Principal,
    submission: Submission,
    policy: AcceptPolicy,
) -> Accepted:
    """Write the message, its recipients and an event each; the caller commits.

    Everything is checked before the first write, so a refused send writes nothing."""
    checked = await check(session, principal=principal, submission=submission, policy=policy)
    if checked is None:
        return SANDBOXED
    [accepted] = await write_messages(session, [checked])
    return accepted


def check_size(size: int, *, policy: AcceptPolicy) -> None:
    """413 when a message is over the size limit."""
    if size > policy.max_message_size:
        raise PayloadTooLarge(
            f"the message is {size} bytes; the limit is {policy.max_message_size} bytes"
        )


async def write_message(
    session: AsyncSession,
    *,
    message: Message,
    submission: Submission,
    batch_status: str | None = None,
) -> Accepted:
    """Write one checked message (see write_messages); the caller commits."""
    [accepted] = await write_messages(
        session, [Checked(message=message, submission=submission, batch_status=batch_status)]
    )
    return accepted


async def write_messages(session: AsyncSession, sends: Sequence[Checked]) -> list[Accepted]:
    """Write checked messages: their rows, attachments, recipients (scheduled, dropped when
    suppressed, …) and an event each, with one statement per table however many messages
    there are. Every accept path ends here (POST /v1/send, POST /v3/mail/send, SMTP
    submission, group-committed or not); the caller commits."""
    if not sends:
        return []
    # Core INSERTs (no unit of work): the accept path is what the send benchmark measures.
    await session.execute(insert(_MESSAGES), [_columns(send.message) for send in sends])
    sends = await _with_current_batch_status(session, sends)
    files = [row for send in sends for row in _attachment_rows(send.submission, send.message.id)]
    if files:
        await session.execute(insert(_ATTACHMENTS), files)
    rows = [_recipient_rows(send.submission, message=send.message) for send in sends]
    found = await _suppressions_of(session, sends, rows)
    opted_out = await _group_opt_outs(session, sends, rows)
    new_events = [
        event
        for send, send_rows in zip(sends, rows, strict=True)
        for event in _initial_states(send, send_rows, found, opted_out)
    ]
    await _insert_recipients(session, [row for send_rows in rows for row in send_rows])
    tags = [
        tag for send, send_rows in zip(sends, rows, strict=True) for tag in _tags(send, send_rows)
    ]
    if tags:
        await _insert_tags(session, tags)
    await events.record(session, new_events)
    statuses = Counter(row["status"] for send_rows in rows for row in send_rows)
    note_accepted(session.sync_session, messages=len(sends), statuses=statuses)
    return [
        Accepted(
            message_id=send.message.id,
            recipients=tuple(
                # Built from values just written: no validation to run (model_construct).
                RecipientAccepted.model_construct(id=r["id"], email=r["email"], status=r["status"])
                for r in send_rows
            ),
        )
        for send, send_rows in zip(sends, rows, strict=True)
    ]


async def _with_current_batch_status(
    session: AsyncSession, sends: Sequence[Checked]
) -> Sequence[Checked]:
    """The sends with their batches' statuses as they are now, read after the transaction's
    first write: a batch cancelled or paused since the send was checked decides its
    recipients' first status. A share lock on PostgreSQL (SQLite: the write lock is held by
    then) makes a concurrent pause, resume or cancel, which writes the batch row first
    (app.batches.service), wait for this commit and then see these recipients."""
    batch_ids = {send.message.batch_id for send in sends if send.message.batch_id}
    if not batch_ids:
        return sends
    query = select(Batch.id, Batch.status).where(Batch.id.in_(batch_ids))
    rows = await session.execute(query.with_for_update(read=True))
    current = {batch_id: status for batch_id, status in rows}
    return [
        replace(send, batch_status=current[send.message.batch_id])
        if send.message.batch_id in current
        else send
        for send in sends
    ]


def _tags(send: Checked, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The message_tags rows the activity search finds the message by (categories, and the
    custom_args of the message and of each recipient)."""
    message = send.message
    personal = (row["personalization"] for row in rows if row["personalization"])
    metadata = [message.custom_args, *(p["custom_args"] for p in personal if "custom_args" in p)]
    account_id, message_id = message.account_id, message.id
    return [
        {"message_id": message_id, "tag": tag, "account_id": account_id}
        for tag in sorted(search.tags_of(message.categories, metadata))
    ]


# As the recipients' (below): one statement of three arrays on PostgreSQL, where a bulk send
# with a custom arg per recipient has as many tags as recipients.
_UNNEST_TAGS = text(
    "INSERT INTO message_tags (message_id, tag, account_id) SELECT * FROM unnest("
    "CAST(:message_id AS varchar[]), CAST(:tag AS varchar[]), CAST(:account_id AS varchar[]))"
)


async def _insert_tags(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert message_tags rows: one unnest statement on PostgreSQL, executemany elsewhere."""
    if session.get_bind().dialect.name != "postgresql":
        await session.execute(insert(_TAGS), rows)
        return
    await session.execute(_UNNEST_TAGS, {name: [row[name] for row in rows] for name in rows[0]})


def _message_row(
    submission: Submission,
    content: _Content,
    principal: Principal,
    domain: Domain,
    size: int,
    hostname: str,
) -> Message:
    message_id = new_id()
    shared = submission.personalizations[0] if len(submission.personalizations) == 1 else None
    return Message(
        id=message_id,
        account_id=principal.account.id,
        api_key_id=principal.api_key.id,
        domain_id=domain.id,
        from_email=submission.sender.email,
        from_name=submission.sender.name,
        # One copy: its To and Cc are the message's; several: each copy carries its own.
        to_header=[_address_json(a) for a in shared.to] if shared else [],
        cc_header=[_address_json(a) for a in shared.cc] if shared else [],
        reply_to=[_address_json(a) for a in submission.reply_to],
        subject=content.subject,
        text=content.text,
        html=content.html,
        alternatives=[[kind, value] for kind, value in submission.alternatives] or None,
        headers=[[name, value] for name, value in submission.headers.items()],
        categories=list(submission.categories),
        custom_args=submission.custom_args,
        # RFC 5322 §3.6.4: globally unique; our id is unique and the host name scopes it.
        message_id_header=f"<{message_id.lower()}@{hostname}>",
        size=size,
        created_at=clock.now(),
        template_id=content.template_id,
        template_engine=content.engine,
        template_data=submission.template_data,
        sections=submission.sections,
        batch_id=submission.batch_id,
        request_id=REQUEST_ID.get(),
        send_at=submission.send_at or _shared_send_at(submission),
        asm_group_id=submission.asm_group_id,
        settings=submission.settings,
    )


def _shared_send_at(submission: Submission) -> datetime | None:
    """The send_at every personalisation gives alike, if they all give one: the message is
    then first sent at that time, and its Date says so (see dispatch.first_sent)."""
    times = {personal.send_at for personal in submission.personalizations}
    return times.pop() if len(times) == 1 else None


def _columns(message: Message) -> dict[str, Any]:
    """A (transient) row's column values, for a Core INSERT."""
    return {column.key: getattr(message, column.key) for column in _MESSAGES.columns}


def _attachment_rows(submission: Submission, message_id: str) -> list[dict[str, Any]]:
    return [
        {
            "message_id": message_id,
            "position": position,
            "filename": file.filename,
            "content_type": file.content_type,
            "content_id": file.content_id,
            "disposition": file.disposition,
            "data": file.data,
        }
        for position, file in enumerate(submission.attachments)
    ]


def _personal_json(
    submission: Submission, personal: Personalization, index: int
) -> dict[str, Any] | None:
    """What the recipient row keeps of its personalization (only what is set)."""
    several = len(submission.personalizations) > 1
    candidates: dict[str, Any] = {
        "copy": f"p{index}" if several else None,
        "to": [_address_json(a) for a in personal.to] if several else None,
        "cc": [_address_json(a) for a in personal.cc] if several else None,
        "from": _address_json(personal.sender) if personal.sender else None,
        "subject": personal.subject,
        "headers": personal.headers or None,
        "substitutions": personal.substitutions or None,
        "data": personal.data,  # the message keeps what all copies share (template_data)
        "custom_args": personal.custom_args or None,
        "send_at": personal.send_at.isoformat() if personal.send_at else None,
    }
    kept = {key: value for key, value in candidates.items() if value is not None}
    return kept or None


def _recipient_rows(submission: Submission, *, message: Message) -> list[dict[str, Any]]:
    now = clock.now()
    message_id, account_id = message.id, message.account_id  # ORM reads, once
    rows = []
    for index, personal in enumerate(submission.personalizations):
        personalization = _personal_json(submission, personal, index)
        due = personal.send_at or submission.send_at
        scheduled = due is not None and due > now
        for kind, address in personal.recipients:
            rows.append(
                {
                    "id": new_id(),
                    "message_id": message_id,
                    "account_id": account_id,
                    "email": address.email,
                    "domain": recipient_domain(address.email),
                    "kind": kind,
                    "status": (RecipientStatus.SCHEDULED if scheduled else RecipientStatus.QUEUED),
                    "next_attempt_at": due if scheduled else now,
                    "created_at": now,
                    "updated_at": now,
                    "personalization": personalization,
                }
            )
    return rows


# PostgreSQL takes a thousand recipients as one INSERT … SELECT FROM unnest(arrays): a column
# per parameter instead of a parameter per value, several times faster than executemany.
_UNNEST_RECIPIENTS = text(
    "INSERT INTO recipients (id, message_id, account_id, email, domain, kind, status, "
    "attempt_count, next_attempt_at, created_at, updated_at, personalization) "
    "SELECT id, message_id, account_id, email, domain, kind, status, 0, next_attempt_at, "
    "created_at, updated_at, personalization::json FROM unnest("
    "CAST(:id AS varchar[]), CAST(:message_id AS varchar[]), CAST(:account_id AS varchar[]), "
    "CAST(:email AS varchar[]), CAST(:domain AS varchar[]), CAST(:kind AS varchar[]), "
    "CAST(:status AS varchar[]), CAST(:next_attempt_at AS timestamptz[]), "
    "CAST(:created_at AS timestamptz[]), CAST(:updated_at AS timestamptz[]), "
    "CAST(:personalization AS text[])) AS r(id, message_id, account_id, email, domain, kind, "
    "status, next_attempt_at, created_at, updated_at, personalization)"
)


async def _insert_recipients(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert the recipient rows: one unnest statement on PostgreSQL, executemany elsewhere."""
    if session.get_bind().dialect.name != "postgresql":
        await session.execute(insert(_RECIPIENTS), rows)
        return
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    columns["personalization"] = [
        None if value is None else jsontext.dumps(value) for value in columns["personalization"]
    ]
    columns["status"] = [str(status) for status in columns["status"]]
    await session.execute(_UNNEST_RECIPIENTS, columns)


# SendGrid's drop reasons, so SendGrid-format consumers see familiar texts.
DROP_REASONS = {
    SuppressionType.BOUNCE: "Bounced Address",
    SuppressionType.COMPLAINT: "Spam Reporting Address",
    SuppressionType.UNSUBSCRIBE: "Unsubscribed Address",
    SuppressionType.MANUAL: "Suppressed Address",
    SuppressionType.INVALID: "Invalid",
}


# A recipient who opted out of the message's group: SendGrid's reason for it, and the name
# the event's `suppression` gives it (app.stats counts it with the unsubscribe drops).
GROUP_DROP_REASON = "Unsubscribed Address"
GROUP_UNSUBSCRIBE = "group_unsubscribe"

Found = dict[tuple[str, str], list[Suppression]]  # (account, suppression key) → entries
OptedOut = set[tuple[str, int, str]]  # (account, group, suppression key)


async def _suppressions_of(
    session: AsyncSession, sends: Sequence[Checked], rows: list[list[dict[str, Any]]]
) -> Found:
    """The suppressions of every recipient about to be written, one lookup per account."""
    emails: dict[str, list[str]] = {}
    for send_rows in rows:
        for row in send_rows:
            emails.setdefault(row["account_id"], []).append(row["email"])
    # Every send of one commit carries its process's policy, hence the same key.
    tombstone_key = next((send.tombstone_key for send in sends if send.tombstone_key), b"")
    found: Found = {}
    for account_id, addresses in emails.items():
        entries = await suppressions.all_suppressions(
            session, account_id=account_id, emails=addresses, tombstone_key=tombstone_key
        )
        found.update({(account_id, address): value for address, value in entries.items()})
    return found


async def _group_opt_outs(
    session: AsyncSession, sends: Sequence[Checked], rows: list[list[dict[str, Any]]]
) -> OptedOut:
    """Who opted out of the group of their message: one lookup per account for every send
    of the transaction, none when no send has a group (or all bypass group opt-outs)."""
    wanted: dict[str, tuple[set[int], list[str]]] = {}
    for send, send_rows in zip(sends, rows, strict=True):
        group_id = send.submission.asm_group_id
        if group_id is None or send.submission.bypass_groups:
            continue
        groups, emails = wanted.setdefault(send.message.account_id, (set(), []))
        groups.add(group_id)
        emails.extend(row["email"] for row in send_rows)
    key = max((send.tombstone_key for send in sends), default=b"")
    found: OptedOut = set()
    for account_id, (groups, emails) in wanted.items():
        pairs = await asm.opted_out(
            session, account_id=account_id, group_ids=groups, emails=emails, tombstone_key=key
        )
        found.update((account_id, group_id, email) for group_id, email in pairs)
    return found


def _initial_states(
    send: Checked, rows: list[dict[str, Any]], found: Found, opted_out: OptedOut
) -> list[events.NewEvent]:
    """Each recipient's first status and event: processed, dropped (suppressed, or opted out
    of the message's group) or cancelled (its batch was cancelled); recipients of a paused
    batch wait, paused."""
    submission = send.submission
    shared = _Shared.of(send.message)
    group_id = None if submission.bypass_groups else submission.asm_group_id
    result = []
    for row in rows:
        key = (shared.account_id, suppressions.suppression_key(row["email"]))
        left_group = group_id is not None and (key[0], group_id, key[1]) in opted_out
        drop = _drop_facts(found.get(key, []), submission, left_group=left_group)
        facts = _event_facts(shared, row)
        if drop is not None:
            row["status"], row["next_attempt_at"] = RecipientStatus.DROPPED, None
            result.append(_event(EventType.DROPPED, shared, row, facts | drop))
        elif send.batch_status == BatchStatus.CANCELLED:
            row["status"], row["next_attempt_at"] = RecipientStatus.CANCELLED, None
            result.append(_event(EventType.CANCELLED, shared, row, facts))
        else:
            if send.batch_status == BatchStatus.PAUSED:
                row["status"] = RecipientStatus.PAUSED
            result.append(_event(EventType.PROCESSED, shared, row, facts))
    return result


def _drop_facts(
    entries: list[Suppression], submission: Submission, *, left_group: bool
) -> dict[str, Any] | None:
    """Why the recipient is dropped, as its event says it; None when it is not."""
    entry = _blocking(entries, submission)
    if entry is not None:
        return {"reason": DROP_REASONS[SuppressionType(entry.type)], "suppression": entry.type}
    if left_group:  # the event's asm_group_id names the group
        return {"reason": GROUP_DROP_REASON, "suppression": GROUP_UNSUBSCRIBE}
    return None


def _blocking(entries: list[Suppression], submission: Submission) -> Suppression | None:
    """The first suppression the send does not bypass (mail_settings.bypass_*)."""
    for entry in sorted(entries, key=lambda e: e.type):
        if SuppressionType(entry.type) not in submission.bypass:
            return entry
    return None


@dataclass(frozen=True, slots=True)
class _Shared:
    """What every event of one message carries: read from the row once, not per recipient
    (ORM attribute reads were a sixth of a 1,000-recipient accept)."""

    account_id: str
    message_id: str
    message_id_header: str
    categories: tuple[str, ...]
    custom_args: dict[str, Any]
    optional: dict[str, Any]
    send_at: str | None

    @classmethod
    def of(cls, message: Message) -> _Shared:
        """The shared facts of `message`."""
        optional = {
            "template_id": message.template_id,
            "batch_id": message.batch_id,
            "asm_group_id": message.asm_group_id,
            "request_id": message.request_id,
        }
        return cls(
            account_id=message.account_id,
            message_id=message.id,
            message_id_header=message.message_id_header,
            categories=tuple(message.categories or ()),
            custom_args=dict(message.custom_args),
            optional={key: value for key, value in optional.items() if value is not None},
            send_at=message.send_at.isoformat() if message.send_at else None,
        )


def _event_facts(shared: _Shared, row: dict[str, Any]) -> dict[str, Any]:
    """What event consumers (and SendGrid-format webhooks) need about a recipient's copy."""
    personal = row["personalization"] or {}
    personal_args = personal.get("custom_args")
    facts: dict[str, Any] = {
        "email": row["email"],
        "sg_message_id": sg_message_id(shared.message_id, row["id"]),
        "smtp-id": copy_message_id(shared.message_id_header, personal.get("copy")),
        "category": list(shared.categories),
        "custom_args": {**shared.custom_args, **personal_args}
        if personal_args
        else dict(shared.custom_args),
        **shared.optional,
    }
    send_at = personal.get("send_at") or shared.send_at
    if send_at is not None:
        facts["send_at"] = send_at
    return facts


def _event(
    type: EventType, shared: _Shared, row: dict[str, Any], data: dict[str, Any]
) -> events.NewEvent:
    return events.NewEvent(
        account_id=shared.account_id,
        type=type,
        message_id=shared.message_id,
        recipient_id=row["id"],
        data=data,
        categories=shared.categories,
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
            "message_id": _message_id_header(message),
            "from": {"email": message.from_email, "name": message.from_name},
            "subject": message.subject,
            "categories": message.categories,
            "metadata": message.custom_args,
            "created_at": message.created_at,
            "size": message.size,
            "content_purged": message.content_purged_at is not None,
            "recipients": [
                _recipient_view(r, by_recipient.get(r.id, []), event_views.get(r.id, []))
                for r in recipients
            ],
        }
    )


def _message_id_header(message: Message) -> str:
    """The Message-ID recipients see: a message submitted over SMTP keeps its own."""
    if message.raw_mime is None:
        return message.message_id_header
    head = message.raw_mime.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    value = BytesHeaderParser(policy=email.policy.compat32).parsebytes(head).get("Message-ID")
    return " ".join(str(value).split()) if value else message.message_id_header


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
