"""The embedded database's own guarantees: what a commit survives, who can read the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.core.config import Settings
from app.core.db import Database

FULL, NORMAL = 2, 1  # PRAGMA synchronous answers with numbers


@pytest.mark.parametrize(
    ("chosen", "expected"),
    [
        ({}, FULL),
        ({"sqlite_synchronous": "full"}, FULL),
        ({"sqlite_synchronous": "normal"}, NORMAL),
    ],
    ids=["default", "full", "normal"],
)
async def test_every_commit_is_synced_unless_normal_is_chosen(
    tmp_path: Path, chosen: dict[str, Any], expected: int
) -> None:
    """synchronous=FULL: a 202 survives a power failure, as the README promises."""
    database = Database(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", **chosen))
    try:
        async with database.session() as session:
            assert (await session.execute(text("PRAGMA synchronous"))).scalar() == expected
            assert (await session.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
    finally:
        await database.dispose()


async def test_a_new_database_and_its_wal_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "columba.db"
    database = Database(Settings(database_url=f"sqlite+aiosqlite:///{path}"))
    try:
        async with database.session() as session:
            await session.execute(text("CREATE TABLE t (x INTEGER)"))
            await session.execute(text("INSERT INTO t VALUES (1)"))
            await session.commit()
            for name in ("columba.db", "columba.db-wal", "columba.db-shm"):
                assert (path.parent / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        await database.dispose()


async def test_database_errors_do_not_show_their_parameters(tmp_path: Path) -> None:
    """An error's text (and so any traceback in a log) shows the statement, never the values:
    they can be addresses, message content or a webhook URL with its token."""
    database = Database(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'e.db'}"))
    token = "token-0123456789abcdef"
    try:
        async with database.session() as session:
            await session.execute(text("CREATE TABLE t (x INTEGER PRIMARY KEY, url TEXT)"))
            insert = text("INSERT INTO t VALUES (1, :url)")
            await session.execute(insert, {"url": f"https://hooks.example/{token}"})
            with pytest.raises(IntegrityError) as refused:
                await session.execute(insert, {"url": f"https://hooks.example/{token}"})
    finally:
        await database.dispose()
    assert "INSERT INTO t" in str(refused.value)
    assert token not in str(refused.value)
