"""Group commit (app.common.group_commit) for the SMTP listener: messages whose DATA ends while
a transaction is being written wait for the next one and share it, so a busy listener commits
tens of messages at a time, written with one statement per table (write_messages), and wakes
their deliveries with one call once it committed.

Each client still gets its 250 only after the transaction holding its message committed
(CHECKLIST 21). A message that fails its checks is left out of the transaction with its own
refusal; a database failure fails the whole batch with 451 4.3.0 and writes nothing, so every
client's retry is safe. An idle listener commits each message on its own, at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.common.group_commit import GroupCommit, Pending, settle
from app.core.db import Database
from app.core.errors import BadRequest, Forbidden, PayloadTooLarge, Unauthorized
from app.core.queue import Queue
from app.messages import service as messages
from app.messages.service import AcceptPolicy
from app.submission import replies
from app.submission.data import too_big
from app.submission.models import SmtpSubmission
from app.submission.prepare import PreparedMessage
from app.submission.replies import Refusal
from app.submission.service import (
    Authorised,
    Lookups,
    Transaction,
    authorise_submission,
    checked_submission,
    submission_row,
)

log = logging.getLogger(__name__)

MAX_BATCH = 50  # messages per transaction: bounds the work a database failure sends back
_SUBMISSIONS: Table = SmtpSubmission.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class _Message:
    """A message waiting for a transaction: its envelope and its prepared content."""

    transaction: Transaction
    prepared: PreparedMessage


class GroupCommitter(GroupCommit[_Message, str]):
    """Stores prepared messages, one transaction per batch, `concurrency` batches at a time."""

    def __init__(
        self, database: Database, queue: Queue, policy: AcceptPolicy, *, concurrency: int = 1
    ) -> None:
        super().__init__(concurrency=concurrency, max_batch=MAX_BATCH)
        self.database = database
        self.queue = queue
        self.policy = policy

    async def store(self, transaction: Transaction, prepared: PreparedMessage) -> str:
        """The message id once its transaction committed (its delivery woken unless it is
        scheduled); Refusal when it was not stored."""
        return await self.submit(_Message(transaction, prepared))

    async def _commit(self, batch: list[Pending[_Message, str]]) -> None:
        """One transaction for the batch, then one wake-up for its deliveries; every waiting
        client learns its outcome."""
        outcomes: list[str | Refusal] | None = None
        try:
            outcomes = await self._write(batch)
        except (SQLAlchemyError, OSError, TimeoutError):
            log.exception("SMTP submission: could not store %d message(s)", len(batch))
        except Exception:  # a bug must not leave clients waiting, nor be taken for success
            log.exception("SMTP submission: unexpected error storing %d message(s)", len(batch))
        finally:
            if outcomes is None:  # also on cancellation: nothing was stored, say so to everyone
                for pending in batch:
                    settle(pending.outcome, replies.not_stored())
        if outcomes is None:
            return
        try:
            await self._wake(batch, outcomes)
        finally:  # committed is committed: the sweeper wakes what this did not
            for pending, outcome in zip(batch, outcomes, strict=True):
                settle(pending.outcome, outcome)

    async def _write(self, batch: list[Pending[_Message, str]]) -> list[str | Refusal]:
        """Check every message of the batch, write those that passed (one statement per table)
        and commit; the outcome of each."""
        outcomes: list[str | Refusal] = []
        lookups = Lookups()
        sends: list[messages.Checked] = []
        rows: list[dict[str, Any]] = []
        async with self.database.session() as session:
            for pending in batch:
                item = pending.item
                authorised = await self._authorise(session, item, lookups)
                if isinstance(authorised, Refusal):
                    outcomes.append(authorised)
                    continue
                sends.append(
                    checked_submission(
                        item.transaction,
                        item.prepared,
                        authorised=authorised,
                        hostname=self.policy.hostname,
                        tombstone_key=self.policy.tombstone_key,
                    )
                )
                rows.append(submission_row(item.transaction, account_id=authorised.account_id))
                outcomes.append(item.transaction.message_id)
            if sends:
                await messages.write_messages(session, sends)
                await session.execute(insert(_SUBMISSIONS), rows)
                await session.commit()
        return outcomes

    async def _authorise(
        self, session: AsyncSession, item: _Message, lookups: Lookups
    ) -> Authorised | Refusal:
        """The checks of the send APIs; a refusal leaves the message out of the transaction
        (the checks write nothing), so the other messages are unaffected."""
        try:
            return await authorise_submission(
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
        except BadRequest as exc:  # X-SMTPAPI names what the account does not have
            return replies.refused_content(f"X-SMTPAPI: {exc}")

    async def _wake(
        self, batch: list[Pending[_Message, str]], outcomes: list[str | Refusal]
    ) -> None:
        """One wake-up for the stored messages of the batch; a scheduled message is woken by
        the sweeper when it is due. Never raises: the sweeper covers a lost wake-up."""
        due = [
            outcome
            for pending, outcome in zip(batch, outcomes, strict=True)
            if isinstance(outcome, str) and pending.item.prepared.options.send_at is None
        ]
        if not due:
            return
        try:
            await self.queue.wake_deliveries(due)
        except Exception:
            log.exception(
                "SMTP submission: could not wake the deliveries of %d message(s)", len(due)
            )
