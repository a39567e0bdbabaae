"""Idempotency-Key on the send endpoints (IETF draft-ietf-httpapi-idempotency-key-header).

1. The key is claimed in its own short transaction: an INSERT that the unique constraint on
   (account, key) lets only one request win, on any replica.
2. The winner does the send; the answer is stored on the key row in the SAME transaction as
   the message, so "sent" and "answer stored" commit together or not at all.
3. A repeat with the same body gets the stored answer and sends nothing; a different body
   is 422; a repeat while the first still runs is 409. A failed first attempt releases the
   key. A claim whose request died is taken over once its lock has run out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.service import Principal
from app.core import clock
from app.core.config import Settings
from app.core.db import conflict_insert
from app.core.errors import BadRequest, Conflict, Unprocessable
from app.core.ids import new_id
from app.idempotency.models import IdempotencyKey

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """An answer as it is stored and replayed."""

    status_code: int
    body: Any = None  # JSON, or None for an empty body
    headers: dict[str, str] = field(default_factory=dict)

    def to_response(self, *, replayed: bool = False) -> Response:
        """The HTTP response."""
        headers = dict(self.headers)
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        if self.body is None:
            return Response(status_code=self.status_code, headers=headers)
        return JSONResponse(self.body, status_code=self.status_code, headers=headers)


@dataclass(frozen=True, slots=True)
class Claim:
    """This request holds the key; `fence` proves it when the answer is stored."""

    record_id: str
    fence: datetime


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What "the same request" means: method, path and the JSON body with its keys sorted."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
        content = canonical.encode()
    except (UnicodeDecodeError, json.JSONDecodeError):
        content = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + content).hexdigest()


def key_from(request: Request) -> str | None:
    """The Idempotency-Key header, checked: 1 to 255 printable ASCII characters."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise BadRequest(
            f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
            HEADER,
        )
    return key


async def begin(
    session: AsyncSession,
    *,
    account_id: str,
    key: str,
    fingerprint: str,
    ttl: timedelta,
    lock: timedelta,
) -> Claim | StoredResponse:
    """Claim the key, or the stored answer of the request that used it first.

    Commits `session` (the request's, which has only read so far): the claim must be
    visible to other requests before the send begins. One session per request also means
    one pooled connection per request, however many requests run at once."""
    for _ in range(3):  # an expired key is deleted and claimed again
        claim = await _insert(session, account_id, key, fingerprint, ttl, lock)
        if claim is not None:
            return claim
        outcome = await _existing(session, account_id, key, fingerprint, lock)
        if outcome is not None:
            return outcome
    raise Conflict(f"The {HEADER} {key!r} is being used by another request; retry later.", HEADER)


async def _insert(
    session: AsyncSession,
    account_id: str,
    key: str,
    fingerprint: str,
    ttl: timedelta,
    lock: timedelta,
) -> Claim | None:
    """INSERT the key; None when it exists (the unique constraint said no).

    ON CONFLICT DO NOTHING rather than catching the error: a failed statement would roll the
    request's whole session back and expire what it has loaded (the caller's principal)."""
    now = clock.now()
    insert = conflict_insert(session)
    statement = (
        insert(IdempotencyKey)
        .values(
            id=new_id(),
            account_id=account_id,
            key=key,
            fingerprint=fingerprint,
            response_headers={},
            locked_until=now + lock,
            expires_at=now + ttl,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["account_id", "key"])
        .returning(IdempotencyKey.id)
    )
    record_id = (await session.execute(statement)).scalar_one_or_none()
    await session.commit()
    return None if record_id is None else Claim(record_id=record_id, fence=now + lock)


async def _existing(
    session: AsyncSession, account_id: str, key: str, fingerprint: str, lock: timedelta
) -> Claim | StoredResponse | None:
    """What an existing key means for this request (None: it expired and is gone)."""
    row = (
        await session.execute(
            select(IdempotencyKey).where(
                IdempotencyKey.account_id == account_id, IdempotencyKey.key == key
            )
        )
    ).scalar_one_or_none()
    now = clock.now()
    if row is None or row.expires_at <= now:
        if row is not None:
            await session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.id == row.id, IdempotencyKey.expires_at <= now
                )
            )
            await session.commit()
        return None
    if row.fingerprint != fingerprint:
        raise Unprocessable(
            f"The {HEADER} {key!r} was already used for a different request.", HEADER
        )
    if row.status_code is not None:
        return StoredResponse(row.status_code, row.response_body, dict(row.response_headers))
    if row.locked_until > now:
        raise Conflict(
            f"A request with the {HEADER} {key!r} is still being processed; retry later.",
            HEADER,
        )
    return await _take_over(session, row, now + lock)


async def _take_over(session: AsyncSession, row: IdempotencyKey, fence: datetime) -> Claim:
    """Claim a key whose first request died without answering (its lock ran out)."""
    result = await session.execute(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.id == row.id,
            IdempotencyKey.status_code.is_(None),
            IdempotencyKey.locked_until == row.locked_until,
        )
        .values(locked_until=fence)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    if not getattr(result, "rowcount", 0):
        raise Conflict(f"A request with the {HEADER} is still being processed.", HEADER)
    return Claim(record_id=row.id, fence=fence)


async def complete(session: AsyncSession, *, claim: Claim, response: StoredResponse) -> None:
    """Store the answer in the caller's transaction; 409 if the claim was taken over."""
    result = await session.execute(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.id == claim.record_id,
            IdempotencyKey.status_code.is_(None),
            IdempotencyKey.locked_until == claim.fence,
        )
        .values(
            status_code=response.status_code,
            response_body=response.body,
            response_headers=response.headers,
        )
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        raise Conflict(f"The {HEADER} was taken over by another request.", HEADER)


async def release(session: AsyncSession, *, claim: Claim) -> None:
    """Forget a claim whose request failed, so the key can be used again; a claim another
    request has taken over since (this one outlived its lock) is that request's to keep."""
    await session.rollback()  # whatever the failed attempt left unfinished
    await session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.id == claim.record_id,
            IdempotencyKey.status_code.is_(None),
            IdempotencyKey.locked_until == claim.fence,
        )
    )
    await session.commit()


async def purge_expired(session: AsyncSession) -> int:
    """Delete keys past their lifetime; returns how many."""
    result = await session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.expires_at <= clock.now())
    )
    return int(getattr(result, "rowcount", 0) or 0)


Work = Callable[[Claim | None], Awaitable[StoredResponse]]


async def run(
    request: Request,
    *,
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    work: Work,
) -> Response:
    """Run `work` once per Idempotency-Key (or plainly, without one) and answer."""
    key = key_from(request)
    if key is None:
        return (await work(None)).to_response()
    outcome = await begin(
        session,
        account_id=principal.account.id,
        key=key,
        fingerprint=fingerprint(request.method, request.url.path, await request.body()),
        ttl=settings.idempotency_ttl,
        lock=settings.idempotency_lock,
    )
    if isinstance(outcome, StoredResponse):
        return outcome.to_response(replayed=True)
    try:
        stored = await work(outcome)
    except Exception:
        await release(session, claim=outcome)
        raise
    return stored.to_response()
