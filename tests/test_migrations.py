"""The migrations: every revision upgrades and downgrades with rows in every table, and head
builds exactly the schema the models describe, so that a model change without a migration
fails here. Both run on a database of their own, on SQLite (`make test`) and PostgreSQL
(`make test-pg`), and cover future revisions without being touched."""

from __future__ import annotations

import re
import secrets
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from pprint import pformat
from typing import Any
from uuid import UUID

import pytest_asyncio
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.schema import CreateIndex

import app.models  # noqa: F401  (every table on Base.metadata)
from app.core import migrate
from app.core.config import load_settings
from app.core.db import Base, Database, create_engine
from tests.support import create_test_database, drop_test_database

VERSION_TABLE = "alembic_version"


@pytest_asyncio.fixture
async def fresh_url(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of the run's dialect, this test's own (a SQLite file, or a new
    PostgreSQL database beside the session's)."""
    if make_url(database_url).get_backend_name() == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    url = await create_test_database(database_url, "columba_migrations_" + secrets.token_hex(4))
    try:
        yield url
    finally:
        await drop_test_database(database_url, url)


@contextmanager
def sqlite_expression_indexes_unseen() -> Iterator[None]:
    """SQLAlchemy cannot reflect SQLite's indexes on expressions (the activity search's
    lower(email), …) and says so in a warning; they are checked by their SQL instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expr")
        yield


# --- every revision, up and down, with data -----------------------------------------------


class Migrator:
    """Alembic commands on one open connection, each committed."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.config = migrate.alembic_config(str(connection.engine.url))
        self.config.attributes["connection"] = connection  # migrations/env.py uses it

    def revisions(self) -> list[str]:
        """Every revision, base first; the history is one line."""
        scripts = ScriptDirectory.from_config(self.config)
        assert len(scripts.get_heads()) == 1, f"several heads: {scripts.get_heads()}"
        revisions = list(reversed(list(scripts.walk_revisions())))
        for previous, revision in zip([None, *revisions], revisions, strict=False):
            assert revision.down_revision == (previous and previous.revision), (
                f"{revision.revision} does not follow {previous and previous.revision}"
            )
        return [revision.revision for revision in revisions]

    def upgrade(self, revision: str) -> None:
        """Migrate up to `revision`."""
        command.upgrade(self.config, revision)
        self.connection.commit()

    def downgrade(self, revision: str) -> None:
        """Migrate down to `revision` ("base": nothing)."""
        command.downgrade(self.config, revision)
        self.connection.commit()


class RowMaker:
    """Makes one valid row for every table of a reflected schema: every column filled with a
    value of its type (unique, so unique constraints hold), foreign keys pointing at the row
    just made in the parent table, integer keys left to the database."""

    def __init__(self) -> None:
        self.serial = 0

    def fill(self, connection: Connection, schema: sa.MetaData) -> None:
        """Insert one row into every table of `schema` (reflected), parents first."""
        made: dict[str, dict[str, Any]] = {}
        for table in schema.sorted_tables:
            if table.name == VERSION_TABLE:
                continue
            row = self.row(table, made)
            try:
                result = connection.execute(table.insert().values(row))
            except sa.exc.DBAPIError as exc:
                raise AssertionError(f"no row fits {table.name} {row!r}: {exc.orig}") from exc
            key = result.inserted_primary_key or ()
            generated = dict(zip(table.primary_key.columns.keys(), key, strict=True))
            made[table.name] = {**row, **{k: v for k, v in generated.items() if v is not None}}
        connection.commit()

    def row(self, table: sa.Table, made: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Values for every column of `table` but a key the database generates."""
        row = {column.name: self.value(column) for column in table.columns}
        for key in table.foreign_key_constraints:
            parent = made.get(key.referred_table.name)  # None: a cycle, or a self-reference
            for element in key.elements:
                row[element.parent.name] = parent and parent[element.column.name]
        for column in table.columns:
            if generated_key(table, column):
                del row[column.name]
        return row

    def value(self, column: sa.Column[Any]) -> Any:
        """A value of the column's type, never given before."""
        self.serial += 1
        n, kind = self.serial, column.type
        if isinstance(kind, sa.JSON):
            return {"n": n, "list": [n]}
        if isinstance(kind, sa.Boolean):
            return True
        if isinstance(kind, sa.DateTime):
            return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
        if isinstance(kind, sa.Date):
            return date(2026, 1, 1) + timedelta(days=n)
        if isinstance(kind, sa.Integer):
            return n
        if isinstance(kind, sa.Numeric):
            return Decimal(n) if kind.asdecimal else float(n)
        if isinstance(kind, sa.LargeBinary):
            return f"bytes {n}".encode()
        if isinstance(kind, sa.Uuid):
            return UUID(int=n)
        if isinstance(kind, sa.String):
            # The end of the text keeps the serial: VARCHAR(3) gets "-17".
            return f"{column.name}-{n}"[-(kind.length or 255) :]
        raise AssertionError(f"{column.table.name}.{column.name}: teach RowMaker a {kind!r}")


def generated_key(table: sa.Table, column: sa.Column[Any]) -> bool:
    """Whether the database numbers `column` (a lone integer primary key)."""
    key = list(table.primary_key.columns)
    return key == [column] and isinstance(column.type, sa.Integer) and not column.foreign_keys


def reflect(connection: Connection) -> sa.MetaData:
    """The database's tables as they are."""
    metadata = sa.MetaData()
    with sqlite_expression_indexes_unseen():
        metadata.reflect(connection)
    return metadata


def row_counts(connection: Connection) -> dict[str, int]:
    """Rows per table (the version table aside)."""
    tables = sa.inspect(connection).get_table_names()
    return {
        name: connection.scalar(sa.select(sa.func.count()).select_from(sa.table(name))) or 0
        for name in tables
        if name != VERSION_TABLE
    }


def assert_rows_kept(before: dict[str, int], after: dict[str, int], step: str) -> None:
    """Every table that survives a step keeps its rows (SQLite's batch mode rebuilds a table:
    with foreign keys on, dropping the old copy would delete its children's rows)."""
    lost = {name: (before[name], after[name]) for name in before.keys() & after.keys()}
    lost = {name: counts for name, counts in lost.items() if counts[0] != counts[1]}
    assert not lost, f"{step} changed the rows of {lost} (before, after)"


def walk_every_revision(connection: Connection) -> list[str]:
    """Base to head one revision at a time, with rows in every table: up, down, up again;
    then from head down to base and back up, rows and all. Returns the revisions walked."""
    migrator, rows = Migrator(connection), RowMaker()
    revisions = migrator.revisions()
    for previous, revision in zip(["base", *revisions], revisions, strict=False):
        migrator.upgrade(revision)
        schema = reflect(connection)  # once per revision: reflection costs 0.5 s on SQLite
        rows.fill(connection, schema)
        filled = row_counts(connection)
        assert all(filled.values()), f"empty tables at {revision}: {filled}"
        migrator.downgrade(previous)
        assert_rows_kept(filled, row_counts(connection), f"downgrade {revision} → {previous}")
        downgraded = row_counts(connection)
        migrator.upgrade(revision)
        assert_rows_kept(downgraded, row_counts(connection), f"upgrade {previous} → {revision}")
        rows.fill(connection, schema)  # the schema built again takes rows too
    if len(revisions) == 1:
        return revisions  # the baseline's step went down to base and up to head already
    migrator.downgrade("base")
    assert sa.inspect(connection).get_table_names() in ([], [VERSION_TABLE])
    migrator.upgrade("heads")
    rows.fill(connection, schema)
    assert set(row_counts(connection)) == set(Base.metadata.tables)
    return revisions


async def test_every_revision_upgrades_and_downgrades_with_data(fresh_url: str) -> None:
    # Columba's engine (SQLite: foreign keys on, WAL), without a sync to disk at each commit.
    engine = create_engine(load_settings(database_url=fresh_url, sqlite_synchronous="normal"))
    try:
        async with engine.connect() as connection:
            walked = await connection.run_sync(walk_every_revision)
    finally:
        await engine.dispose()
    assert walked[0] == "0001"  # the baseline (issue 17) and every revision on top of it


# --- head is what the models describe -----------------------------------------------------


def differences(connection: Connection) -> list[Any]:
    """What `alembic revision --autogenerate` would write: tables, columns, types, nullability,
    server defaults, indexes, unique and foreign keys."""
    options = {"compare_type": True, "compare_server_default": True}
    context = MigrationContext.configure(connection, opts=options)
    with sqlite_expression_indexes_unseen():
        return list(compare_metadata(context, Base.metadata))


def index_definitions(connection: Connection) -> tuple[dict[str, str], dict[str, str]]:
    """(The models', the database's) definition of every index, as the database states it.

    Alembic compares an index's name, columns, expressions and uniqueness, but not its
    dialect options (a partial index's WHERE, PostgreSQL's operator class), and on SQLite
    not its expressions at all: those would drift unseen. SQLite keeps the CREATE INDEX it
    was given, so the models' own is compiled beside it; PostgreSQL states its indexes in
    one form (pg_indexes), so the models' are built in a scratch schema and rolled back."""
    if connection.dialect.name == "sqlite":
        return sqlite_index_sql(connection)
    return postgresql_index_definitions(connection)


def sqlite_index_sql(connection: Connection) -> tuple[dict[str, str], dict[str, str]]:
    """The models' CREATE INDEX statements and SQLite's (unique constraints are the
    tables', compared by Alembic)."""
    expected = {
        str(index.name): normalised(str(CreateIndex(index).compile(dialect=connection.dialect)))
        for table in Base.metadata.tables.values()
        for index in table.indexes
    }
    query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    present = {name: normalised(sql) for name, sql in connection.execute(sa.text(query))}
    return expected, present


def postgresql_index_definitions(connection: Connection) -> tuple[dict[str, str], dict[str, str]]:
    """pg_indexes' definitions of the migrated schema's indexes and of the models' (built in
    a scratch schema inside a transaction that is rolled back: PostgreSQL's DDL is
    transactional)."""
    scratch, schema = "columba_models", str(connection.scalar(sa.text("SELECT current_schema()")))
    query = sa.text(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :schema"
        f" AND tablename != '{VERSION_TABLE}'"
    )
    present = {name: sql for name, sql in connection.execute(query, {"schema": schema})}
    try:
        connection.exec_driver_sql(f"CREATE SCHEMA {scratch}")
        Base.metadata.create_all(connection.execution_options(schema_translate_map={None: scratch}))
        rows = connection.execute(query, {"schema": scratch}).all()
    finally:
        connection.rollback()
    expected = {name: sql.replace(f" {scratch}.", f" {schema}.") for name, sql in rows}
    return expected, present


def describe(difference: Any) -> str:
    """A difference from compare_metadata as a line a person reads: the operation, then
    what it concerns (a column's changes come as a list of modify_… tuples)."""
    if isinstance(difference, list):
        return "\n".join(describe(change) for change in difference)
    operation, *details = difference
    if operation.startswith("modify_"):  # (op, schema, table, column, existing, database, models)
        _, table, column, _, database, models = details
        return (
            f"  {operation}: {table}.{column}: database {named(database)}, models {named(models)}"
        )
    return f"  {operation}: " + ", ".join(named(d) for d in details if d is not None)


def named(thing: Any) -> str:
    """What a schema object is, briefly."""
    if isinstance(thing, sa.Column):
        return f"column {thing.table.name}.{thing.name} {thing.type}"
    if isinstance(thing, sa.Table):
        return f"table {thing.name}"
    if isinstance(thing, sa.Index | sa.Constraint) and thing.table is not None:
        options = getattr(thing, "ondelete", None)
        text = f"{type(thing).__name__} {thing.name} on {thing.table.name}"
        return text + (f" ON DELETE {options}" if options else "")
    if isinstance(thing, sa.DefaultClause):
        return f"server default {getattr(thing.arg, 'text', thing.arg)!r}"
    return "none" if thing is None else repr(thing)


def normalised(sql: str) -> str:
    """SQL without its layout."""
    return re.sub(r"\s*([(),])\s*", r"\1", re.sub(r"\s+", " ", sql)).strip()


async def test_head_is_the_schema_of_the_models(db: Database) -> None:
    # The session's database: a new one, upgraded to head by conftest's `database_url`.
    async with db.engine.connect() as connection:
        found = await connection.run_sync(differences)
        expected, present = await connection.run_sync(index_definitions)
    assert not found, (
        "the models and the migrations disagree; add a revision "
        "(README, Migrations: alembic revision --autogenerate):\n"
        + "\n".join(describe(difference) for difference in found)
    )
    assert len(expected) > 10  # every index of the models, not none of them
    drifted = {
        name: {"models": expected.get(name), "database": present.get(name)}
        for name in expected.keys() | present.keys()
        if expected.get(name) != present.get(name)
    }
    assert not drifted, "indexes differ; add a revision:\n" + pformat(drifted, width=100)
