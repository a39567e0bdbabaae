"""Group commit (app.common.group_commit) for the SMTP listener: messages whose DATA ends while
a transaction is being written wait for the next one and share it, so a busy listener commits
tens of messages at a time.

Each client still gets its 250 only after the transaction holding its message committed
(CHECKLIST 21). A message that fails its checks is left out of the transaction with its own
refusal; a database failure fails the whole batch with 451 4.3.0 and writes nothing, so every
client's retry is safe. An idle listener commits each message on its own, at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.common.group_commit import GroupCommit, Pending, settle
from app.core.db import Database
from app.core.errors import Forbidden, PayloadTooLarge, Unauthorized
from app.messages.service import AcceptPolicy
from app.submission import replies
from app.submission.data import too_big
from app.submission.models import SmtpSubmission
from app.submission.prepare import PreparedMessage
from app.submission.replies import Refusal
from app.submission.service import (
    Lookups,
    Transaction,
    authorise_submission,
    submission_row,
    write_submission,
)

log = logging.getLogger(__name__)

MAX_BATCH = 50  # messages per transaction: bounds the work a database failure sends back


@dataclass(frozen=True, slots=True)
class _Message:
    """A message waiting for a transaction: its envelope and its prepared content."""

    transaction: Transaction
    prepared: PreparedMessage


class GroupCommitter(GroupCommit[_Message, str]):
    """Stores prepared messages, one transaction per batch, `concurrency` batches at a time."""

    def __init__(self, database: Database, policy: AcceptPolicy, *, concurrency: int = 1) -> None:
        super().__init__(concurrency=concurrency, max_batch=MAX_BATCH)
        self.database = database
        self.policy = policy

    async def store(self, transaction: Transaction, prepared: PreparedMessage) -> str:
        """The message id once its transaction committed; Refusal when it was not stored."""
        return await self.submit(_Message(transaction, prepared))

    async def _commit(self, batch: list[Pending[_Message, str]]) -> None:
        """One transaction for the batch; every waiting client learns its outcome."""
        outcomes: list[str | Refusal] = []
        committed = False
        try:
            outcomes = await self._write(batch)
            committed = True
        except (SQLAlchemyError, OSError, TimeoutError):
            log.exception("SMTP submission: could not store %d message(s)", len(batch))
        except Exception:  # a bug must not leave clients waiting, nor be taken for success
            log.exception("SMTP submission: unexpected error storing %d message(s)", len(batch))
        finally:
            if not committed:  # also on cancellation: nothing was stored, say so to everyone
                outcomes = [replies.not_stored() for _ in batch]
            for pending, outcome in zip(batch, outcomes, strict=True):
                settle(pending.outcome, outcome)

    async def _write(self, batch: list[Pending[_Message, str]]) -> list[str | Refusal]:
        """Check and write every message of the batch, then commit; the outcome of each."""
        outcomes: list[str | Refusal] = []
        lookups, rows = Lookups(), list[SmtpSubmission]()
        async with self.database.session() as session:
            for pending in batch:
                outcomes.append(await self._add(session, pending.item, lookups, rows))
            # Added last, so that one INSERT writes the submissions rows of the whole batch.
            session.add_all(rows)
            await session.commit()
        return outcomes

    async def _add(
        self, session: AsyncSession, item: _Message, lookups: Lookups, rows: list[SmtpSubmission]
    ) -> str | Refusal:
        """Check the message, then write it; a refusal leaves nothing behind (the checks write
        nothing), so the other messages of the transaction are unaffected."""
        try:
            authorised = await authorise_submission(
                session,
                transaction=item.transaction,
                prepared=item.prepared,
                policy=self.policy,
                lookups=lookups,
            )
        except Forbidden as exc:
            return Refusal(550, "5.7.1", str(exc))
        except Unauthorized as exc:
            return Refusal(550, "5.7.8", f"Authentication credentials invalid: {exc}")
        except PayloadTooLarge:
            return too_big(self.policy.max_message_size)
        accepted = await write_submission(
            session,
            transaction=item.transaction,
            prepared=item.prepared,
            authorised=authorised,
            hostname=self.policy.hostname,
        )
        rows.append(
            submission_row(item.transaction, item.prepared, account_id=authorised.account_id)
        )
        return accepted.message_id
