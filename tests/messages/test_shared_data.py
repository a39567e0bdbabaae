"""Top-level `template_data` is stored once, on the message, not copied into every recipient
row (issue 10, item 4), and merged under each recipient's own data when its copy is rendered,
giving the bytes the copies had before."""

from __future__ import annotations

import email
import email.policy
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import Text, cast, func, select

from app.core.config import Settings
from app.core.db import Database
from app.messages import dispatch
from app.messages.compose import Copy
from app.messages.models import Message, Recipient
from tests.fakes.mx import ScriptedMX
from tests.support import Sender
from tests.test_end_to_end import Deliver, send
from worker.runtime import Runtime


async def stored_sizes(db: Database, message_id: str) -> tuple[int, int]:
    """Characters stored for the message's template data and for all its recipients'
    personalisations, as the database holds them (JSON text)."""
    async with db.session() as session:
        shared = await session.scalar(
            select(func.length(cast(Message.template_data, Text))).where(Message.id == message_id)
        )
        personal = await session.scalar(
            select(func.sum(func.length(cast(Recipient.personalization, Text)))).where(
                Recipient.message_id == message_id
            )
        )
    return int(shared or 0), int(personal or 0)


async def test_shared_template_data_is_stored_once(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    # The audit's shape: 256 KB of shared data, 100 recipients with a little data each.
    shared = {f"field{i}": "x" * 1000 for i in range(256)}
    accepted = await send(
        client,
        sender,
        subject="Hi {{ name }}",
        text="{{ name }}: {{ field0 }}",
        template_engine="jinja",
        template_data=shared,
        recipients=[
            {"to": f"r{i}@example.test", "template_data": {"name": f"R{i}"}} for i in range(100)
        ],
    )
    shared_size, personal_size = await stored_sizes(db, accepted["id"])
    assert shared_size > 256_000  # once: about the size of the request
    assert personal_size < 100 * 200  # each row keeps only its own data (it was 25 MB)


async def claimed(db: Database, message_id: str) -> tuple[dispatch.ClaimedRecipient, ...]:
    """The message's recipients, leased."""
    async with db.session() as session:
        claim = await dispatch.claim(session, lease=timedelta(minutes=1), message_id=message_id)
        await session.commit()
    return claim.recipients


def body_of(data: bytes) -> str:
    """The text body of a received message."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).strip()


async def test_a_recipients_own_data_wins_over_the_shared_data_in_its_order(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    shared: dict[str, Any] = {"a": 1, "b": 2, "c": 3}
    await send(
        client,
        sender,
        subject="Keys",
        text="{{#each this}}{{@key}}={{this}};{{/each}}",
        template_engine="handlebars",
        template_data=shared,
        recipients=[
            {"to": "own@example.test", "template_data": {"b": "B", "d": 4}},
            {"to": "none@example.test"},
        ],
    )
    await deliver()
    received = {m.rcpt_tos[0]: body_of(m.data) for m in await mx.wait_for(2)}
    # As when the shared data was copied into each row: {**shared, **own}, in that order.
    assert received == {"own@example.test": "a=1;b=B;c=3;d=4;", "none@example.test": "a=1;b=2;c=3;"}


async def test_the_bytes_are_those_of_the_shared_data_copied_into_the_row(
    client: httpx.AsyncClient, sender: Sender, db: Database, settings: Settings
) -> None:
    shared = {"greeting": "Hello", "name": "everyone", "items": [1, 2]}
    own = {"name": "Ann"}
    accepted = await send(
        client,
        sender,
        subject="{{ greeting }}, {{ name }}",
        html="<p>{{ greeting }} {{ name }}</p>{% for i in items %}<i>{{ i }}</i>{% endfor %}",
        text="{{ greeting }} {{ name }}",
        template_engine="jinja",
        template_data=shared,
        recipients=[{"to": "ann@example.test", "template_data": own}],
    )
    async with db.session() as session:
        loaded = await dispatch.load_message(session, message_id=accepted["id"])
        [row] = (
            await session.execute(select(Recipient).where(Recipient.message_id == accepted["id"]))
        ).scalars()
    runtime = Runtime(settings)
    try:
        now, _ = runtime.composer.signed(loaded, row.personalization)
        # A row as written before: the shared data merged into it, none on the message (rows
        # accepted before the change are read this way too).
        loaded.message.template_data = None
        before = {**(row.personalization or {}), "data": {**shared, **own}}
        then, _ = runtime.composer.signed(loaded, before)
    finally:
        await runtime.close()
    assert now == then
    assert b"Hello Ann" in now


async def test_shared_data_without_a_template_sends_what_it_sent_before(
    client: httpx.AsyncClient, sender: Sender, db: Database, settings: Settings
) -> None:
    # Pointless, but possible: data and no template. A tab in the subject shows which path
    # the copy took (the personalised one makes it a space, as it always has for this send).
    accepted = await send(
        client, sender, subject="a\tb", template_data={"x": 1}, to=["ann@example.test"]
    )
    async with db.session() as session:
        loaded = await dispatch.load_message(session, message_id=accepted["id"])
    runtime = Runtime(settings)
    try:
        [copy] = runtime.composer.copies(loaded, await claimed(db, accepted["id"]))
        loaded.message.template_data = None
        before, _ = runtime.composer.signed(loaded, {"data": {"x": 1}})
    finally:
        await runtime.close()
    assert isinstance(copy, Copy)
    assert copy.data == before
