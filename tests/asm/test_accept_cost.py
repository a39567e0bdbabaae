"""Group opt-outs on the accept path: one lookup for every send of a group-committed
transaction (never one per recipient or per send), none for sends without a group."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from app.accounts import service as accounts
from app.accounts.models import ApiKey
from app.accounts.service import Principal
from app.common.fields import EmailAddress
from app.core.db import Database
from app.messages import service as messages
from app.messages.service import AcceptPolicy, Checked
from app.messages.submission import Personalization, Submission
from tests.asm.test_api import create
from tests.asm.test_sends import opt_out
from tests.support import Sender, statements_run

POLICY = AcceptPolicy(
    hostname="mta.columba.test", max_message_size=10_000_000, require_verified_domains=True
)


def submission(sender: Sender, to: list[str], group_id: int | None) -> Submission:
    """A plain send to `to` with the group."""
    return Submission(
        sender=EmailAddress(email=sender.address()),
        personalizations=(Personalization(to=tuple(EmailAddress(email=a) for a in to)),),
        subject="Hello",
        text="Hi.",
        asm_group_id=group_id,
    )


async def principal_of(db: Database, sender: Sender) -> Principal:
    """The sender's key as the API authenticates it."""
    async with db.session() as session:
        key_id = await session.scalar(
            select(ApiKey.id).where(ApiKey.account_id == sender.account_id)
        )
        assert key_id is not None
        found = await accounts.active_principal(session, api_key_id=key_id)
    assert found is not None
    return found


async def write_counting(db: Database, checked: list[Checked]) -> tuple[list[Any], list[str]]:
    """write_messages in one transaction; what it accepted, and its group opt-out lookups."""
    with statements_run(db) as run:
        async with db.session() as session:
            accepted = await messages.write_messages(session, checked)
            await session.commit()
    return accepted, [statement for statement in run if "group_suppressions" in statement]


async def checked(db: Database, principal: Principal, sends: list[Submission]) -> list[Checked]:
    """Each send checked, as each request checks its own before the group commit."""
    found = []
    async with db.session() as session:
        for send in sends:
            one = await messages.check(session, principal=principal, submission=send, policy=POLICY)
            assert one is not None
            found.append(one)
    return found


async def test_one_lookup_for_every_send_of_a_transaction(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    news = await create(client, sender, "News")
    promo = await create(client, sender, "Promo")
    await opt_out(client, sender, news["id"], "x@example.test", "user599@example.test")
    await opt_out(client, sender, promo["id"], "y@example.test")
    principal = await principal_of(db, sender)
    both = ["x@example.test", "y@example.test"]
    bulk = [f"user{i}@example.test" for i in range(600)]  # more than one chunk of 500
    sends = await checked(
        db,
        principal,
        [
            submission(sender, [*both, "z@example.test"], news["id"]),
            submission(sender, both, promo["id"]),
            submission(sender, both, None),
            submission(sender, bulk, news["id"]),
        ],
    )
    accepted, lookups = await write_counting(db, sends)
    assert len(lookups) == 2, lookups  # 603 addresses: two chunks of 500, for all sends
    dropped = [{r.email for r in a.recipients if r.status == "dropped"} for a in accepted]
    assert dropped == [{"x@example.test"}, {"y@example.test"}, set(), {"user599@example.test"}]


async def test_no_lookup_without_a_group(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    news = await create(client, sender, "News")
    await opt_out(client, sender, news["id"], "x@example.test")
    principal = await principal_of(db, sender)
    sends = await checked(db, principal, [submission(sender, ["x@example.test"], None)])
    [accepted], lookups = await write_counting(db, sends)
    assert lookups == []
    assert [r.status for r in accepted.recipients] == ["queued"]
