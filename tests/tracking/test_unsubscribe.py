"""/u/{token}: RFC 8058's one-click POST, the page (which never unsubscribes by itself) and
its forms, with real tokens of real delivered recipients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import httpx
from sqlalchemy import delete, select

from app.asm import service as asm
from app.asm.models import GroupSuppression, UnsubscribeGroup
from app.core.db import Database
from app.messages.models import Message
from app.tracking.models import TrackingSettings
from app.tracking.tokens import Kind
from tests.stats.test_stats import stats, today
from tests.support import Sender
from tests.test_end_to_end import send
from tests.tracking.conftest import Delivered, Tokens, feed, make_group

DeliverTo = Callable[..., Awaitable[list[Delivered]]]
ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"  # RFC 8058 §3.2, exactly


async def one_click(client: httpx.AsyncClient, path: str) -> httpx.Response:
    """The POST a mailbox provider makes: no cookie, no credentials, follows no redirect."""
    return await client.post(path, content=ONE_CLICK_BODY, headers=ONE_CLICK)


async def status_of_next_send(client: httpx.AsyncClient, sender: Sender, to: str) -> str:
    """The status a new send to `to` is accepted with."""
    accepted = await send(client, sender, to=[to])
    return str(accepted["recipients"][0]["status"])


async def group_members_out(db: Database, group_id: int) -> list[str]:
    """The addresses that opted out of a group."""
    async with db.session() as session:
        query = select(GroupSuppression.email).where(GroupSuppression.group_id == group_id)
        return list((await session.execute(query)).scalars())


async def test_one_click_post_unsubscribes_and_the_next_send_is_dropped(
    client: httpx.AsyncClient, sender: Sender, deliver_to: DeliverTo, token_path: Tokens
) -> None:
    [alice] = await deliver_to("alice@example.test")
    response = await one_click(client, token_path(alice, Kind.UNSUBSCRIBE))
    assert response.status_code == 200
    assert "location" not in response.headers
    assert "set-cookie" not in response.headers
    assert await status_of_next_send(client, sender, "alice@example.test") == "dropped"
    [unsubscribed] = await feed(client, sender, "unsubscribed")
    assert unsubscribed["recipient_id"] == alice.recipient_id
    assert unsubscribed["data"]["source"] == "one_click"
    assert (await stats(client, sender, start=today()))["totals"]["unsubscribes"] == 1


async def test_one_click_is_idempotent(
    client: httpx.AsyncClient, sender: Sender, deliver_to: DeliverTo, token_path: Tokens
) -> None:
    [alice] = await deliver_to("alice@example.test")
    path = token_path(alice, Kind.UNSUBSCRIBE)
    for _ in range(3):
        assert (await one_click(client, path)).status_code == 200
    assert len(await feed(client, sender, "unsubscribed")) == 1
    assert (await stats(client, sender, start=today()))["totals"]["unsubscribes"] == 1


async def test_one_click_as_multipart_form_data(
    client: httpx.AsyncClient, sender: Sender, deliver_to: DeliverTo, token_path: Tokens
) -> None:
    [alice] = await deliver_to("alice@example.test")
    # RFC 8058 §3.2 lets the POST be multipart/form-data too.
    response = await client.post(
        token_path(alice, Kind.UNSUBSCRIBE), files={"List-Unsubscribe": (None, "One-Click")}
    )
    assert response.status_code == 200
    assert len(await feed(client, sender, "unsubscribed")) == 1


async def test_the_page_never_unsubscribes(
    client: httpx.AsyncClient, sender: Sender, deliver_to: DeliverTo, token_path: Tokens
) -> None:
    [alice] = await deliver_to("alice@example.test")
    for _ in range(3):  # a link scanner, a preview, the person
        page = await client.get(token_path(alice, Kind.UNSUBSCRIBE))
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
    assert "alice@example.test" in page.text
    assert 'method="post"' in page.text
    assert "all mail of this sender" in page.text
    assert await feed(client, sender, "unsubscribed", "group_unsubscribed") == []
    assert await status_of_next_send(client, sender, "alice@example.test") == "queued"


async def test_a_group_link_unsubscribes_from_the_group_only(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    db: Database,
) -> None:
    deals = await make_group(db, sender, "Deals", "Weekly offers")
    [alice] = await deliver_to("alice@example.test")
    path = token_path(alice, Kind.UNSUBSCRIBE, group_id=deals)
    page = await client.get(path)
    assert "Deals" in page.text
    assert "Weekly offers" in page.text
    assert (await one_click(client, path)).status_code == 200
    assert (await one_click(client, path)).status_code == 200
    assert await group_members_out(db, deals) == ["alice@example.test"]
    [left] = await feed(client, sender, "group_unsubscribed")
    assert left["data"]["asm_group_id"] == deals
    assert await feed(client, sender, "unsubscribed") == []
    assert (await stats(client, sender, start=today()))["totals"]["unsubscribes"] == 1
    # Other mail still goes out.
    assert await status_of_next_send(client, sender, "alice@example.test") == "queued"


async def test_a_global_link_unsubscribes_from_everything_even_with_a_group(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    db: Database,
) -> None:
    deals = await make_group(db, sender, "Deals")
    [alice] = await deliver_to("alice@example.test")
    path = token_path(alice, Kind.GLOBAL_UNSUBSCRIBE, group_id=deals)
    assert (await one_click(client, path)).status_code == 200
    assert await group_members_out(db, deals) == []
    assert await status_of_next_send(client, sender, "alice@example.test") == "dropped"


async def test_resubscribing_from_the_page_restores_delivery(
    client: httpx.AsyncClient, sender: Sender, deliver_to: DeliverTo, token_path: Tokens
) -> None:
    [alice] = await deliver_to("alice@example.test")
    path = token_path(alice, Kind.UNSUBSCRIBE)
    assert (await client.post(path, data={"action": "unsubscribe"})).status_code == 200
    assert await status_of_next_send(client, sender, "alice@example.test") == "dropped"
    page = await client.get(path)
    assert "resubscribe_all" in page.text  # the way back is offered
    response = await client.post(path, data={"action": "resubscribe_all"})
    assert response.status_code == 200
    assert "subscribed to all mail again" in response.text
    assert await status_of_next_send(client, sender, "alice@example.test") == "queued"
    [back] = await feed(client, sender, "group_resubscribed")
    assert back["data"]["source"] == "page"
    assert "asm_group_id" not in back["data"]


async def test_group_resubscribe_restores_the_groups_mail(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    db: Database,
) -> None:
    deals = await make_group(db, sender, "Deals")
    [alice] = await deliver_to("alice@example.test")
    path = token_path(alice, Kind.UNSUBSCRIBE, group_id=deals)
    await one_click(client, path)
    assert (await client.post(path, data={"action": "resubscribe"})).status_code == 200
    assert await group_members_out(db, deals) == []
    [back] = await feed(client, sender, "group_resubscribed")
    assert back["data"]["asm_group_id"] == deals


async def test_preferences_page_lists_groups_to_display_and_saves_choices(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    db: Database,
) -> None:
    deals = await make_group(db, sender, "Deals")
    news = await make_group(db, sender, "<b>News</b> & more")
    other = await make_group(db, sender, "Hidden")
    [alice] = await deliver_to("alice@example.test")
    async with db.session() as session:
        await asm.unsubscribe(
            session, account_id=sender.account_id, email=alice.email, group_id=news
        )
        await session.commit()
    # The message shows two groups; a preferences token, no group of its own.
    async with db.session() as session:
        message = await session.get(Message, alice.message_id)
        assert message is not None
        message.settings = {**message.settings, "asm": {"groups_to_display": [deals, news]}}
        await session.commit()
    path = token_path(alice, Kind.PREFERENCES)
    page = await client.get(path)
    assert f'name="group" value="{deals}" checked' in page.text
    assert f'name="group" value="{news}">' in page.text  # opted out: unchecked
    assert "&lt;b&gt;News&lt;/b&gt; &amp; more" in page.text
    assert "<b>News</b>" not in page.text
    assert "Hidden" not in page.text
    # Keep News, leave Deals; a group the page did not offer is ignored.
    response = await client.post(path, data={"action": "preferences", "group": [news, other]})
    assert response.status_code == 200
    assert await group_members_out(db, deals) == ["alice@example.test"]
    assert await group_members_out(db, news) == []
    assert await group_members_out(db, other) == []
    types = [
        e["type"] for e in await feed(client, sender, "group_unsubscribed", "group_resubscribed")
    ]
    assert sorted(types) == ["group_resubscribed", "group_unsubscribed"]


async def test_the_landing_text_is_shown_escaped(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    db: Database,
) -> None:
    async with db.session() as session:
        session.add(
            TrackingSettings(
                account_id=sender.account_id,
                subscription_landing="<p>Sorry to see you go</p><script>alert(1)</script>",
            )
        )
        await session.commit()
    [alice] = await deliver_to("o'brien&co@example.test")
    page = await client.get(token_path(alice, Kind.UNSUBSCRIBE))
    assert "Sorry to see you go" in page.text
    assert "<script" not in page.text
    assert "o&#x27;brien&amp;co@example.test" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


async def test_bad_tokens_are_404_and_change_nothing(
    client: httpx.AsyncClient, sender: Sender, deliver_to: DeliverTo, token_path: Tokens
) -> None:
    [alice] = await deliver_to("alice@example.test")
    path = token_path(alice, Kind.UNSUBSCRIBE)
    head, _, token = path.rpartition("/")
    flipped = f"{head}/{token[:10]}{'A' if token[10] != 'A' else 'B'}{token[11:]}"
    opened = token_path(alice, Kind.OPEN)
    for bad in (flipped, "/u/" + opened.rpartition("/")[2], "/u/nothing"):
        assert (await client.get(bad)).status_code == 404
        assert (await one_click(client, bad)).status_code == 404
    assert await feed(client, sender, "unsubscribed") == []
    assert await status_of_next_send(client, sender, "alice@example.test") == "queued"


async def test_an_unknown_form_action_is_400(
    client: httpx.AsyncClient, deliver_to: DeliverTo, token_path: Tokens
) -> None:
    [alice] = await deliver_to("alice@example.test")
    response = await client.post(token_path(alice, Kind.UNSUBSCRIBE), data={"x": "y"})
    assert response.status_code == 400


async def test_one_click_works_after_the_message_is_gone(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    db: Database,
    travel: Callable[[timedelta], None],
) -> None:
    [alice] = await deliver_to("alice@example.test")
    path = token_path(alice, Kind.UNSUBSCRIBE)
    async with db.session() as session:  # as retention deletes old messages
        await session.execute(delete(Message).where(Message.id == alice.message_id))
        await session.commit()
    assert (await one_click(client, path)).status_code == 200
    [unsubscribed] = await feed(client, sender, "unsubscribed")
    assert unsubscribed["message_id"] is None
    assert unsubscribed["data"]["email"] == "alice@example.test"
    travel(timedelta(minutes=1))
    assert (await client.get(token_path(alice, Kind.OPEN))).status_code == 200
    assert await feed(client, sender, "opened") == []


async def test_a_form_over_16_kib_is_refused_without_effect(
    client: httpx.AsyncClient, sender: Sender, deliver_to: DeliverTo, token_path: Tokens
) -> None:
    [alice] = await deliver_to("alice@example.test")
    body = ONE_CLICK_BODY + b"&padding=" + b"x" * 17_000
    path = token_path(alice, Kind.UNSUBSCRIBE)

    async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        yield body

    for content in (body, streamed()):
        response = await client.post(path, content=content, headers=ONE_CLICK)
        assert response.status_code == 400
    assert await feed(client, sender, "unsubscribed") == []


async def test_concurrent_one_clicks_record_one_unsubscribe(
    client: httpx.AsyncClient, sender: Sender, deliver_to: DeliverTo, token_path: Tokens
) -> None:
    [alice] = await deliver_to("alice@example.test")
    path = token_path(alice, Kind.UNSUBSCRIBE)
    answers = await asyncio.gather(*(one_click(client, path) for _ in range(20)))
    assert all(answer.status_code == 200 for answer in answers)
    assert len(await feed(client, sender, "unsubscribed")) == 1


async def test_the_preferences_link_offers_every_group_without_groups_to_display(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    db: Database,
) -> None:
    deals = await make_group(db, sender, "Deals")
    news = await make_group(db, sender, "News")
    [alice] = await deliver_to("alice@example.test")
    path = token_path(alice, Kind.PREFERENCES)
    page = await client.get(path)
    assert f'name="group" value="{deals}" checked' in page.text
    assert f'name="group" value="{news}" checked' in page.text
    await client.post(path, data={"action": "preferences", "group": [deals]})
    assert await group_members_out(db, news) == ["alice@example.test"]
    assert await group_members_out(db, deals) == []
    # The unsubscribe link (no group) offers no checkboxes.
    assert 'name="group"' not in (await client.get(token_path(alice, Kind.UNSUBSCRIBE))).text


async def test_leaving_a_deleted_group_unsubscribes_from_everything(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    db: Database,
) -> None:
    deals = await make_group(db, sender, "Deals")
    [alice] = await deliver_to("alice@example.test")
    async with db.session() as session:  # deleted since the mail was sent
        await session.execute(delete(UnsubscribeGroup).where(UnsubscribeGroup.id == deals))
        await session.commit()
    assert (await one_click(client, token_path(alice, Kind.UNSUBSCRIBE, group_id=deals))).is_success
    [event] = await feed(client, sender, "unsubscribed", "group_unsubscribed")
    assert event["type"] == "unsubscribed"
    assert await status_of_next_send(client, sender, "alice@example.test") == "dropped"
