"""Which storage failures make `columba inbound` answer 451 (the sender's MTA retries) rather
than keep the message unclassified: PostgreSQL starting up or shutting down is one (issue 17),
though SQLAlchemy reports it as a plain DBAPIError."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import DBAPIError

from app.bounces.inbound import _transient


def test_a_database_starting_up_is_transient() -> None:
    orig = asyncpg.CannotConnectNowError("the database system is starting up")
    error = DBAPIError("INSERT INTO inbound_messages ...", None, orig)
    error.__cause__ = orig
    assert _transient(error)


def test_data_the_database_refuses_is_not() -> None:
    orig = asyncpg.StringDataRightTruncationError("value too long for type character varying")
    error = DBAPIError("INSERT INTO inbound_messages ...", None, orig)
    error.__cause__ = orig
    assert not _transient(error)
