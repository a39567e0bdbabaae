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

import asyncio
import functools
import json
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
    create_engine,
    event,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import aliased
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.selectable import TextualSelect

from app.core.db import SQLITE_SYNCHRONOUS, Database, UTCDateTime, sqlite_path
from app.messages.personalize import copy_message_id
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
        return await _step_on_sqlite(db, request)
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
                m.custom_args, r.email, r.personalization -> 'copy',
                r.personalization -> 'custom_args')
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
    copy: str | None = None,
    personal_args: dict[str, Any] | None = None,
) -> EventContext:
    """An event from the JSON array PostgreSQL built (one JSON document per batch: parsing it
    costs a fraction of a result row per event). A personalised copy has its own Message-ID
    (the copy's name added) and its personalization's custom_args over the message's."""
    if copy and smtp_id:
        smtp_id = copy_message_id(smtp_id, copy)
    if personal_args:
        custom_args = {**(custom_args or {}), **personal_args}
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


async def _step_on_sqlite(db: Database, request: Request) -> Step:
    """The SQLite statements, all in one hop to a thread.

    Through aiosqlite every statement is a round trip to its thread and back, and each trip
    waits for the GIL and the scheduler: on a busy machine the hops, not SQLite, cost most of
    a batch. A plain sqlite3 connection (opened per step: cheap for a file, and nothing is
    left open) runs them all in one thread call; an in-memory database, which only the
    application's own connection can see, goes through that connection instead."""
    path = sqlite_path(db.settings.database_url)
    if path is None:
        async with db.engine.begin() as connection:
            return await connection.run_sync(_step_sqlite, request)
    engine = sqlite_engine(str(path), db.settings.sqlite_synchronous)
    return await asyncio.to_thread(_step_sqlite_in, engine, request)


@functools.cache
def sqlite_engine(path: str, synchronous: str) -> Engine:
    """A synchronous engine on the database file, connections set up as app.core.db's are
    (NullPool: a connection per step, closed after it)."""
    engine = create_engine(
        f"sqlite:///{path}",
        poolclass=NullPool,
        hide_parameters=True,  # as the application's engine: no addresses or URLs in errors
        connect_args={"check_same_thread": False},  # made in one pool thread, used in another
    )

    @event.listens_for(engine, "connect")
    def tune(dbapi_connection: Any, _record: Any) -> None:
        """Durability, foreign keys and waiting for the writer lock as the application's
        connections have them (the file is in WAL mode already)."""
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS[synchronous]}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def _step_sqlite_in(engine: Engine, request: Request) -> Step:
    """The step in one transaction on a connection of `engine` (runs in a thread)."""
    with engine.begin() as connection:
        return _step_sqlite(connection, request)


def _step_sqlite(connection: Connection, request: Request) -> Step:
    """The same as the PostgreSQL statement in six statements (built once, at import): the
    endpoint with its oldest waiting batch, the record, the new batch, its events."""
    # The PostgreSQL statement's parameters, prefixed: Core reserves column names for
    # INSERT and UPDATE.
    params = {f"p_{name}": value for name, value in _pg_params(request).items()}
    head = connection.execute(_HEAD, params).one_or_none()
    if head is None:
        return Step(held=False, enabled=False, stamp=None, batch=None)
    if request.delivered is not None:
        _record_delivered(connection, params, head.consecutive_failures)
    batch = None
    if request.take and head.enabled:
        if head.waiting_id is None:
            batch = _make(connection, request, {**params, "p_account_id": head.account_id})
        elif head.next_attempt_at <= request.now:  # else backing off: later batches wait
            events = _batch_events(connection, head.waiting_id)
            batch = Batch(head.waiting_id, head.attempt_count, head.batch_created_at, events)
    return Step(held=True, enabled=head.enabled, stamp=head.updated_at, batch=batch)


def _head_statement() -> Select[*tuple[Any, ...]]:
    """The endpoint if the lease is ours, with its oldest pending batch not in flight."""
    candidate = aliased(WebhookBatch)
    oldest_row = (
        select(func.min(WebhookOutbox.id))
        .where(WebhookOutbox.batch_id == candidate.id)
        .scalar_subquery()
    )
    waiting = (
        select(candidate.id)
        .where(
            candidate.webhook_id == bindparam("p_webhook_id"),
            candidate.state == BatchState.PENDING,
            candidate.id != bindparam("p_in_flight"),
            candidate.id != bindparam("p_done_batch"),
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
        .where(Webhook.id == bindparam("p_webhook_id"), Webhook.lease_token == bindparam("p_token"))
    )


_HEAD = _head_statement()
_FENCE = (
    select(Webhook.id)
    .where(Webhook.id == bindparam("p_webhook_id"), Webhook.lease_token == bindparam("p_token"))
    .exists()
)
_DELIVERED = (
    update(WebhookBatch)
    .where(WebhookBatch.id == bindparam("p_done_batch"), _FENCE)
    .values(
        state=BatchState.DELIVERED,
        completed_at=bindparam("p_now", type_=UTCDateTime()),
        attempt_count=WebhookBatch.attempt_count + 1,
    )
    .returning(WebhookBatch.attempt_count)
)
_ATTEMPT = insert(WebhookAttempt).values(
    webhook_id=bindparam("p_webhook_id"),
    batch_id=bindparam("p_done_batch"),
    attempt=bindparam("p_attempt"),
    attempted_at=bindparam("p_sent_at", type_=UTCDateTime()),
    duration_ms=bindparam("p_duration_ms"),
    succeeded=True,
    response_status=bindparam("p_status"),
    error=None,
    ip=bindparam("p_ip"),
    event_count=bindparam("p_event_count"),
)
_HEALTHY = (
    update(Webhook)
    .where(Webhook.id == bindparam("p_webhook_id"))
    .values(consecutive_failures=0, updated_at=bindparam("p_now", type_=UTCDateTime()))
)
_UNBATCHED = (
    select(WebhookOutbox.id)
    .where(WebhookOutbox.webhook_id == bindparam("p_webhook_id"), WebhookOutbox.batch_id.is_(None))
    .order_by(WebhookOutbox.id)
    .limit(bindparam("p_size"))
)
_NEW_BATCH = insert(WebhookBatch).from_select(
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
    select(
        bindparam("p_new_batch"),
        bindparam("p_webhook_id"),
        bindparam("p_account_id"),
        literal(BatchState.PENDING.value),
        func.count(),
        literal(0),
        bindparam("p_now", type_=UTCDateTime()),
        bindparam("p_now", type_=UTCDateTime()),
    )
    .select_from(_UNBATCHED.subquery())
    # Fenced like the other writes: on SQLite the head was read before this transaction's
    # first write, and a dispatcher whose lease was taken over meanwhile must make no batch.
    .where(_FENCE)
    .having(func.count() > 0),
)
_MARK = (
    update(WebhookOutbox)
    .where(WebhookOutbox.id.in_(_UNBATCHED.scalar_subquery()))
    .values(batch_id=bindparam("p_new_batch"))
)
# One JSON array per event, decoded like PostgreSQL's (json() keeps the stored text's order).
_BATCH_EVENTS = text("""
SELECT json_array(e.id, e.type, e.created_at, json(e.data), e.message_id, e.recipient_id,
    m.message_id_header, json(m.categories), json(m.custom_args), r.email,
    json_extract(r.personalization, '$.copy'),
    json(json_extract(r.personalization, '$.custom_args'))) AS event
FROM webhook_outbox AS o
JOIN events AS e ON e.id = o.event_id
LEFT JOIN messages AS m ON m.id = e.message_id
LEFT JOIN recipients AS r ON r.id = e.recipient_id
WHERE o.batch_id = :batch_id
ORDER BY o.id
""")


def _record_delivered(connection: Connection, params: dict[str, Any], failures: int) -> None:
    """The batch is delivered, its attempt recorded, the endpoint's failure run over."""
    attempt = connection.execute(_DELIVERED, params).scalar_one_or_none()
    if attempt is None:
        return  # the lease was lost: whoever holds it now records its own attempts
    connection.execute(_ATTEMPT, {**params, "p_attempt": attempt})
    if failures:
        connection.execute(_HEALTHY, params)


def _make(connection: Connection, request: Request, params: dict[str, Any]) -> Batch | None:
    """A new batch of the endpoint's oldest unbatched outbox rows (None: there are none)."""
    if not connection.execute(_NEW_BATCH, params).rowcount:
        return None
    connection.execute(_MARK, params)
    events = _batch_events(connection, request.new_batch_id)
    return Batch(request.new_batch_id, 0, request.now, events)


def _batch_events(connection: Connection, batch_id: str) -> list[EventContext]:
    """The batch's events in outbox order, with their message's fields."""
    rows = connection.execute(_BATCH_EVENTS, {"batch_id": batch_id}).scalars()
    return [_context_of_array(*json.loads(row)) for row in rows]
