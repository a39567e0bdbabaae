"""Database engine, sessions and the declarative base shared by every domain's models."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
from sqlalchemy import JSON, DateTime, MetaData, event, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute
from sqlalchemy.types import TypeDecorator

from app.core import jsontext
from app.core.config import Settings

# Stable constraint names, so Alembic migrations name things the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which stores naive) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store UTC; naive values are refused because they hide bugs."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text: store them all in one naive UTC form.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return aware UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSON everywhere, JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")


# SQLSTATE classes of a server that cannot serve now (PostgreSQL, Appendix A): 08 connection
# exception, 57P shutting down, starting up, in crash recovery.
UNAVAILABLE_SQLSTATES = ("08", "57P")


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc`, or an error that caused it, says the database could not be reached or
    dropped the connection (a restart, a failover): nothing was committed, a retry may work.
    SQLAlchemy flags only some of these (`connection_invalidated`); refused connections
    come through raw (OSError), and a server starting up or shutting down as a plain
    DBAPIError carrying its SQLSTATE."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, OSError):  # refused, reset, timed out (TimeoutError)
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATES):
            return True
        if isinstance(current, asyncpg.InterfaceError) and "connection is closed" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")  # made beside the database file
SQLITE_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}  # COLUMBA_SQLITE_SYNCHRONOUS


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for memory databases."""
    _, _, path = url.partition(":///")
    return None if not path or path.startswith(":memory:") else Path(path)


def _create_private(path: Path) -> None:
    """Create the database file readable by this user only, unless it exists; SQLite gives
    its -wal and -shm files the same permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_tuning(synchronous: str) -> Callable[[Any, Any], None]:
    """The settings every new SQLite connection gets."""

    def tune(dbapi_connection: Any, _record: Any) -> None:
        """WAL lets the worker write while the API reads; busy_timeout queues writers.

        synchronous=FULL syncs the WAL at every commit, so a committed transaction (a 202)
        survives a power failure; NORMAL syncs only at checkpoints and may lose the last
        commits (https://www.sqlite.org/pragma.html#pragma_synchronous)."""
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS[synchronous]}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return tune


def create_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    """An async engine for the configured database."""
    # JSON columns (event data, recipients' personal data) through orjson: the accept path
    # and the worker write and read thousands of them.
    kwargs.setdefault("json_serializer", jsontext.dumps)
    kwargs.setdefault("json_deserializer", jsontext.loads)
    # Database errors (and the tracebacks that log them) show the statement, not its
    # parameters: those hold addresses, message content and webhook URLs with their tokens.
    kwargs.setdefault("hide_parameters", True)
    if settings.is_sqlite:
        return _sqlite_engine(settings, **kwargs)
    # No pre-ping: it cost a round trip per checkout, on every request. A connection the
    # server dropped fails its first use instead; SQLAlchemy then invalidates the whole pool,
    # the request gets a 503 (app/core/errors.py) and the next ones connect afresh. Recycling
    # by age keeps connections from outliving server-side and firewall idle timeouts.
    kwargs.setdefault("pool_recycle", 1800)
    if settings.database_pooler == "pgbouncer":
        kwargs["connect_args"] = TRANSACTION_POOLER_CONNECT_ARGS | kwargs.get("connect_args", {})
    return create_async_engine(settings.database_url, **_pool_sizes(settings, kwargs))


def _unique_statement_name() -> str:
    """A prepared statement's name no other client of the pooler's server connection uses."""
    return f"__columba_{uuid.uuid4().hex}__"


# COLUMBA_DATABASE_POOLER=pgbouncer. In transaction mode each transaction (and each statement
# outside one) may run on a different server connection, shared with other clients: a cached
# prepared statement would be missing there, and asyncpg's numbered names (__asyncpg_stmt_1__)
# would collide with another client's ("prepared statement ... already exists"). So asyncpg
# caches none (statement_cache_size; it then also re-parses rather than trust a statement
# across a Flush, https://github.com/MagicStack/asyncpg/issues/1058), SQLAlchemy's dialect
# caches none (prepared_statement_cache_size), and the statements SQLAlchemy must still
# prepare to learn a result's columns get unique names (prepared_statement_name_func): see
# https://docs.sqlalchemy.org/en/20/dialects/postgresql.html#prepared-statement-name-with-pgbouncer
TRANSACTION_POOLER_CONNECT_ARGS: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": _unique_statement_name,
}


def _sqlite_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    """The embedded database: a file (pooled like PostgreSQL) or memory (one connection)."""
    # aiosqlite logs every statement with its parameters at DEBUG: webhook URLs (tokens),
    # addresses and message content would reach the logs.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    path = sqlite_path(settings.database_url)
    if path is not None:
        _create_private(path)
        kwargs = _pool_sizes(settings, kwargs)
    engine = create_async_engine(settings.database_url, **kwargs)
    event.listen(engine.sync_engine, "connect", _sqlite_tuning(settings.sqlite_synchronous))
    return engine


def _pool_sizes(settings: Settings, kwargs: dict[str, Any]) -> dict[str, Any]:
    """DB_POOL_SIZE and DB_MAX_OVERFLOW, unless the caller chose."""
    # Connections beyond pool_size are closed when returned: a pool smaller than the usual
    # number of concurrent requests makes every request open a connection (DB_POOL_SIZE).
    return {"pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow} | kwargs


class _LazySession:
    """Stands in for an AsyncSession, creating it on the first attribute asked for."""

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory
        self._session: AsyncSession | None = None

    def __getattr__(self, name: str) -> Any:
        if self._session is None:
            self._session = self._factory()
        return getattr(self._session, name)

    async def close(self) -> None:
        """Close the session, if there is one (never creates one to close it)."""
        await self.close_if_created()

    async def rollback_if_created(self) -> None:
        """Roll back, if there is a session."""
        if self._session is not None:
            await self._session.rollback()

    async def close_if_created(self) -> None:
        """Close, if there is a session."""
        if self._session is not None:
            await self._session.close()


class Database:
    """The engine and a session factory; one per process."""

    def __init__(self, settings: Settings, **engine_kwargs: Any) -> None:
        self.settings = settings
        self.engine = create_engine(settings, **engine_kwargs)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session that rolls back whatever was not committed."""
        async with self.sessionmaker() as session:
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise

    @asynccontextmanager
    async def lazy_session(self) -> AsyncIterator[AsyncSession]:
        """session(), created only if something uses it: the send routes need none when
        every read is cached and the group committer writes (creating one cost ~7% of a
        send's CPU)."""
        lazy = _LazySession(self.sessionmaker)
        try:
            yield cast(AsyncSession, lazy)
        except BaseException:
            await lazy.rollback_if_created()
            raise
        finally:
            await lazy.close_if_created()

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


async def lock_row(
    session: AsyncSession,
    key: InstrumentedAttribute[Any],
    value: Any,
    *,
    touch: InstrumentedAttribute[Any],
) -> None:
    """Serialise this transaction with every other that locks the same row, for checks that
    read before they write. PostgreSQL: the row's lock (`key` = `value`), FOR NO KEY UPDATE:
    what an UPDATE of other columns takes, so rows referring to this one (a send's message
    and its account) can still be inserted meanwhile. SQLite: the database's write lock,
    taken now by a write of `touch` to itself, since pysqlite begins a transaction only at
    the first write and a check read before it would see a snapshot another connection may
    have moved past."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(key).where(key == value).with_for_update(key_share=True))
    else:
        await session.execute(
            update(key.class_)
            .where(key == value)
            .values({touch.key: touch})
            .execution_options(synchronize_session=False)
        )


def conflict_insert(session: AsyncSession) -> Callable[..., postgresql.Insert | sqlite.Insert]:
    """The INSERT of the session's dialect: the one that has ON CONFLICT."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
