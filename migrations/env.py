"""Alembic environment: async, URL from Columba's settings, batch mode on SQLite."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

import app.models  # noqa: F401  (registers every table on Base.metadata)
from app.core.config import load_settings
from app.core.db import Base, UTCDateTime, create_engine

target_metadata = Base.metadata


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Spell Columba's column types in plain SQLAlchemy, so migrations never import app code."""
    if type_ != "type":
        return False
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, sa.JSON) or isinstance(getattr(obj, "impl", None), sa.JSON):
        if "postgresql" not in getattr(obj, "_variant_mapping", {}):
            return "sa.JSON()"  # plain JSON on purpose (OrderedJSON keeps key order)
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    if isinstance(obj, sa.BigInteger) and "sqlite" in getattr(obj, "_variant_mapping", {}):
        return 'sa.BigInteger().with_variant(sa.Integer(), "sqlite")'
    return False


def _configure(connection: Connection) -> None:
    """Run the migrations on one connection."""
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        _sqlite_foreign_keys(connection, on=False)
    try:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
            render_as_batch=sqlite,
            compare_type=True,
            render_item=_render_item,
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                _check_sqlite_foreign_keys(connection)
    finally:
        if sqlite:
            _sqlite_foreign_keys(connection, on=True)


def _sqlite_foreign_keys(connection: Connection, *, on: bool) -> None:
    """Switch SQLite's foreign keys. Off while migrating: batch mode rebuilds a table by
    copying it and dropping the old one, and with foreign keys on that drop deletes every row
    that refers to it (ON DELETE CASCADE) or fails. The pragma is ignored inside a transaction,
    so whatever is open is committed first (https://www.sqlite.org/lang_altertable.html,
    "other kinds of table schema changes", steps 1 and 12)."""
    connection.commit()
    connection.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    connection.commit()


def _check_sqlite_foreign_keys(connection: Connection) -> None:
    """Refuse a migration that left rows referring to nothing (step 10 of the same page)."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise RuntimeError(f"the migration broke foreign keys: {broken[:10]}")


def _given_url() -> str | None:
    """The URL the caller set (app.core.migrate does); None lets COLUMBA_DATABASE_URL decide.
    `alembic -c pyproject.toml …` has no ini section, where asking for an option fails."""
    config = context.config
    if not config.file_config.has_section(config.config_ini_section):
        return None
    return config.get_main_option("sqlalchemy.url")


async def _run_online() -> None:
    """Connect with the async engine and migrate."""
    url = _given_url()
    settings = load_settings(database_url=url) if url else load_settings()
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
    finally:
        await engine.dispose()


def _run_offline() -> None:
    """Emit SQL without a database (`alembic upgrade --sql`)."""
    url = _given_url() or load_settings().database_url
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
else:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
    else:
        asyncio.run(_run_online())
