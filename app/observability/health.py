"""Readiness: the database answers, its schema is at the migrations' head, and Redis answers.

Every check runs with a short timeout and says why it failed, so that `/readyz` answers within
a few seconds whatever is down, and an operator reads the reason in the 503 itself."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

from alembic.script import ScriptDirectory
from redis.asyncio import Redis
from sqlalchemy import text

from app.core.db import Database
from app.core.migrate import alembic_config

CHECK_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Check:
    """One dependency's verdict."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Readiness:
    """Every check; ready when all passed."""

    checks: tuple[Check, ...]

    @property
    def ready(self) -> bool:
        """Whether every check passed."""
        return all(check.ok for check in self.checks)

    def body(self) -> dict[str, object]:
        """`{"status": "ready"|"unready", "checks": {name: {"status", "detail"}}}`."""
        return {
            "status": "ready" if self.ready else "unready",
            "checks": {
                c.name: {"status": "ok" if c.ok else "fail", "detail": c.detail}
                for c in self.checks
            },
        }

    def reason(self) -> str:
        """The failed checks in one sentence (the 503's error message)."""
        return "; ".join(f"{c.name}: {c.detail}" for c in self.checks if not c.ok)


@functools.cache
def migration_heads() -> frozenset[str]:
    """The head revision(s) of the migrations shipped with this code."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision of the migrations shipped with this code."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return frozenset(revision.revision for revision in script.walk_revisions())


async def check_database(database: Database) -> tuple[Check, Check]:
    """Whether the database answers, and whether its schema is at head."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), database.session() as session:
            rows = (await session.execute(text("SELECT version_num FROM alembic_version"))).all()
    except Exception as exc:  # any failure is the verdict, not an error of the check
        detail = _describe(exc)
        # The driver's own error (SQLAlchemy's wording quotes the statement, table included).
        if "alembic_version" in str(getattr(exc, "orig", None) or exc):
            return Check("database", True, "reachable"), Check("migrations", False, detail)
        return Check("database", False, detail), Check("migrations", False, "database unreachable")
    applied = frozenset(row[0] for row in rows)
    heads = migration_heads()
    if applied == heads:
        return Check("database", True, "reachable"), Check("migrations", True, "at head")
    if applied and not applied & known_revisions():
        # A newer release ran `columba migrate` before replacing this process (a rolling
        # deploy): its revisions are unknown here, and only expand-only migrations may run
        # live (README "Upgrading"), so this code keeps working until it is replaced.
        detail = f"database at {', '.join(sorted(applied))}, newer than this code: ready"
        return Check("database", True, "reachable"), Check("migrations", True, detail)
    detail = f"database at {', '.join(sorted(applied)) or 'nothing'}; code expects {', '.join(sorted(heads))}: run columba migrate"  # noqa: E501
    return Check("database", True, "reachable"), Check("migrations", False, detail)


async def check_redis(redis_url: str) -> Check:
    """Whether Redis answers a PING."""
    client = Redis.from_url(redis_url, socket_connect_timeout=CHECK_TIMEOUT_SECONDS)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await client.ping()
    except Exception as exc:  # any failure is the verdict
        return Check("redis", False, _describe(exc))
    finally:
        await client.aclose()
    return Check("redis", True, "reachable")


async def readiness(database: Database, redis_url: str) -> Readiness:
    """Run every check at once."""
    (db_check, migrations_check), redis_check = await asyncio.gather(
        check_database(database), check_redis(redis_url)
    )
    return Readiness((db_check, migrations_check, redis_check))


def _describe(exc: BaseException) -> str:
    """A one-line reason, without the URL (it may carry a password)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line[:200]}" if first_line else type(exc).__name__
