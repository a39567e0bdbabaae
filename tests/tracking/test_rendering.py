"""What each delivered copy carries: real sends through the API and a worker to the MX."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx

from app.core.config import Settings
from app.core.db import Database
from app.tracking.models import TrackingSettings
from app.tracking.tokens import (
    CLICK_PATH,
    OPEN_PATH,
    UNSUBSCRIBE_PATH,
    Kind,
    TrackedRecipient,
    parse_mailto_address,
)
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, verify_dkim, verify_dkim_with_perl
from tests.test_end_to_end import Deliver, message_view, send
from tests.tracking.support import (
    Html,
    body,
    by_recipient,
    make_group,
    parsed,
    send_v3,
    signed_names,
    token,
)

LIST_UNSUBSCRIBE = re.compile(r"<(?P<url>[^>]+)>, <mailto:(?P<mailto>[^>]+)>\Z")
PAGE = (
    "<html><body><p>Hello</p>"
    '<a href="https://shop.example/sale?x=1&amp;y=2">Sale</a> '
    '<a href="mailto:help@shop.example">Mail us</a> '
    '<a href="tel:+15550100">Call</a> '
    '<a href="#terms">Terms</a> '
    '<a clicktracking="off" href="https://shop.example/private">Private</a> '
    '<a href="<%asm_preferences_raw_url%>">Preferences</a>'
    "</body></html>"
)


async def recipients_of(
    client: httpx.AsyncClient, sender: Sender, message_id: str
) -> dict[str, str]:
    """Recipient ids by address."""
    view = await message_view(client, sender, message_id)
    return {r["email"]: r["id"] for r in view["recipients"]}


async def test_a_group_send_carries_signed_one_click_list_unsubscribe_per_recipient(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    dns_server: FakeDNS,
    db: Database,
    settings: Settings,
) -> None:
    group = await make_group(db, sender)
    addresses = ["alice@example.test", "bob@example.test"]
    message_id = await send_v3(
        client,
        sender,
        personalizations=[{"to": [{"email": a} for a in addresses]}],
        asm={"group_id": group},
    )
    await deliver()
    copies = by_recipient(await mx.wait_for(2))
    ids = await recipients_of(client, sender, message_id)
    assert sorted(copies) == addresses  # one transaction each: their bytes differ
    for address, copy in copies.items():
        [value] = copy.get_all("List-Unsubscribe") or []
        match = LIST_UNSUBSCRIBE.match(" ".join(str(value).split()))
        assert match is not None, value
        unsubscribe = token(match["url"], UNSUBSCRIBE_PATH, settings)
        assert unsubscribe.kind is Kind.UNSUBSCRIBE
        assert unsubscribe.recipient == TrackedRecipient(
            account_id=sender.account_id,
            message_id=message_id,
            recipient_id=ids[address],
            email=address,
            group_id=group,
        )
        assert match["mailto"].endswith("@bounces.sender.test")
        secret = settings.secret_key_bytes()
        assert parse_mailto_address(match["mailto"], secret_key=secret) == ids[address]
        assert copy.get_all("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]
        assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(signed_names(copy))
    for received in mx.messages:
        assert await verify_dkim(received.data, dns_server)
        assert await verify_dkim_with_perl(received.data, dns_server) == ["rsa-sha256 pass"]


async def test_click_and_open_tracking_rewrite_each_copy_with_its_own_tokens(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    settings: Settings,
) -> None:
    accepted = await send(
        client,
        sender,
        recipients=[{"to": "alice@example.test"}, {"to": "bob@example.test"}],
        html=PAGE,
        tracking_settings={
            "click_tracking": {"enable": True},
            "open_tracking": {"enable": True},
            "ganalytics": {"enable": True, "utm_source": "columba", "utm_medium": "email"},
        },
    )
    await deliver()
    copies = by_recipient(await mx.wait_for(2))
    ids = {r["email"]: r["id"] for r in accepted["recipients"]}
    for address, copy in copies.items():
        html = body(copy, "html")
        links = Html(html)
        sale, *kept, preferences = links.hrefs
        click = token(sale, CLICK_PATH, settings)
        assert click.kind is Kind.CLICK
        assert click.url == "https://shop.example/sale?x=1&y=2&utm_source=columba&utm_medium=email"
        assert (click.recipient.recipient_id, click.recipient.email) == (ids[address], address)
        assert kept == [
            "mailto:help@shop.example",
            "tel:+15550100",
            "#terms",
            "https://shop.example/private",
        ]
        assert "clicktracking" not in html
        assert token(preferences, UNSUBSCRIBE_PATH, settings).kind is Kind.PREFERENCES
        [pixel] = links.images
        assert (pixel["width"], pixel["height"], pixel["alt"]) == ("1", "1", "")
        opened = token(pixel["src"] or "", OPEN_PATH, settings)
        assert (opened.kind, opened.recipient.recipient_id) == (Kind.OPEN, ids[address])
        assert html.index("<img") < html.index("</body>")
        assert copy["List-Unsubscribe"] is None  # no group, no subscription tracking, not bulk


async def test_text_links_subscription_footer_and_sendgrid_tags(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    settings: Settings,
) -> None:
    await send(
        client,
        sender,
        to=["alice@example.test"],
        text="Shop at https://shop.example/a. Leave all: <%asm_global_unsubscribe_raw_url%>",
        html="<p>Hi <a href='https://shop.example/b'>b</a></p>",
        tracking_settings={
            "click_tracking": {"enable": True, "enable_text": True},
            "subscription_tracking": {
                "enable": True,
                "text": "Unsubscribe: <% %>",
                "html": "<p>No more? <% Unsubscribe %></p>",
            },
        },
    )
    await deliver()
    [received] = await mx.wait_for(1)
    copy = parsed(received.data)
    text = body(copy, "plain").replace("\r\n", "\n")
    found = [url.rstrip(".") for url in re.findall(r"https?://\S+", text)]
    tracked, everything, footer = found
    assert token(tracked, CLICK_PATH, settings).url == "https://shop.example/a"
    assert token(everything, UNSUBSCRIBE_PATH, settings).kind is Kind.GLOBAL_UNSUBSCRIBE
    assert text.rstrip().endswith(f"\n\nUnsubscribe: {footer}")
    assert token(footer, UNSUBSCRIBE_PATH, settings).kind is Kind.UNSUBSCRIBE
    links = Html(body(copy, "html"))
    assert token(links.hrefs[0], CLICK_PATH, settings).url == "https://shop.example/b"
    assert token(links.hrefs[1], UNSUBSCRIBE_PATH, settings).kind is Kind.UNSUBSCRIBE
    assert "No more? <a href=" in body(copy, "html")
    # Subscription tracking makes it list mail: the header comes with it (RFC 8058).
    assert copy["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_substitution_tags_place_the_pixel_and_the_unsubscribe_url(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    settings: Settings,
) -> None:
    await send_v3(
        client,
        sender,
        content=[
            {"type": "text/plain", "value": "Leave: [unsub]"},
            {"type": "text/html", "value": "<body><p>%open%</p><a href='[unsub]'>x</a></body>"},
        ],
        tracking_settings={
            "open_tracking": {"enable": True, "substitution_tag": "%open%"},
            "subscription_tracking": {"enable": True, "substitution_tag": "[unsub]"},
        },
    )
    await deliver()
    [received] = await mx.wait_for(1)
    copy = parsed(received.data)
    leave = body(copy, "plain").strip().removeprefix("Leave: ")
    assert token(leave, UNSUBSCRIBE_PATH, settings).kind is Kind.UNSUBSCRIBE
    html = body(copy, "html")
    assert html.startswith("<body><p><img ")
    assert "If you would like" not in html
    links = Html(html)
    assert token(links.hrefs[0], UNSUBSCRIBE_PATH, settings).kind is Kind.UNSUBSCRIBE
    assert len(links.images) == 1


async def test_handlebars_unsubscribe_and_preferences(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    settings: Settings,
) -> None:
    await send(
        client,
        sender,
        recipients=[{"to": "bob@example.test", "template_data": {"name": "Bob"}}],
        subject="Hi {{name}}",
        text="Leave: {{{unsubscribe}}}",
        html='<a href="{{{unsubscribe}}}">Leave</a> <a href="{{{unsubscribe_preferences}}}">x</a>',
        template_engine="handlebars",
    )
    await deliver()
    [received] = await mx.wait_for(1)
    copy = parsed(received.data)
    assert copy["Subject"] == "Hi Bob"
    leave_text = body(copy, "plain").strip().removeprefix("Leave: ")
    assert token(leave_text, UNSUBSCRIBE_PATH, settings).kind is Kind.UNSUBSCRIBE
    leave, choose = Html(body(copy, "html")).hrefs
    assert token(leave, UNSUBSCRIBE_PATH, settings).kind is Kind.UNSUBSCRIBE
    assert token(choose, UNSUBSCRIBE_PATH, settings).kind is Kind.PREFERENCES


async def test_without_tracking_copies_are_shared_and_carry_nothing(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    await send(
        client,
        sender,
        to=["alice@example.test"],
        cc=["bob@example.test"],
        html=PAGE.replace("<%asm_preferences_raw_url%>", "https://shop.example/prefs"),
        tracking_settings={"click_tracking": {"enable": False}, "open_tracking": {"enable": False}},
    )
    await deliver()
    [received] = await mx.wait_for(1)  # one transaction: identical bytes
    assert sorted(received.rcpt_tos) == ["alice@example.test", "bob@example.test"]
    copy = parsed(received.data)
    assert copy["List-Unsubscribe"] is None
    assert copy["List-Unsubscribe-Post"] is None
    html = body(copy, "html")
    assert Html(html).images == []
    assert "/t/c/" not in html
    assert 'clicktracking="off"' in html  # nothing rewritten: the source as given


async def test_account_defaults_apply_and_are_fixed_when_the_message_is_accepted(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    db: Database,
    settings: Settings,
) -> None:
    async with db.session() as session:
        session.add(
            TrackingSettings(account_id=sender.account_id, open_enabled=True, list_unsubscribe=True)
        )
        await session.commit()
    await send(client, sender, to=["alice@example.test"], html="<p>one</p>")
    await send(
        client,
        sender,
        to=["bob@example.test"],
        html="<p>two</p>",
        tracking_settings={"open_tracking": {"enable": False}},
        list_unsubscribe=False,
    )
    async with db.session() as session:  # a later change does not reach accepted mail
        row = await session.get_one(TrackingSettings, sender.account_id)
        row.open_enabled = row.list_unsubscribe = False
        await session.commit()
    await deliver()
    copies = by_recipient(await mx.wait_for(2))
    defaults, overridden = copies["alice@example.test"], copies["bob@example.test"]
    assert len(Html(body(defaults, "html")).images) == 1
    assert defaults["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert Html(body(overridden, "html")).images == []
    assert overridden["List-Unsubscribe"] is None


async def test_bulk_send_through_v3_mail_settings(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    await send_v3(client, sender, mail_settings={"list_unsubscribe": {"enable": True}})
    await deliver()
    [received] = await mx.wait_for(1)
    assert parsed(received.data)["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_the_callers_own_list_unsubscribe_wins(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, db: Database
) -> None:
    group = await make_group(db, sender)
    await send_v3(
        client,
        sender,
        headers={"List-Unsubscribe": "<https://shop.example/unsub?u=1>"},
        asm={"group_id": group},
    )
    await deliver()
    [received] = await mx.wait_for(1)
    copy = parsed(received.data)
    assert copy.get_all("List-Unsubscribe") == ["<https://shop.example/unsub?u=1>"]
    assert copy["List-Unsubscribe-Post"] is None


async def test_a_retry_sends_the_same_bytes(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    db: Database,
    travel: Callable[[timedelta], None],
) -> None:
    group = await make_group(db, sender)
    mx.reply_at("EOD", 451, "4.3.0 try again later", times=1)
    await send_v3(
        client,
        sender,
        content=[{"type": "text/html", "value": PAGE}],
        asm={"group_id": group},
        tracking_settings={"click_tracking": {"enable": True}, "open_tracking": {"enable": True}},
    )
    await deliver()
    assert len(mx.refused_data) == 1
    assert mx.messages == []
    travel(timedelta(minutes=6))
    await deliver()
    [received] = await mx.wait_for(1)
    assert received.data == mx.refused_data[0]
    assert b"/t/c/" in received.data
    assert b"List-Unsubscribe:" in received.data


async def test_tracking_settings_of_the_wrong_type_are_refused(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    mail = {
        "personalizations": [{"to": [{"email": "alice@example.test"}]}],
        "from": {"email": sender.address()},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Hi."}],
        "tracking_settings": {"open_tracking": {"enable": "yes"}},
    }
    response = await client.post("/v3/mail/send", json=mail, headers=sender.headers)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == "tracking_settings.open_tracking.enable"
    native: dict[str, Any] = {"from": sender.address(), "to": ["a@example.test"], "text": "x"}
    native |= {"subject": "Hi", "tracking_settings": {"click_tracking": {"enable_text": 1}}}
    response = await client.post("/v1/send", json=native, headers=sender.headers)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "tracking_settings.click_tracking.enable_text"
