"""Request dependencies: settings, database session, queue, and the authenticated principal."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.cache import KeyCache
from app.accounts.scopes import Scope
from app.accounts.service import Principal
from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.core.errors import Forbidden, TooManyRequests, Unauthorized
from app.core.queue import Queue
from app.core.ratelimit import FixedWindowLimiter
from app.core.throttled_log import ThrottledWarning
from app.messages.committer import SendCommitter
from app.observability.http import note_account

log = logging.getLogger(__name__)
# Every request checks the rate limit: while Redis is away, one line now and then says so.
_RATE_LIMIT_UNCHECKED = ThrottledWarning(log)

INVALID_KEY = "The provided authorization grant is invalid, expired, or revoked"


async def get_settings(request: Request) -> Settings:
    """The app's settings (async: FastAPI would run a plain function in a thread)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    """The app's database (for routes that need several short transactions)."""
    database: Database = request.app.state.db
    return database


async def get_queue(request: Request) -> Queue:
    """The app's queue (async: FastAPI would run a plain function in a thread)."""
    queue: Queue = request.app.state.queue
    return queue


async def get_committer(request: Request) -> SendCommitter:
    """The app's group committer for sends (async: see get_settings)."""
    committer: SendCommitter = request.app.state.committer
    return committer


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request; the route commits, anything uncommitted is rolled back."""
    database: Database = request.app.state.db
    async with database.session() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
QueueDep = Annotated[Queue, Depends(get_queue)]
DatabaseDep = Annotated[Database, Depends(get_database)]
CommitterDep = Annotated[SendCommitter, Depends(get_committer)]


RATE_LIMIT_PREFIX = "columba:ratelimit"


async def limit_rate(request: Request, *, key: str) -> None:
    """Count the request against `key` in Redis (shared by every API replica); 429 over the
    limit. Redis being down lets requests through: the database, not Redis, holds sends."""
    rule = (await get_settings(request)).rate_limit_rule
    if rule is None:
        return
    try:
        limiter = await _limiter(request)
        result = await limiter.hit(key, limit=rule.requests, window=rule.window_seconds)
    except (RedisError, OSError) as exc:
        _RATE_LIMIT_UNCHECKED.warning("rate limit not checked (Redis unavailable): %s", exc)
        return
    request.state.rate_limit_headers = result.headers()
    if not result.allowed:
        retry_after = max(1, result.reset_at - int(clock.now().timestamp()))
        raise TooManyRequests("too many requests", headers={"Retry-After": str(retry_after)})


async def _limiter(request: Request) -> FixedWindowLimiter:
    """One limiter per app, on the queue's Redis connection pool."""
    limiter: FixedWindowLimiter | None = getattr(request.app.state, "limiter", None)
    if limiter is None:
        queue = await get_queue(request)
        limiter = request.app.state.limiter = FixedWindowLimiter(
            await queue.pool(), prefix=RATE_LIMIT_PREFIX, batch=await queue.batch()
        )
    return limiter


def _bearer_token(request: Request) -> str:
    """The key from `Authorization: Bearer <key>`; 401 when absent."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("authorization required")
    return token.strip()


async def get_principal(request: Request) -> Principal:
    """Who is calling; 401 for a missing, unknown, wrong or revoked key; 429 over the limit.

    Known keys are limited per key, anything else per client address (so guessing keys is
    limited too); every answer carries the X-RateLimit-* headers. Keys come from the
    per-process cache (app/accounts/cache.py), so most requests read no database here."""
    client = f"ip:{request.client.host if request.client else 'unknown'}"
    try:
        token = _bearer_token(request)
    except Unauthorized:
        await limit_rate(request, key=client)
        raise
    keys: KeyCache = request.app.state.keys
    principal = await keys.authenticate(token)
    if principal is None:
        await limit_rate(request, key=client)
        raise Unauthorized(INVALID_KEY)
    note_account(request.scope, principal.account.id)
    await limit_rate(request, key=f"key:{principal.api_key.id}")
    return principal


def require(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that admits keys carrying `scope` (or full access); 403 otherwise."""

    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        return permitted(principal, scope)

    return check


def permitted(principal: Principal, scope: Scope) -> Principal:
    """The principal when its key carries `scope` (or full access); 403 otherwise."""
    if not principal.allows(scope):
        raise Forbidden(f"access forbidden: this API key lacks the {scope} scope")
    return principal


async def authorize(request: Request, scope: Scope) -> Principal:
    """get_principal and the scope check, for routes that take only the request."""
    return permitted(await get_principal(request), scope)


MailSender = Annotated[Principal, Depends(require(Scope.MAIL_SEND))]
AddressEraser = Annotated[Principal, Depends(require(Scope.ADDRESSES_ERASE))]
MessagesReader = Annotated[Principal, Depends(require(Scope.MESSAGES_READ))]
StatsReader = Annotated[Principal, Depends(require(Scope.STATS_READ))]
SuppressionReader = Annotated[Principal, Depends(require(Scope.SUPPRESSION_READ))]
SuppressionCreator = Annotated[Principal, Depends(require(Scope.SUPPRESSION_CREATE))]
SuppressionDeleter = Annotated[Principal, Depends(require(Scope.SUPPRESSION_DELETE))]
WebhooksReader = Annotated[Principal, Depends(require(Scope.WEBHOOKS_READ))]
WebhooksEditor = Annotated[Principal, Depends(require(Scope.WEBHOOKS_UPDATE))]
BatchCreator = Annotated[Principal, Depends(require(Scope.MAIL_BATCH_CREATE))]
BatchReader = Annotated[Principal, Depends(require(Scope.MAIL_BATCH_READ))]
BatchUpdater = Annotated[Principal, Depends(require(Scope.MAIL_BATCH_UPDATE))]
ScheduledSendCreator = Annotated[Principal, Depends(require(Scope.SCHEDULED_SENDS_CREATE))]
ScheduledSendReader = Annotated[Principal, Depends(require(Scope.SCHEDULED_SENDS_READ))]
ScheduledSendUpdater = Annotated[Principal, Depends(require(Scope.SCHEDULED_SENDS_UPDATE))]
ScheduledSendDeleter = Annotated[Principal, Depends(require(Scope.SCHEDULED_SENDS_DELETE))]
TemplateCreator = Annotated[Principal, Depends(require(Scope.TEMPLATES_CREATE))]
DomainsReader = Annotated[Principal, Depends(require(Scope.DOMAINS_READ))]
DomainsUpdater = Annotated[Principal, Depends(require(Scope.DOMAINS_UPDATE))]
TemplateReader = Annotated[Principal, Depends(require(Scope.TEMPLATES_READ))]
TemplateUpdater = Annotated[Principal, Depends(require(Scope.TEMPLATES_UPDATE))]
TemplateDeleter = Annotated[Principal, Depends(require(Scope.TEMPLATES_DELETE))]
VersionCreator = Annotated[Principal, Depends(require(Scope.TEMPLATE_VERSIONS_CREATE))]
VersionReader = Annotated[Principal, Depends(require(Scope.TEMPLATE_VERSIONS_READ))]
VersionUpdater = Annotated[Principal, Depends(require(Scope.TEMPLATE_VERSIONS_UPDATE))]
VersionDeleter = Annotated[Principal, Depends(require(Scope.TEMPLATE_VERSIONS_DELETE))]
VersionActivator = Annotated[Principal, Depends(require(Scope.TEMPLATE_VERSIONS_ACTIVATE))]
AsmGroupCreator = Annotated[Principal, Depends(require(Scope.ASM_GROUPS_CREATE))]
AsmGroupReader = Annotated[Principal, Depends(require(Scope.ASM_GROUPS_READ))]
AsmGroupUpdater = Annotated[Principal, Depends(require(Scope.ASM_GROUPS_UPDATE))]
AsmGroupDeleter = Annotated[Principal, Depends(require(Scope.ASM_GROUPS_DELETE))]
GroupSuppressionCreator = Annotated[
    Principal, Depends(require(Scope.ASM_GROUP_SUPPRESSIONS_CREATE))
]
GroupSuppressionReader = Annotated[Principal, Depends(require(Scope.ASM_GROUP_SUPPRESSIONS_READ))]
GroupSuppressionDeleter = Annotated[
    Principal, Depends(require(Scope.ASM_GROUP_SUPPRESSIONS_DELETE))
]
