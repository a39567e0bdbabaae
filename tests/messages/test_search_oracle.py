"""Every filter and combination of `search()` against a reference written in Python: a few
dozen varied sends through the API, then random filter combinations, each paged through with
a small limit and compared with what the sends say should match."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from app.core import clock
from app.core.db import Database
from app.messages import search
from app.messages.models import RecipientStatus
from app.messages.search import SearchFilters
from tests.support import Sender
from tests.test_end_to_end import send

ADDRESSES = ["Ann@a.test", "bob@a.test", "cy@B.test", "dee@b.test", "eve@c.test", "gone@c.test"]
SUBJECTS = ["Order 1 shipped", "Order 12 shipped", "order 2", "Welcome", "Re: Order 1"]
CATEGORIES = ["x", "y", "z"]


@dataclass
class Sent:
    """What one send asked for, and what the API answered."""

    id: str
    at: datetime
    sender: str
    subject: str
    categories: list[str]
    metadata: dict[str, str]
    recipients: dict[str, dict[str, str]] = field(default_factory=dict)  # email → own metadata

    def statuses(self) -> dict[str, str]:
        """Each recipient's status: `gone@` is suppressed."""
        return {
            email: "dropped" if email.startswith("gone") else "queued" for email in self.recipients
        }


async def _send_many(
    client: httpx.AsyncClient,
    sender: Sender,
    rng: random.Random,
    travel: Callable[[timedelta], None],
) -> list[Sent]:
    """Varied sends, an hour apart."""
    sent = []
    for _ in range(30):
        travel(timedelta(hours=1))
        emails = rng.sample(ADDRESSES, rng.randint(1, 3))
        item = Sent(
            id="",
            at=clock.now(),
            sender=sender.address(rng.choice(["orders", "Billing"])),
            subject=rng.choice(SUBJECTS),
            categories=rng.sample(CATEGORIES, rng.randint(0, 2)),
            metadata={"k": rng.choice(["1", "2"])} if rng.random() < 0.6 else {},
        )
        body: dict[str, Any] = {
            "from": item.sender,
            "subject": item.subject,
            "categories": item.categories,
            "metadata": item.metadata,
        }
        if rng.random() < 0.5:
            body["to"] = emails
            item.recipients = {email: {} for email in emails}
        else:
            own = [{"u": str(rng.randint(1, 3))} for _ in emails]
            body["recipients"] = [
                {"to": e, "metadata": m} for e, m in zip(emails, own, strict=True)
            ]
            item.recipients = dict(zip(emails, own, strict=True))
        item.id = (await send(client, sender, **body))["id"]
        sent.append(item)
    return sent


def _random_filters(rng: random.Random, sent: list[Sent]) -> SearchFilters:
    """One to three filters, with values that exist (mostly) or not."""
    start = sent[0].at + timedelta(hours=rng.randint(0, 30), minutes=30)
    choices: dict[str, Callable[[], Any]] = {
        "recipient": lambda: rng.choice([*ADDRESSES, "ANN@A.TEST", "nobody@a.test"]),
        "domain": lambda: rng.choice(["@a.test", "@B.TEST", "@c.test", "@none.test"]),
        "sender": lambda: rng.choice([s.sender for s in sent]).upper(),
        "subject": lambda: rng.choice(["order 1", "ORDER", "welcome", "re:", "nothing"]),
        "statuses": lambda: (rng.choice([RecipientStatus.QUEUED, RecipientStatus.DROPPED]),),
        "category": lambda: rng.choice([*CATEGORIES, "none"]),
        "metadata": lambda: tuple(
            rng.sample([("k", "1"), ("k", "2"), ("u", "1"), ("u", "3")], rng.randint(1, 2))
        ),
        "start": lambda: start,
        "end": lambda: start + timedelta(hours=rng.randint(1, 12)),
    }
    chosen = rng.sample(sorted(choices), rng.randint(1, 3))
    values = {name: choices[name]() for name in chosen}
    if "domain" in values:
        values["recipient"] = values.pop("domain")
    return SearchFilters(**values)


def _expected(filters: SearchFilters, sent: list[Sent]) -> list[tuple[str, list[str]]]:
    """(message id, matching recipients) of the sends the filters match, newest first."""
    found = []
    for item in sorted(sent, key=lambda s: s.id, reverse=True):
        if not _message_matches(filters, item):
            continue
        matching = [e.lower() for e in item.recipients if _recipient_matches(filters, item, e)]
        if matching:
            found.append((item.id, sorted(matching) if filters.selects_recipients else []))
    return found


def _message_matches(filters: SearchFilters, item: Sent) -> bool:
    """The message-level filters (metadata: the message's or one recipient's)."""
    every_metadata = [item.metadata, *item.recipients.values()]
    return (
        (filters.sender is None or filters.sender.lower() == item.sender.lower())
        and (filters.subject is None or item.subject.lower().startswith(filters.subject.lower()))
        and (filters.category is None or filters.category in item.categories)
        and all(any(m.get(k) == v for m in every_metadata) for k, v in filters.metadata)
        and (filters.start is None or item.at >= filters.start)
        and (filters.end is None or item.at < filters.end)
    )


def _recipient_matches(filters: SearchFilters, item: Sent, email: str) -> bool:
    """The recipient-level filters, on one recipient."""
    wanted = filters.recipient
    if wanted is not None:
        if wanted.startswith("@") and email.rpartition("@")[2].lower() != wanted[1:].lower():
            return False
        if not wanted.startswith("@") and wanted.lower() != email.lower():
            return False
    return not filters.statuses or item.statuses()[email] in filters.statuses


async def _all_pages(
    db: Database, account_id: str, filters: SearchFilters, limit: int
) -> list[Any]:
    """Every result, following the cursor."""
    results: list[Any] = []
    cursor = None
    async with db.session() as session:
        while True:
            page = await search.search(session, account_id, filters, cursor, limit)
            results += page.messages
            if page.next_cursor is None:
                return results
            cursor = page.next_cursor


async def test_search_agrees_with_a_reference_on_random_combinations(
    client: httpx.AsyncClient, sender: Sender, db: Database, travel: Callable[[timedelta], None]
) -> None:
    rng = random.Random(15)
    response = await client.post(
        "/v1/suppressions",
        headers=sender.headers,
        json={"suppressions": [{"email": "gone@c.test"}]},
    )
    assert response.status_code == 201, response.text
    sent = await _send_many(client, sender, rng, travel)
    checked = 0
    for _ in range(150):
        filters = _random_filters(rng, sent)
        expected = _expected(filters, sent)
        results = await _all_pages(db, sender.account_id, filters, rng.choice([1, 3, 50]))
        got = [
            (
                m.id,
                sorted(r.email.lower() for r in m.recipients) if filters.selects_recipients else [],
            )
            for m in results
        ]
        assert got == expected, filters
        checked += bool(expected)
    assert checked > 30  # most combinations found something to compare
