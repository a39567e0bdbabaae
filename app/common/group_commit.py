"""Group commit, the mechanism: items that arrive while a transaction is being written wait for
the next one and share it, `concurrency` transactions at a time, at most `max_batch` items
each. An idle committer writes each item on its own, at once.

Subclasses say how a batch is written and what each waiting caller learns (`_commit`); the SMTP
listener (app.submission.committer) and the send APIs (app.messages.committer) use it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True, slots=True)
class Pending(Generic[Item, Result]):
    """An item waiting for a transaction, and where its outcome goes."""

    item: Item
    outcome: asyncio.Future[Result]


class GroupCommit(Generic[Item, Result]):
    """Queues items and writes them in batches; `_commit` settles every item of a batch."""

    def __init__(self, *, concurrency: int, max_batch: int) -> None:
        self.concurrency = concurrency  # transactions in flight at once
        self.max_batch = max_batch
        self._pending: list[Pending[Item, Result]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        """Queue `item` for the next transaction; its outcome once that one is written."""
        outcome: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append(Pending(item, outcome))
        if len(self._tasks) < self.concurrency:
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await outcome

    async def close(self) -> None:
        """Let the transactions in flight finish."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _drain(self) -> None:
        """Write batches until nothing waits."""
        while self._pending:
            cut = self.max_batch
            batch, self._pending = self._pending[:cut], self._pending[cut:]
            await self._commit(batch)

    async def _commit(self, batch: list[Pending[Item, Result]]) -> None:
        """Write the batch and settle every item's outcome (also when writing fails)."""
        raise NotImplementedError


def settle(future: asyncio.Future[Result], outcome: Result | BaseException) -> None:
    """Hand the outcome to the waiting caller (gone if it went away meanwhile)."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
