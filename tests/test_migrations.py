"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import warnings
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Index, text
from sqlalchemy.engine import Connection

import app.models  # noqa: F401  (every table on Base.metadata)
from app.core.db import Base, Database


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    with warnings.catch_warnings():
        if connection.dialect.name == "sqlite":
            # SQLAlchemy cannot reflect SQLite's expression indexes (the activity search's
            # lower(email), …), so Alembic skips them; _expression_indexes checks them instead.
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
            warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expr")
        return list(compare_metadata(context, Base.metadata))


def _expression_indexes() -> dict[str, str]:
    """Name → table of every index of the models on an expression."""
    return {
        str(index.name): index.table.name
        for table in Base.metadata.tables.values()
        for index in table.indexes
        if isinstance(index, Index) and index.table is not None
        if not all(isinstance(expression, Column) for expression in index.expressions)
    }


def _sqlite_indexes(connection: Connection) -> dict[str, str]:
    """Name → table of every index SQLite has."""
    rows = connection.execute(text("SELECT name, tbl_name FROM sqlite_master WHERE type='index'"))
    return {name: table for name, table in rows}


async def test_models_and_migrations_agree(db: Database) -> None:
    async with db.engine.connect() as connection:
        differences = await connection.run_sync(_differences)
        if connection.dialect.name == "sqlite":
            present = await connection.run_sync(_sqlite_indexes)
            expected = _expression_indexes()
            assert expected
            assert {name: present.get(name) for name in expected} == expected
    assert differences == []
