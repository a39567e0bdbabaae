"""Old finished mail seeded in bulk, with one INSERT … SELECT per table: generate_series on
PostgreSQL, a recursive CTE on SQLite (for the purge test and bench.purge)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from app.core.db import Database

SEEDED_TABLES = ("messages", "recipients", "attempts", "events", "message_tags")


def _dialect_parts(postgres: bool) -> dict[str, str]:
    """The SQL that differs: the number sequence, ids, JSON literals and the time."""
    if postgres:
        return {
            "seq": "seq(n) AS (SELECT generate_series(1, CAST(:count AS integer)))",
            "m": "'M' || lpad(n::text, 25, '0')",
            "r": "'R' || lpad(n::text, 25, '0')",
            "list": "CAST('[]' AS jsonb)",
            "object": "CAST('{}' AS jsonb)",
            "ordered": "CAST('{}' AS json)",
            "created": "CAST(:created AS timestamptz)",
        }
    return {
        "seq": "seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :count)",
        "m": "printf('M%025d', n)",
        "r": "printf('R%025d', n)",
        "list": "'[]'",
        "object": "'{}'",
        "ordered": "'{}'",
        "created": ":created",
    }


def _statements(parts: dict[str, str]) -> list[str]:
    """One INSERT per table: a message, its delivered recipient, an attempt, an event and a
    search tag."""
    head = f"WITH RECURSIVE {parts['seq']} "
    p = parts
    return [
        head + "INSERT INTO messages (id, account_id, domain_id, from_email, to_header, "
        "cc_header, reply_to, subject, text, headers, categories, custom_args, "
        "message_id_header, size, created_at, sections, settings) "
        f"SELECT {p['m']}, :account, :domain, 'shop@seed.test', {p['list']}, {p['list']}, "
        f"{p['list']}, 'Seeded', 'A body of some length, as mail has.', {p['list']}, "
        f"{p['list']}, {p['object']}, {p['m']} || '@seed.test', 100, {p['created']}, "
        f"{p['ordered']}, {p['object']} FROM seq",
        head + "INSERT INTO recipients (id, message_id, account_id, email, domain, kind, "
        "status, attempt_count, lease_expiries, created_at, updated_at) "
        f"SELECT {p['r']}, {p['m']}, :account, 'r' || n || '@example.test', 'example.test', "
        f"'to', 'delivered', 1, 0, {p['created']}, {p['created']} FROM seq",
        head + "INSERT INTO attempts (recipient_id, message_id, account_id, started_at, "
        f"duration_ms, outcome) SELECT {p['r']}, {p['m']}, :account, {p['created']}, 5, "
        "'delivered' FROM seq",
        head + "INSERT INTO events (account_id, message_id, recipient_id, type, created_at, "
        f"data) SELECT :account, {p['m']}, {p['r']}, 'delivered', {p['created']}, "
        f"{p['object']} FROM seq",
        head + "INSERT INTO message_tags (message_id, tag, account_id) "
        f"SELECT {p['m']}, 'category:seeded', :account FROM seq",
    ]


async def seed_finished_mail(
    db: Database, *, account_id: str, domain_id: str, count: int, created: datetime
) -> None:
    """`count` delivered messages created at `created`: 5 × `count` rows in all."""
    postgres = not db.settings.is_sqlite
    when: datetime | str = created
    if not postgres:  # the form SQLAlchemy stores a UTC time in on SQLite
        when = created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    values = {"count": count, "account": account_id, "domain": domain_id, "created": when}
    async with db.session() as session:
        for statement in _statements(_dialect_parts(postgres)):
            await session.execute(text(statement), values)
        await session.commit()


async def row_counts(db: Database, tables: tuple[str, ...] = SEEDED_TABLES) -> dict[str, int]:
    """Rows per table, read in a session of its own (so: what is committed)."""
    async with db.session() as session:
        return {
            table: int((await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())
            for table in tables
        }
