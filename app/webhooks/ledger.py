"""The dispatcher's bookkeeping: one transaction per batch records the last delivered attempt
and takes the next batch with its events.

On PostgreSQL that transaction is one statement (data-modifying CTEs, run in autocommit: a
single statement is its own transaction), so a batch costs the dispatcher one database round
trip besides its POST; on SQLite, where round trips are function calls, it is a few statements
in one transaction. Everything is fenced by the endpoint's lease token: a dispatcher whose
lease was taken over records and takes nothing.

Batches of one endpoint are sent in outbox order. While one batch is in flight the next is
already taken (a second pending batch), so "the next batch" is the pending batch holding the
oldest outbox rows, other than those in flight; when that batch is not due yet (backing off
after a failure) nothing is taken: a later batch never overtakes an earlier one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Integer,
    Select,
    String,
    bindparam,
    column,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased
from sqlalchemy.sql.selectable import TextualSelect

from app.core.db import Database, UTCDateTime
from app.events.models import Event
from app.messages.models import Message, Recipient
from app.webhooks.client import PostResult
from app.webhooks.models import (
    BatchState,
    Webhook,
    WebhookAttempt,
    WebhookBatch,
    WebhookOutbox,
)
from app.webhooks.payloads import EventContext


@dataclass(frozen=True, slots=True)
class Delivered:
    """A successful attempt, to be recorded with the next batch's taking."""

    batch_id: str
    sent_at: datetime
    result: PostResult
    event_count: int


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch to POST: its id (the `webhook-id`), its history and its events."""

    id: str
    attempts_made: int
    created_at: datetime
    events: list[EventContext]


@dataclass(frozen=True, slots=True)
class Step:
    """What one bookkeeping transaction found."""

    held: bool  # the lease is still ours (else nothing was recorded or taken)
    enabled: bool
    stamp: datetime | None  # the endpoint's updated_at: its settings changed when this does
    batch: Batch | None  # the next batch to send, None when none is due


@dataclass(frozen=True, slots=True)
class Request:
    """One bookkeeping transaction's inputs."""

    webhook_id: str
    token: str
    now: datetime
    new_batch_id: str  # the id a batch made from the outbox gets
    size: int
    delivered: Delivered | None = None  # record this success first
    in_flight: str | None = None  # a batch being POSTed now: not the next one
    take: bool = True  # False: only record


async def step(db: Database, request: Request) -> Step:
    """Record `request.delivered` and take the next due batch, in one transaction."""
    if db.settings.is_sqlite:
        async with db.engine.begin() as connection:
            return await _step_sqlite(connection, request)
    async with db.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        rows = (await autocommit.execute(_STEP_PG, _pg_params(request))).all()
    return _step_of_rows(rows)


# One statement: lock the endpoint's row if the lease is ours (`hook`); record the delivered
# attempt (`done`, `attempt`, `healthy`: the failure run ends); the oldest pending batch not
# in flight (`waiting`) or else a new one from the oldest outbox rows (`picked`, `marked`,
# `made`); and the chosen batch's events with their message's fields. Sub-statements share
# one snapshot, hence the explicit exclusion of the batch just recorded.
_STEP_PG_SQL = """
WITH hook AS (
    SELECT id, account_id, enabled, updated_at FROM webhooks
    WHERE id = :webhook_id AND lease_token = :token
    FOR NO KEY UPDATE
),
done AS (
    UPDATE webhook_batches AS b
    SET state = 'delivered', completed_at = :now, attempt_count = b.attempt_count + 1
    FROM hook WHERE b.id = :done_batch AND b.webhook_id = hook.id
    RETURNING b.id, b.attempt_count
),
attempt AS (
    INSERT INTO webhook_attempts (webhook_id, batch_id, attempt, attempted_at, duration_ms,
        succeeded, response_status, error, ip, event_count)
    SELECT :webhook_id, done.id, done.attempt_count, :sent_at, :duration_ms, true,
        :status, NULL, :ip, :event_count
    FROM done
),
healthy AS (
    UPDATE webhooks SET consecutive_failures = 0, updated_at = :now
    WHERE id = :webhook_id AND consecutive_failures <> 0 AND EXISTS (SELECT 1 FROM done)
),
waiting AS (
    SELECT b.id, b.attempt_count, b.created_at, b.next_attempt_at
    FROM webhook_batches AS b
    WHERE b.webhook_id = :webhook_id AND b.state = 'pending'
        AND b.id <> :done_batch AND b.id <> :in_flight
    ORDER BY (SELECT min(o.id) FROM webhook_outbox AS o WHERE o.batch_id = b.id) NULLS FIRST,
        b.created_at, b.id
    LIMIT 1
),
picked AS (
    SELECT o.id FROM webhook_outbox AS o
    WHERE o.webhook_id = :webhook_id AND o.batch_id IS NULL AND :take
        AND EXISTS (SELECT 1 FROM hook WHERE hook.enabled)
        AND NOT EXISTS (SELECT 1 FROM waiting)
    ORDER BY o.id
    LIMIT :size
    FOR UPDATE OF o
),
marked AS (
    UPDATE webhook_outbox AS o SET batch_id = :new_batch
    FROM picked WHERE o.id = picked.id
    RETURNING o.id, o.event_id
),
made AS (
    INSERT INTO webhook_batches (id, webhook_id, account_id, state, event_count,
        attempt_count, next_attempt_at, created_at)
    SELECT :new_batch, hook.id, hook.account_id, 'pending', (SELECT count(*) FROM marked),
        0, :now, :now
    FROM hook WHERE EXISTS (SELECT 1 FROM marked)
    RETURNING id, attempt_count, created_at
),
chosen AS (
    SELECT id, attempt_count, created_at FROM waiting
    WHERE next_attempt_at <= :now AND :take AND EXISTS (SELECT 1 FROM hook WHERE hook.enabled)
    UNION ALL
    SELECT id, attempt_count, created_at FROM made
),
items AS (
    SELECT marked.id, marked.event_id FROM marked
    UNION ALL
    SELECT o.id, o.event_id FROM webhook_outbox AS o JOIN chosen ON o.batch_id = chosen.id
)
SELECT hook.enabled, hook.updated_at AS stamp, chosen.id AS batch_id,
    chosen.attempt_count, chosen.created_at AS batch_created_at,
    (
        -- A correlated subquery per event: looked up by primary key whatever the planner
        -- estimates (a join was planned as a scan of the whole events table).
        SELECT json_agg((
            SELECT json_build_array(e.id, e.type, e.created_at AT TIME ZONE 'UTC', e.data,
                e.message_id, e.recipient_id, m.message_id_header, m.categories,
                m.custom_args, r.email)
            FROM events AS e
            LEFT JOIN messages AS m ON m.id = e.message_id
            LEFT JOIN recipients AS r ON r.id = e.recipient_id
            WHERE e.id = items.event_id
        ) ORDER BY items.id)
        FROM items
    ) AS events
FROM hook
LEFT JOIN chosen ON true
"""


def _step_pg_statement() -> TextualSelect:
    """The statement with its parameter and result types."""
    return (
        text(_STEP_PG_SQL)
        .bindparams(
            bindparam("webhook_id", type_=String()),
            bindparam("token", type_=String()),
            bindparam("now", type_=UTCDateTime()),
            bindparam("done_batch", type_=String()),
            bindparam("in_flight", type_=String()),
            bindparam("new_batch", type_=String()),
            bindparam("sent_at", type_=UTCDateTime()),
            bindparam("duration_ms", type_=Integer()),
            bindparam("status", type_=Integer()),
            bindparam("ip", type_=String()),
            bindparam("event_count", type_=Integer()),
            bindparam("take", type_=Boolean()),
            bindparam("size", type_=Integer()),
        )
        .columns(
            column("enabled", Boolean()),
            column("stamp", UTCDateTime()),
            column("batch_id", String()),
            column("attempt_count", Integer()),
            column("batch_created_at", UTCDateTime()),
            column("events", JSON()),
        )
    )


_STEP_PG = _step_pg_statement()


def _pg_params(request: Request) -> dict[str, Any]:
    """The statement's parameters ('' stands for no batch: batch ids are never empty)."""
    delivered = request.delivered
    result = delivered.result if delivered else None
    return {
        "webhook_id": request.webhook_id,
        "token": request.token,
        "now": request.now,
        "done_batch": delivered.batch_id if delivered else "",
        "in_flight": request.in_flight or "",
        "new_batch": request.new_batch_id,
        "sent_at": delivered.sent_at if delivered else request.now,
        "duration_ms": result.duration_ms if result else 0,
        "status": result.status if result else None,
        "ip": result.ip if result else None,
        "event_count": delivered.event_count if delivered else 0,
        "take": request.take,
        "size": request.size,
    }


def _step_of_rows(rows: Sequence[Any]) -> Step:
    """The Step the statement's row describes (none: the lease is not ours)."""
    if not rows:
        return Step(held=False, enabled=False, stamp=None, batch=None)
    [row] = rows
    batch = None
    if row.batch_id is not None:
        events = [_context_of_array(*values) for values in row.events or ()]
        batch = Batch(row.batch_id, row.attempt_count, row.batch_created_at, events)
    return Step(held=True, enabled=row.enabled, stamp=row.stamp, batch=batch)


def _context_of_array(
    event_id: int,
    event_type: str,
    created_at: str,
    data: dict[str, Any],
    message_id: str | None,
    recipient_id: str | None,
    smtp_id: str | None,
    categories: list[str] | None,
    custom_args: dict[str, Any] | None,
    email: str | None,
) -> EventContext:
    """An event from the JSON array PostgreSQL built (one JSON document per batch: parsing it
    costs a fraction of a result row per event)."""
    return EventContext(
        id=event_id,
        type=event_type,
        created_at=datetime.fromisoformat(created_at).replace(tzinfo=UTC),  # UTC, naive
        data=data,
        message_id=message_id,
        recipient_id=recipient_id,
        smtp_id=smtp_id,
        categories=tuple(categories or ()),
        custom_args=custom_args or {},
        email=email or data.get("email"),
    )


def _context(row: Any) -> EventContext:
    """An event and its message's fields, from a row of either dialect's query."""
    return EventContext(
        id=row.event_id,
        type=row.type,
        created_at=row.created_at,
        data=row.data,
        message_id=row.message_id,
        recipient_id=row.recipient_id,
        smtp_id=row.message_id_header,
        categories=tuple(row.categories or ()),
        custom_args=dict(row.custom_args or {}),
        email=row.email or row.data.get("email"),
    )


async def _step_sqlite(connection: AsyncConnection, request: Request) -> Step:
    """The same as the PostgreSQL statement in six statements (each one a hop to SQLite's
    thread): the endpoint with its oldest waiting batch, the record, the new batch, its
    events."""
    head = (await connection.execute(_head_query(request))).one_or_none()
    if head is None:
        return Step(held=False, enabled=False, stamp=None, batch=None)
    if request.delivered is not None:
        await _record_delivered(connection, request, request.delivered, head.consecutive_failures)
    batch = None
    if request.take and head.enabled:
        if head.waiting_id is None:
            batch = await _make(connection, request, head.account_id)
        elif head.next_attempt_at <= request.now:  # else backing off: later batches wait
            events = await batch_events(connection, head.waiting_id)
            batch = Batch(head.waiting_id, head.attempt_count, head.batch_created_at, events)
    return Step(held=True, enabled=head.enabled, stamp=head.updated_at, batch=batch)


def _head_query(request: Request) -> Select[*tuple[Any, ...]]:
    """The endpoint if the lease is ours, with its oldest pending batch not in flight."""
    excluded = [request.in_flight or "", request.delivered.batch_id if request.delivered else ""]
    candidate = aliased(WebhookBatch)
    oldest_row = (
        select(func.min(WebhookOutbox.id))
        .where(WebhookOutbox.batch_id == candidate.id)
        .scalar_subquery()
    )
    waiting = (
        select(candidate.id)
        .where(
            candidate.webhook_id == request.webhook_id,
            candidate.state == BatchState.PENDING,
            candidate.id.not_in(excluded),
        )
        .order_by(oldest_row.nulls_first(), candidate.created_at, candidate.id)
        .limit(1)
        .scalar_subquery()
    )
    return (
        select(
            Webhook.account_id,
            Webhook.enabled,
            Webhook.updated_at,
            Webhook.consecutive_failures,
            WebhookBatch.id.label("waiting_id"),
            WebhookBatch.attempt_count,
            WebhookBatch.created_at.label("batch_created_at"),
            WebhookBatch.next_attempt_at,
        )
        .outerjoin(WebhookBatch, WebhookBatch.id == waiting)
        .where(Webhook.id == request.webhook_id, Webhook.lease_token == request.token)
    )


async def _record_delivered(
    connection: AsyncConnection, request: Request, delivered: Delivered, failures: int
) -> None:
    """The batch is delivered, its attempt recorded, the endpoint's failure run over."""
    fence = (
        select(Webhook.id)
        .where(Webhook.id == request.webhook_id, Webhook.lease_token == request.token)
        .exists()
    )
    attempt_count = (
        await connection.execute(
            update(WebhookBatch)
            .where(WebhookBatch.id == delivered.batch_id, fence)
            .values(
                state=BatchState.DELIVERED,
                completed_at=request.now,
                attempt_count=WebhookBatch.attempt_count + 1,
            )
            .returning(WebhookBatch.attempt_count)
        )
    ).scalar_one_or_none()
    if attempt_count is None:
        return  # the lease was lost: whoever holds it now records its own attempts
    result = delivered.result
    await connection.execute(
        insert(WebhookAttempt).values(
            webhook_id=request.webhook_id,
            batch_id=delivered.batch_id,
            attempt=attempt_count,
            attempted_at=delivered.sent_at,
            duration_ms=result.duration_ms,
            succeeded=True,
            response_status=result.status,
            error=None,
            ip=result.ip,
            event_count=delivered.event_count,
        )
    )
    if failures:
        await connection.execute(
            update(Webhook)
            .where(Webhook.id == request.webhook_id)
            .values(consecutive_failures=0, updated_at=request.now)
        )


async def _make(connection: AsyncConnection, request: Request, account_id: str) -> Batch | None:
    """A new batch of the endpoint's oldest unbatched outbox rows (None: there are none)."""
    rows = (
        select(WebhookOutbox.id)
        .where(WebhookOutbox.webhook_id == request.webhook_id, WebhookOutbox.batch_id.is_(None))
        .order_by(WebhookOutbox.id)
        .limit(request.size)
    )
    now = literal(request.now, UTCDateTime())
    batch_row = select(
        literal(request.new_batch_id),
        literal(request.webhook_id),
        literal(account_id),
        literal(BatchState.PENDING.value),
        func.count(),
        literal(0),
        now,
        now,
    ).select_from(rows.subquery())
    made = await connection.execute(
        insert(WebhookBatch).from_select(
            [
                "id",
                "webhook_id",
                "account_id",
                "state",
                "event_count",
                "attempt_count",
                "next_attempt_at",
                "created_at",
            ],
            batch_row.having(func.count() > 0),
        )
    )
    if not made.rowcount:
        return None
    await connection.execute(
        update(WebhookOutbox)
        .where(WebhookOutbox.id.in_(rows.scalar_subquery()))
        .values(batch_id=request.new_batch_id)
    )
    events = await batch_events(connection, request.new_batch_id)
    return Batch(request.new_batch_id, 0, request.now, events)


async def batch_events(connection: AsyncConnection, batch_id: str) -> list[EventContext]:
    """The batch's events in outbox order, with their message's fields."""
    query = (
        select(
            Event.id.label("event_id"),
            Event.type,
            Event.created_at,
            Event.data,
            Event.message_id,
            Event.recipient_id,
            Message.message_id_header,
            Message.categories,
            Message.custom_args,
            Recipient.email,
        )
        .join(WebhookOutbox, WebhookOutbox.event_id == Event.id)
        .outerjoin(Message, Message.id == Event.message_id)
        .outerjoin(Recipient, Recipient.id == Event.recipient_id)
        .where(WebhookOutbox.batch_id == batch_id)
        .order_by(WebhookOutbox.id)
    )
    return [_context(row) for row in await connection.execute(query)]
