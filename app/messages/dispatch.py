"""The database side of delivery: claim due recipients with a lease, load what to send,
record what happened. Workers call these; the SMTP work itself lives in app.delivery."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    insert,
    not_,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.ids import new_id
from app.delivery.classify import BounceKind, Classification, classify, suppresses
from app.delivery.content import Address, Attachment, MessageContent
from app.delivery.replies import Reply, synthetic
from app.delivery.retry import Decision
from app.domains.models import Domain
from app.events import service as events
from app.messages.models import (
    CLAIMABLE_STATUSES,
    Attempt,
    Message,
    MessageAttachment,
    Recipient,
    RecipientStatus,
)
from app.suppressions import service as suppressions
from app.suppressions.models import SuppressionType


@dataclass(frozen=True, slots=True)
class ClaimedRecipient:
    """A recipient this worker holds the lease on (`token` proves it)."""

    id: str
    message_id: str
    account_id: str
    email: str
    domain: str
    attempt_count: int
    personalization: dict[str, Any] | None  # see app.messages.personalize
    token: str
    lease_expiries: int = 0  # leases of it that ran out in a row: workers may die on it
    last_chance: bool = False  # one more lease running out drops it (see `claim`)


@dataclass(frozen=True, slots=True)
class Claim:
    """Recipients claimed together under one lease token."""

    token: str
    recipients: tuple[ClaimedRecipient, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt did for one recipient."""

    recipient: ClaimedRecipient
    decision: Decision
    started_at: datetime
    duration_ms: int
    mx_host: str | None = None
    ip: str | None = None
    tls_version: str | None = None
    categories: tuple[str, ...] | None = None  # the message's, when the worker has them
    tls_cipher: str | None = None
    tls_verified: bool | None = None
    asm_group_id: int | None = None  # the message's unsubscribe group: SendGrid's events name it
    accepted_at: datetime | None = None  # when the message was accepted (the latency metric)
    request_id: str | None = None  # the HTTP request (or SMTP session) that accepted it


def _due(now: datetime) -> Any:
    """Recipients ready for an attempt, or whose worker's lease ran out."""
    return or_(
        and_(Recipient.status.in_(CLAIMABLE_STATUSES), Recipient.next_attempt_at <= now),
        and_(Recipient.status == RecipientStatus.SENDING, Recipient.lease_expires_at < now),
    )


def _last_chance(now: datetime, max_expiries: int) -> Any:
    """Recipients whose lease ran out for the (max - 1)th time in a row: one more and they
    are dropped. (Only a worker's claim leaves a recipient `sending`, and any outcome or
    hand-back resets its count, so these are all `sending`: the status index finds them.)"""
    return and_(
        Recipient.status == RecipientStatus.SENDING,
        Recipient.lease_expires_at < now,
        Recipient.lease_expiries >= max_expiries - 2,
    )


async def claim(
    session: AsyncSession,
    *,
    lease: timedelta,
    limit: int = 1000,
    message_id: str | None = None,
    max_expiries: int | None = None,
    last_chances: int | None = None,
) -> Claim:
    """Lease due recipients (oldest due first; of one message when given) so that two
    workers never share one.

    A recipient whose lease ran out without an outcome (its worker died, or stalled, while
    it had it) is counted as it is claimed again (`lease_expiries`; any outcome resets it).
    Once the count reaches `max_expiries` the recipient is dropped, with the reason in its
    event, instead of being handed to a worker that would likely die on it too. One short of
    that is its last chance: with `last_chances`, at most that many such recipients are
    claimed, so that the pump can keep them apart. A worker's death counts against every
    recipient it had in flight, and those that happened to be with the one that kills must
    not reach the bound with it.
    """
    now, token = clock.now(), new_id()
    due = _due(now)
    parts: list[tuple[Any, int]] = []
    if max_expiries is not None and last_chances:
        parts.append((_last_chance(now, max_expiries), last_chances))
    if max_expiries is not None and last_chances is not None:
        due = and_(due, not_(_last_chance(now, max_expiries)))
    parts.append((due, max(1, limit - last_chances) if last_chances else limit))
    rows = await _take(session, parts, message_id=message_id, lease=lease, token=token)
    claimed = [
        ClaimedRecipient(
            **row._mapping,
            token=token,
            # Returned after the count went up: a last chance is one short of the bound.
            last_chance=max_expiries is not None and row.lease_expiries == max_expiries - 1,
        )
        for row in rows
    ]
    if max_expiries is not None:
        poisoned = [r for r in claimed if r.lease_expiries >= max_expiries]
        claimed = [r for r in claimed if r.lease_expiries < max_expiries]
        if poisoned:
            await record_outcomes(session, outcomes=[_poisoned(r, now) for r in poisoned])
    return Claim(token, tuple(claimed))


async def _take(
    session: AsyncSession,
    parts: Sequence[tuple[Any, int]],
    *,
    message_id: str | None,
    lease: timedelta,
    token: str,
) -> list[Any]:
    """Lease, in one statement, up to `limit` recipients meeting each (condition, limit).

    PostgreSQL: FOR UPDATE SKIP LOCKED makes a concurrent claimer pass over rows being
    claimed. SQLite: the UPDATE holds the database's single write lock, so it is atomic.
    """
    now = clock.now()
    chosen = [
        select(cte.c.id)
        for index, (condition, limit) in enumerate(parts)
        if limit > 0
        for cte in [_candidates(condition, limit, message_id, f"due{index}")]
    ]
    if not chosen:
        return []
    statement = (
        update(Recipient)
        .where(Recipient.id.in_(union_all(*chosen) if len(chosen) > 1 else chosen[0]))
        .values(
            status=RecipientStatus.SENDING,
            lease_token=token,
            lease_expires_at=now + lease,
            # A recipient still `sending` when claimed is one whose worker's lease ran out:
            # counted as it is taken over (SET reads the row as it was).
            lease_expiries=Recipient.lease_expiries
            + case((Recipient.status == RecipientStatus.SENDING, 1), else_=0),
            updated_at=now,
        )
        .returning(
            Recipient.id,
            Recipient.message_id,
            Recipient.account_id,
            Recipient.email,
            Recipient.domain,
            Recipient.attempt_count,
            Recipient.personalization,
            Recipient.lease_expiries,
        )
        .execution_options(synchronize_session=False)
    )
    return list((await session.execute(statement)).all())


def _candidates(condition: Any, limit: int, message_id: str | None, name: str) -> Any:
    """The ids to lease: oldest due first, skipping rows another claimer is taking."""
    candidates = select(Recipient.id).where(condition)
    if message_id is not None:
        candidates = candidates.where(Recipient.message_id == message_id)
    # A materialised CTE: PostgreSQL may re-run a plain IN subquery with LIMIT … SKIP LOCKED
    # and so take more rows than asked; the CTE runs exactly once.
    return (
        candidates.order_by(Recipient.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte(name)
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )


def _poisoned(recipient: ClaimedRecipient, now: datetime) -> Outcome:
    """A recipient whose workers kept dying while they had it: dropped, saying why."""
    reason = (
        f"delivery stopped: the lease on this recipient ran out {recipient.lease_expiries} "
        "times in a row without an outcome (the worker delivering it died each time)"
    )
    # RFC 3463 §3.4: X.3.0, "other or undefined mail system status".
    reply = synthetic(550, "5.3.0", reason)
    decision = Decision(RecipientStatus.DROPPED, reply)
    return Outcome(recipient=recipient, decision=decision, started_at=now, duration_ms=0)


async def renew_leases(session: AsyncSession, *, tokens: Sequence[str], lease: timedelta) -> int:
    """Extend claims' leases while their deliveries still run; returns rows renewed."""
    if not tokens:
        return 0
    # Rows locked in id order, as the group commit locks them (_LOCK_IN_ID_ORDER).
    held = (
        select(Recipient.id)
        .where(Recipient.lease_token.in_(tokens), Recipient.status == RecipientStatus.SENDING)
        .order_by(Recipient.id)
        .with_for_update(key_share=True)
        .cte("held")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    result = await session.execute(
        update(Recipient)
        .where(Recipient.id.in_(select(held.c.id)))
        .values(lease_expires_at=clock.now() + lease)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def any_due(session: AsyncSession) -> bool:
    """Whether any recipient is due now (the sweeper's question: one indexed row at most)."""
    query = select(Recipient.id).where(_due(clock.now())).limit(1)
    return (await session.execute(query)).first() is not None


async def due_message_ids(session: AsyncSession, *, limit: int = 1000) -> list[str]:
    """Messages with recipients due now: what the sweeper wakes the workers for."""
    query = select(Recipient.message_id).where(_due(clock.now())).distinct().limit(limit)
    return list((await session.execute(query)).scalars())


@dataclass(frozen=True, slots=True)
class LoadedMessage:
    """A message with what rendering and signing need."""

    message: Message
    attachments: tuple[MessageAttachment, ...]
    domain: Domain


async def load_messages(
    session: AsyncSession, *, message_ids: Sequence[str]
) -> dict[str, LoadedMessage]:
    """Messages with their sending domains and attachments: two queries for any number."""
    rows = (
        await session.execute(
            select(Message, Domain)
            .join(Domain, Domain.id == Message.domain_id)
            .where(Message.id.in_(message_ids))
        )
    ).all()
    files: dict[str, list[MessageAttachment]] = {message.id: [] for message, _ in rows}
    attachments = await session.execute(
        select(MessageAttachment)
        .where(MessageAttachment.message_id.in_(list(files)))
        .order_by(MessageAttachment.message_id, MessageAttachment.position)
    )
    for attachment in attachments.scalars():
        files[attachment.message_id].append(attachment)
    return {
        message.id: LoadedMessage(message, tuple(files[message.id]), domain)
        for message, domain in rows
    }


async def load_message(session: AsyncSession, *, message_id: str) -> LoadedMessage:
    """One message with its sending domain and attachments."""
    return (await load_messages(session, message_ids=[message_id]))[message_id]


def loaded_size(loaded: LoadedMessage) -> int:
    """Roughly the bytes a loaded message holds (its content, data and attachments)."""
    message = loaded.message
    parts = (message.text, message.html, message.raw_mime, message.subject)
    content = sum(len(part) for part in parts if part)
    content += sum(len(a.data) for a in loaded.attachments)
    if message.template_data:
        content += len(json.dumps(message.template_data, default=str))
    return max(content, message.size) + 2048  # rows, objects and headers besides


class MessageCache:
    """Messages loaded recently, kept for `ttl` seconds and `max_bytes` in all, so that the
    recipients of one message claimed over many batches load it once. Messages do not
    change once accepted (recipients do, and are never cached)."""

    def __init__(self, *, ttl: float, max_bytes: int) -> None:
        self.ttl, self.max_bytes = ttl, max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[LoadedMessage, int, float]] = OrderedDict()

    def get(self, message_id: str) -> LoadedMessage | None:
        """A message loaded less than `ttl` ago."""
        entry = self._entries.get(message_id)
        if entry is None:
            return None
        if entry[2] < time.monotonic():
            self._drop(message_id)
            return None
        self._entries.move_to_end(message_id)
        return entry[0]

    def put(self, loaded: LoadedMessage) -> None:
        """Keep a message, dropping the least recently used beyond `max_bytes`."""
        size = loaded_size(loaded)
        if size > self.max_bytes:
            return
        self._drop(loaded.message.id)
        self._entries[loaded.message.id] = (loaded, size, time.monotonic() + self.ttl)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, message_id: str) -> None:
        entry = self._entries.pop(message_id, None)
        if entry is not None:
            self.bytes -= entry[1]

    async def load(
        self, session: AsyncSession, message_ids: Sequence[str]
    ) -> dict[str, LoadedMessage]:
        """The messages, from the cache or loaded (two queries for all that are missing)."""
        found = {mid: loaded for mid in message_ids if (loaded := self.get(mid)) is not None}
        missing = sorted(set(message_ids) - set(found))
        if missing:
            fetched = await load_messages(session, message_ids=missing)
            _detach(session, fetched.values())
            for loaded in fetched.values():
                self.put(loaded)
            found.update(fetched)
        return found


def _detach(session: AsyncSession, loaded: Iterable[LoadedMessage]) -> None:
    """Take cached messages out of the session that loaded them: its rollback (the database
    went away before the claim committed) would expire them, and every batch of theirs would
    then fail on a detached, expired row until the cache let them go."""
    for item in loaded:
        for row in (item.message, item.domain, *item.attachments):
            if row in session:
                session.expunge(row)


def _addresses(rows: Sequence[dict[str, Any]]) -> tuple[Address, ...]:
    return tuple(Address(email=row["email"], name=row.get("name")) for row in rows)


def first_sent(accepted: datetime, send_at: datetime | None) -> datetime:
    """The Date of a message: when it is first sent. A scheduled message leaves at its send_at
    (a time past means at once), so the Date is fixed, identical on every retry (RFC 5322
    §3.6.1: the time the message was ready to enter the transport system)."""
    return max(accepted, send_at) if send_at is not None else accepted


def content_of(loaded: LoadedMessage) -> MessageContent:
    """The renderable content of a stored message."""
    message = loaded.message
    return MessageContent(
        message_id=message.message_id_header,
        date=first_sent(message.created_at, message.send_at),
        sender=Address(email=message.from_email, name=message.from_name),
        subject=message.subject,
        to=_addresses(message.to_header),
        cc=_addresses(message.cc_header),
        reply_to=_addresses(message.reply_to),
        text=message.text,
        html=message.html,
        alternatives=tuple((kind, value) for kind, value in message.alternatives or ()),
        headers=tuple((name, value) for name, value in message.headers),
        attachments=tuple(
            Attachment(
                filename=a.filename,
                content_type=a.content_type,
                data=a.data,
                content_id=a.content_id,
                disposition=a.disposition,
            )
            for a in loaded.attachments
        ),
    )


async def still_leased(session: AsyncSession, recipients: Sequence[ClaimedRecipient]) -> set[str]:
    """The recipients whose lease is still ours (fencing against a late worker).

    An UPDATE, not a SELECT: it takes the row locks (PostgreSQL) or the write lock (SQLite)
    that keep another worker from re-claiming them until we commit.
    """
    by_token: dict[str, list[str]] = {}
    for recipient in recipients:
        by_token.setdefault(recipient.token, []).append(recipient.id)
    owned: set[str] = set()
    for token, ids in by_token.items():
        result = await session.execute(
            update(Recipient)
            .where(Recipient.id.in_(ids), Recipient.lease_token == token)
            .values(updated_at=clock.now())
            .returning(Recipient.id)
            .execution_options(synchronize_session=False)
        )
        owned.update(result.scalars())
    return owned


async def record_and_release(
    session: AsyncSession,
    *,
    outcomes: Sequence[Outcome],
    released: Sequence[tuple[ClaimedRecipient, datetime]],
) -> int:
    """A worker's group commit: outcomes recorded, hand-backs released; returns outcomes
    recorded. The caller commits."""
    await _lock_in_id_order(
        session, [o.recipient.id for o in outcomes] + [r.id for r, _ in released]
    )
    recorded = await record_outcomes(session, outcomes=outcomes)
    await release(session, released=released)
    return recorded


# Every transaction that updates many leased recipients at once locks them in id order first:
# a worker's lease renewal (its own task, its own connection) and its group commit touch the
# same rows at the same moment, and two UPDATEs that lock them in their plans' orders (an
# index on lease_token, an unnest join) deadlocked on PostgreSQL. FOR NO KEY UPDATE is the lock
# an UPDATE takes anyway: inserts of attempts and events referring to the rows are not held.
_LOCK_IN_ID_ORDER = text(
    "SELECT id FROM recipients WHERE id = ANY(CAST(:ids AS varchar[])) "
    "ORDER BY id FOR NO KEY UPDATE"
)


async def _lock_in_id_order(session: AsyncSession, ids: Sequence[str]) -> None:
    """PostgreSQL: lock these recipients' rows in id order (SQLite has one writer anyway)."""
    if ids and session.get_bind().dialect.name == "postgresql":
        await session.execute(_LOCK_IN_ID_ORDER, {"ids": sorted(set(ids))})


async def record_outcomes(session: AsyncSession, *, outcomes: Sequence[Outcome]) -> int:
    """Attempts, new recipient states and events, for the recipients still leased to us:
    fenced by lease token, so a recipient another worker took over is left alone."""
    if not outcomes:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        owned = await _record_states_fenced(session, outcomes)
    else:
        owned = await still_leased(session, [outcome.recipient for outcome in outcomes])
        outcomes = [outcome for outcome in outcomes if outcome.recipient.id in owned]
        await _record_states(session, outcomes)
    outcomes = [outcome for outcome in outcomes if outcome.recipient.id in owned]
    if not outcomes:
        return 0
    attempts: Table = Attempt.__table__  # type: ignore[assignment]  # Core, not the ORM's bulk path
    await session.execute(insert(attempts), [_attempt_row(outcome) for outcome in outcomes])
    await events.record(session, [_event(outcome) for outcome in outcomes])
    await _record_suppressions(session, outcomes)
    return len(outcomes)


async def _record_states(session: AsyncSession, outcomes: Sequence[Outcome]) -> None:
    """New recipient states, one executemany (SQLite: the caller fenced them already)."""
    if not outcomes:
        return
    table: Table = Recipient.__table__  # type: ignore[assignment]  # Core executemany
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("rid"))
        .values(
            status=bindparam("new_status"),
            attempt_count=table.c.attempt_count + 1,
            next_attempt_at=bindparam("next_at"),
            lease_token=None,
            lease_expires_at=None,
            lease_expiries=0,
            last_code=bindparam("code"),
            last_enhanced_code=bindparam("enhanced"),
            last_response=bindparam("text"),
            updated_at=clock.now(),
        ),
        [_recipient_params(outcome) for outcome in outcomes],
    )


# PostgreSQL: every outcome of a group commit in one statement, joined on (id, lease token),
# so the fence and the write are one round trip; RETURNING names the rows that were ours.
_FENCED_STATES = text(
    """
    UPDATE recipients AS r SET
        status = o.status,
        attempt_count = r.attempt_count + 1,
        next_attempt_at = o.next_at,
        lease_token = NULL,
        lease_expires_at = NULL,
        lease_expiries = 0,
        last_code = o.code,
        last_enhanced_code = o.enhanced,
        last_response = o.response,
        updated_at = :now
    FROM unnest(
        CAST(:ids AS varchar[]), CAST(:tokens AS varchar[]), CAST(:statuses AS varchar[]),
        CAST(:next_at AS timestamptz[]), CAST(:codes AS integer[]),
        CAST(:enhanced AS varchar[]), CAST(:responses AS text[])
    ) AS o(id, token, status, next_at, code, enhanced, response)
    WHERE r.id = o.id AND r.lease_token = o.token
    RETURNING r.id
    """
)


async def _record_states_fenced(session: AsyncSession, outcomes: Sequence[Outcome]) -> set[str]:
    """New states of the recipients still leased to us; returns their ids."""
    params = [_recipient_params(outcome) for outcome in outcomes]
    result = await session.execute(
        _FENCED_STATES,
        {
            "now": clock.now(),
            "ids": [p["rid"] for p in params],
            "tokens": [o.recipient.token for o in outcomes],
            "statuses": [str(p["new_status"]) for p in params],
            "next_at": [p["next_at"] for p in params],
            "codes": [p["code"] for p in params],
            "enhanced": [p["enhanced"] for p in params],
            "responses": [p["text"] for p in params],
        },
    )
    return set(result.scalars())


def failure_class(outcome: Outcome) -> Classification | None:
    """How a failed attempt is classified (None for deliveries)."""
    reply = outcome.decision.reply
    return None if reply.is_success else classify(reply)


# Enhanced codes that say the domain, not only the mailbox, does not exist (RFC 3463, 7505).
_INVALID_DOMAIN_CODES = frozenset({"5.1.2", "5.1.10"})


def suppression_for(outcome: Outcome) -> SuppressionType | None:
    """The suppression list a bounce belongs on: hard bounces suppress the address (an
    unknown domain as `invalid`, an unknown mailbox as `bounce`); blocks are listed, as
    SendGrid lists them, but never suppress (CHECKLIST 38); soft bounces are not listed."""
    if outcome.decision.status != RecipientStatus.BOUNCED:
        return None
    classification = failure_class(outcome)
    if classification is None:
        return None
    if suppresses(classification):
        invalid = outcome.decision.reply.enhanced in _INVALID_DOMAIN_CODES
        return SuppressionType.INVALID if invalid else SuppressionType.BOUNCE
    if classification.kind == BounceKind.BLOCK:
        return SuppressionType.BLOCK
    return None


async def _record_suppressions(session: AsyncSession, outcomes: Sequence[Outcome]) -> None:
    """Put hard bounces and blocks on the account's suppression lists."""
    for outcome in outcomes:
        kind = suppression_for(outcome)
        if kind is not None:
            await suppressions.suppress(
                session,
                account_id=outcome.recipient.account_id,
                email=outcome.recipient.email,
                type=kind,
                reason=str(outcome.decision.reply),
            )


def _recipient_params(outcome: Outcome) -> dict[str, Any]:
    reply = outcome.decision.reply
    return {
        "rid": outcome.recipient.id,
        "new_status": outcome.decision.status,
        "next_at": outcome.decision.next_attempt_at,
        "code": reply.code,
        "enhanced": reply.enhanced,
        "text": reply.text,
    }


def _attempt_row(outcome: Outcome) -> dict[str, Any]:
    reply = outcome.decision.reply
    return {
        "recipient_id": outcome.recipient.id,
        "message_id": outcome.recipient.message_id,
        "account_id": outcome.recipient.account_id,
        "started_at": outcome.started_at,
        "duration_ms": outcome.duration_ms,
        "outcome": outcome.decision.status,
        "mx_host": outcome.mx_host,
        "ip": outcome.ip,
        "tls_version": outcome.tls_version,
        "tls_cipher": outcome.tls_cipher,
        "tls_verified": outcome.tls_verified,
        "stage": reply.stage,
        "code": reply.code,
        "enhanced_code": reply.enhanced,
        "response": reply.text,
    }


def _event(outcome: Outcome) -> events.NewEvent:
    reply: Reply = outcome.decision.reply
    data: dict[str, Any] = {
        "email": outcome.recipient.email,
        "attempt": outcome.recipient.attempt_count + 1,
        "code": reply.code,
        "enhanced_code": reply.enhanced,
        "response": str(reply),
        "mx_host": outcome.mx_host,
        "tls": outcome.tls_version is not None,
    }
    if outcome.asm_group_id is not None:
        data["asm_group_id"] = outcome.asm_group_id
    if outcome.request_id is not None:
        data["request_id"] = outcome.request_id
    if outcome.decision.next_attempt_at is not None:
        data["next_attempt_at"] = outcome.decision.next_attempt_at.isoformat()
    classification = failure_class(outcome)
    if classification is not None:
        data["bounce_type"] = classification.kind.value
        data["bounce_classification"] = str(classification.bucket)
        data["classification_rule"] = classification.rule
    return events.NewEvent(
        account_id=outcome.recipient.account_id,
        type=outcome.decision.status,
        message_id=outcome.recipient.message_id,
        recipient_id=outcome.recipient.id,
        data=data,
        categories=outcome.categories,
    )


async def release(
    session: AsyncSession, *, released: Sequence[tuple[ClaimedRecipient, datetime]]
) -> None:
    """Hand recipients back unattempted: no attempt spent, no event, due again later."""
    if not released:
        return
    table: Table = Recipient.__table__  # type: ignore[assignment]
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("rid"), table.c.lease_token == bindparam("token"))
        .values(
            status=bindparam("back_to"),
            next_attempt_at=bindparam("retry_at"),
            lease_token=None,
            lease_expires_at=None,
            lease_expiries=0,
            updated_at=clock.now(),
        ),
        [
            {
                "rid": recipient.id,
                "token": recipient.token,
                "retry_at": retry_at,
                "back_to": RecipientStatus.DEFERRED
                if recipient.attempt_count
                else RecipientStatus.QUEUED,
            }
            for recipient, retry_at in released
        ],
    )
