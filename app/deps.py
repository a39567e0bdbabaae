"""Request dependencies: settings, database session, queue, and the authenticated principal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.accounts.scopes import Scope
from app.accounts.service import Principal
from app.config import Settings
from app.db import Database
from app.errors import Forbidden, Unauthorized
from app.queue import Queue

INVALID_KEY = "The provided authorization grant is invalid, expired, or revoked"


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    """The app's database (for routes that need several short transactions)."""
    database: Database = request.app.state.db
    return database


def get_queue(request: Request) -> Queue:
    """The app's queue."""
    queue: Queue = request.app.state.queue
    return queue


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request; the route commits, anything uncommitted is rolled back."""
    database: Database = request.app.state.db
    async with database.session() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
QueueDep = Annotated[Queue, Depends(get_queue)]
DatabaseDep = Annotated[Database, Depends(get_database)]


def _bearer_token(request: Request) -> str:
    """The key from `Authorization: Bearer <key>`; 401 when absent."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("authorization required")
    return token.strip()


async def get_principal(request: Request, session: SessionDep) -> Principal:
    """Who is calling; 401 for a missing, unknown, wrong or revoked key."""
    principal = await accounts.authenticate(session, plaintext=_bearer_token(request))
    if principal is None:
        raise Unauthorized(INVALID_KEY)
    if accounts.needs_last_used_update(principal.api_key):
        database: Database = request.app.state.db
        async with database.session() as own:  # its own commit: reads stay read-only
            await accounts.touch_key(own, api_key_id=principal.api_key.id)
            await own.commit()
    return principal


def require(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that admits keys carrying `scope` (or full access); 403 otherwise."""

    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.allows(scope):
            raise Forbidden(f"access forbidden: this API key lacks the {scope} scope")
        return principal

    return check


MailSender = Annotated[Principal, Depends(require(Scope.MAIL_SEND))]
MessagesReader = Annotated[Principal, Depends(require(Scope.MESSAGES_READ))]
StatsReader = Annotated[Principal, Depends(require(Scope.STATS_READ))]
SuppressionReader = Annotated[Principal, Depends(require(Scope.SUPPRESSION_READ))]
SuppressionCreator = Annotated[Principal, Depends(require(Scope.SUPPRESSION_CREATE))]
SuppressionDeleter = Annotated[Principal, Depends(require(Scope.SUPPRESSION_DELETE))]
WebhooksReader = Annotated[Principal, Depends(require(Scope.WEBHOOKS_READ))]
WebhooksEditor = Annotated[Principal, Depends(require(Scope.WEBHOOKS_UPDATE))]
