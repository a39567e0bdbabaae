"""Counting accepted messages once their transaction commits: write_messages notes what it
wrote on the session, and the commit adds it to the counters (a rollback forgets it), one
increment per transaction however many sends a group commit holds."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.observability import metrics

_NOTED = "columba.accepted"


def note_accepted(session: Session, *, messages: int, statuses: Counter[str]) -> None:
    """Remember what this transaction accepted, to count when it commits."""
    noted: tuple[int, Counter[str]] | None = session.info.get(_NOTED)
    if noted is not None:
        messages, statuses = messages + noted[0], statuses + noted[1]
    session.info[_NOTED] = (messages, statuses)


@event.listens_for(Session, "after_commit")
def _count_committed(session: Session) -> None:
    """Add what the committed transaction accepted."""
    noted: tuple[int, Counter[str]] | None = session.info.pop(_NOTED, None)
    if noted is None:
        return
    metrics.MESSAGES_ACCEPTED.inc(noted[0])
    for status, count in noted[1].items():
        metrics.RECIPIENTS_ACCEPTED.labels(status).inc(count)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session, *_: Any) -> None:
    """Nothing of a rolled-back transaction was accepted."""
    session.info.pop(_NOTED, None)
