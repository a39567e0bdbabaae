"""Which database errors mean "unavailable, retry" (503 from the API, 451 from the listeners)
and which are bugs (500): as PostgreSQL restarts, asyncpg reports a refused connection raw,
a server starting up or shutting down by SQLSTATE, a dropped connection in several ways."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from app.core.db import database_unavailable


def wrapped(orig: BaseException) -> DBAPIError:
    """The error as SQLAlchemy raises it: a DBAPIError caused by the driver's."""
    error = DBAPIError("SELECT 1", None, orig)
    error.__cause__ = orig
    return error


@pytest.mark.parametrize(
    "orig",
    [
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.CannotConnectNowError("the database system is shutting down"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("connection is closed"),
    ],
    ids=repr,
)
def test_a_database_out_of_reach_is_unavailable(orig: BaseException) -> None:
    assert database_unavailable(orig)
    assert database_unavailable(wrapped(orig))


@pytest.mark.parametrize(
    "orig",
    [
        asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        ValueError("not a database error"),
    ],
    ids=repr,
)
def test_other_errors_are_not(orig: BaseException) -> None:
    assert not database_unavailable(orig)
    assert not database_unavailable(wrapped(orig))


def test_an_invalidated_connection_is_unavailable() -> None:
    error = DBAPIError("SELECT 1", None, Exception("?"), connection_invalidated=True)
    assert database_unavailable(error)
