"""`GET /v1/messages`: the activity search, over sends accepted through the API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

import httpx
import pytest

from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, make_key, make_sender
from tests.test_end_to_end import Deliver, send


async def find(
    client: httpx.AsyncClient, sender: Sender | dict[str, str], **params: Any
) -> dict[str, Any]:
    """GET /v1/messages with these query parameters; returns the 200 body."""
    headers = sender.headers if isinstance(sender, Sender) else sender
    response = await client.get("/v1/messages", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def found_ids(client: httpx.AsyncClient, sender: Sender, **params: Any) -> list[str]:
    """The ids of the first page found."""
    return [m["id"] for m in (await find(client, sender, **params))["messages"]]


async def bad(client: httpx.AsyncClient, sender: Sender, **params: Any) -> dict[str, Any]:
    """GET /v1/messages expecting 400; returns the single error."""
    response = await client.get("/v1/messages", params=params, headers=sender.headers)
    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert set(error) == {"message", "field", "help"}
    return dict(error)


async def sent(client: httpx.AsyncClient, sender: Sender, **fields: Any) -> str:
    """POST /v1/send; returns the message id."""
    return str((await send(client, sender, **fields))["id"])


async def test_recipient_is_exact_and_case_insensitive(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    ann = await sent(client, sender, to=["Ann.Lee@Example.test"])
    await sent(client, sender, to=["ann.leeds@example.test"])
    await sent(client, sender, to=["bob@example.test"])
    assert await found_ids(client, sender, recipient="ann.lee@EXAMPLE.TEST") == [ann]
    assert await found_ids(client, sender, recipient="ann@example.test") == []


async def test_recipient_domain_form_finds_every_address_there(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    first = await sent(client, sender, to=["a@shop.test"])
    await sent(client, sender, to=["a@other.test"])
    second = await sent(client, sender, to=["b@SHOP.test", "c@other.test"])
    assert await found_ids(client, sender, recipient="@Shop.Test") == [second, first]


async def test_only_matching_recipients_are_listed_with_counts_of_all(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    message = await sent(client, sender, to=["a@example.test", "b@example.test"], cc=["c@x.test"])
    [found] = (await find(client, sender, recipient="b@example.test"))["messages"]
    assert [r["email"] for r in found["recipients"]] == ["b@example.test"]
    assert found["recipient_count"] == 3
    assert found["status_counts"] == {"queued": 3}
    assert found["url"] == f"/v1/messages/{message}"
    [unfiltered] = (await find(client, sender))["messages"]
    assert sorted(r["email"] for r in unfiltered["recipients"]) == [
        "a@example.test",
        "b@example.test",
        "c@x.test",
    ]


async def test_from_subject_category_template_and_batch(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    other_from = await sent(client, sender, **{"from": sender.address("Billing")}, to=["a@x.test"])
    subject = await sent(client, sender, subject="Your Order #42 shipped", to=["a@x.test"])
    await sent(client, sender, subject="Re: your order #42", to=["a@x.test"])
    literal = await sent(client, sender, subject="100% off_today", to=["a@x.test"])
    category = await sent(client, sender, categories=["receipts", "eu"], to=["a@x.test"])
    template = await _template(client, sender)
    templated = await sent(client, sender, subject=None, text=None, template_id=template,
                           to=["a@x.test"])  # fmt: skip
    batch = (await client.post("/v3/mail/batch", headers=sender.headers)).json()["batch_id"]
    batched = await sent(client, sender, batch_id=batch, to=["a@x.test"])

    assert await found_ids(client, sender, **{"from": sender.address("billing")}) == [other_from]
    assert await found_ids(client, sender, subject="your order") == [subject]
    assert await found_ids(client, sender, subject="100% off_") == [literal]
    assert await found_ids(client, sender, subject="100_") == []  # _ is not a wildcard
    assert await found_ids(client, sender, category="eu") == [category]
    assert await found_ids(client, sender, category="EU") == []
    assert await found_ids(client, sender, template_id=template) == [templated]
    assert await found_ids(client, sender, batch_id=batch) == [batched]


async def _template(client: httpx.AsyncClient, sender: Sender) -> str:
    """A stored template with an active version; returns its id."""
    version = {"name": "v1", "subject": "Hi {{ name }}", "text": "{{ name }}"}
    response = await client.post(
        "/v1/templates", headers=sender.headers, json={"name": "t", "version": version}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_metadata_of_the_message_and_of_each_recipient(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    shared = await sent(client, sender, metadata={"order": "42", "shop": "eu"}, to=["a@x.test"])
    personal = await sent(
        client,
        sender,
        metadata={"shop": "eu"},
        recipients=[
            {"to": "a@x.test", "metadata": {"user": "7"}},
            {"to": "b@x.test", "metadata": {"user": "8"}},
        ],
    )
    await sent(client, sender, metadata={"order": "43"}, to=["a@x.test"])
    assert await found_ids(client, sender, **{"metadata.order": "42"}) == [shared]
    assert await found_ids(client, sender, **{"metadata.user": "8"}) == [personal]
    assert await found_ids(client, sender, **{"metadata.shop": "eu"}) == [personal, shared]
    both = {"metadata.shop": "eu", "metadata.order": "42"}
    assert await found_ids(client, sender, **both) == [shared]


async def test_status_is_a_recipients_current_status(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    mx.reply_at("RCPT", 550, "no such user", to="gone@example.test")
    bounced = await sent(client, sender, to=["gone@example.test", "ok@example.test"])
    delivered = await sent(client, sender, to=["ok@example.test"])
    await deliver()
    response = await client.post(
        "/v1/suppressions", headers=sender.headers, json={"suppressions": [{"email": "x@y.test"}]}
    )
    assert response.status_code == 201, response.text
    dropped = await sent(client, sender, to=["x@y.test"])

    assert await found_ids(client, sender, status="bounced") == [bounced]
    assert await found_ids(client, sender, status="delivered") == [delivered, bounced]
    assert await found_ids(client, sender, status="dropped") == [dropped]
    [found] = (await find(client, sender, status="bounced"))["messages"]
    [gone] = found["recipients"]
    assert (gone["email"], gone["status"], gone["last_code"]) == (
        "gone@example.test",
        "bounced",
        550,
    )
    assert found["status_counts"] == {"bounced": 1, "delivered": 1}
    # Recipient and status hold for the same recipient.
    same = {"recipient": "ok@example.test", "status": "bounced"}
    assert await found_ids(client, sender, **same) == []


async def test_start_and_end_bound_the_acceptance_time(
    client: httpx.AsyncClient, sender: Sender, travel: Callable[[timedelta], None]
) -> None:
    early = await sent(client, sender, to=["a@x.test"])
    travel(timedelta(hours=2))
    middle_time = clock.now()
    middle = await sent(client, sender, to=["a@x.test"])
    travel(timedelta(hours=2))
    late = await sent(client, sender, to=["a@x.test"])
    start = (middle_time - timedelta(minutes=1)).isoformat()
    end = (middle_time + timedelta(minutes=1)).isoformat()
    assert await found_ids(client, sender, start=start) == [late, middle]
    assert await found_ids(client, sender, end=end) == [middle, early]
    assert await found_ids(client, sender, start=start, end=end) == [middle]
    unix = str(int((middle_time + timedelta(minutes=1)).timestamp()))
    assert await found_ids(client, sender, start=unix) == [late]
    naive = (middle_time - timedelta(minutes=1)).astimezone(UTC).replace(tzinfo=None)
    assert await found_ids(client, sender, start=naive.isoformat()) == [late, middle]
    day = (middle_time + timedelta(days=1)).date().isoformat()
    assert await found_ids(client, sender, start=day) == []


async def test_pages_have_no_duplicates_or_gaps_while_mail_arrives(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    existing = [await sent(client, sender, to=[f"r{i}@x.test"]) for i in range(23)]
    seen: list[str] = []
    cursor: str | None = None
    arrived = []
    while True:
        params: dict[str, Any] = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = await find(client, sender, **params)
        seen += [m["id"] for m in page["messages"]]
        arrived.append(await sent(client, sender, to=["late@x.test"]))  # lands above the cursor
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(existing))
    assert len(arrived) == 5
    assert await found_ids(client, sender, limit=5) == list(reversed(arrived))


async def test_a_full_last_page_ends_with_no_cursor_after_it(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    ids = [await sent(client, sender, to=["a@x.test"]) for _ in range(4)]
    first = await find(client, sender, limit=2)
    second = await find(client, sender, limit=2, cursor=first["next_cursor"])
    assert [m["id"] for m in first["messages"] + second["messages"]] == list(reversed(ids))
    assert second["next_cursor"] is None


async def test_accounts_see_only_their_own_messages(
    client: httpx.AsyncClient, sender: Sender, db: Database, dns_server: FakeDNS, settings: Settings
) -> None:
    other = await make_sender(db, dns_server, settings, account="globex", domain="globex.test")
    mine = await sent(client, sender, to=["shared@x.test"], categories=["c"], metadata={"k": "v"})
    theirs = await sent(client, other, to=["shared@x.test"], categories=["c"], metadata={"k": "v"})
    for params in ({}, {"recipient": "shared@x.test"}, {"category": "c"}, {"metadata.k": "v"},
                   {"recipient": "@x.test"}, {"status": "queued"}):  # fmt: skip
        assert await found_ids(client, sender, **params) == [mine]
        assert await found_ids(client, other, **params) == [theirs]
    # A cursor names a position, not a message: another account's gets its own messages.
    newer = await sent(client, other, to=["shared@x.test"])
    page = await find(client, other, limit=1)
    assert [m["id"] for m in page["messages"]] == [newer]
    assert await found_ids(client, sender, cursor=page["next_cursor"]) == [mine]


async def test_the_messages_read_scope_is_required(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    message = await sent(client, sender, to=["a@x.test"])
    reader = await make_key(db, account="acme", scopes=["messages.read"])
    sender_only = await make_key(db, account="acme", scopes=["mail.send"])
    found = await find(client, {"Authorization": f"Bearer {reader}"})
    assert [m["id"] for m in found["messages"]] == [message]
    refused = await client.get("/v1/messages", headers={"Authorization": f"Bearer {sender_only}"})
    assert refused.status_code == 403
    assert (await client.get("/v1/messages")).status_code == 401


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": "yesterday"}, "start"),
        ({"end": "2026-13-01"}, "end"),
        ({"start": "2026-12-02", "end": "2026-12-01"}, "start"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"status": "lost"}, "status"),
        ({"recipient": "nobody"}, "recipient"),
        ({"recipient": ""}, "recipient"),
        ({"subject": "x" * 321}, "subject"),
        ({"recipeint": "a@x.test"}, "recipeint"),
        ({"metadata.k": ""}, "metadata.k"),
    ],
)
async def test_bad_filters_are_400_in_sendgrids_shape(
    client: httpx.AsyncClient, sender: Sender, params: dict[str, str], field: str
) -> None:
    error = await bad(client, sender, **params)
    assert error["field"] == field
    assert error["message"]


async def test_limit_bounds_are_accepted(client: httpx.AsyncClient, sender: Sender) -> None:
    ids = [await sent(client, sender, to=["a@x.test"]) for _ in range(2)]
    assert await found_ids(client, sender, limit=1) == ids[1:]
    assert await found_ids(client, sender, limit=1000) == list(reversed(ids))


async def test_a_search_before_any_send_is_empty(client: httpx.AsyncClient, sender: Sender) -> None:
    assert await find(client, sender) == {"messages": [], "next_cursor": None}
