"""GET /t/o/{token} and GET /t/c/{token}: the pixel and the click redirect, with real tokens
of real delivered recipients."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import pytest

from app.tracking.router import PIXEL
from app.tracking.tokens import Kind, Token, link
from tests.conftest import SECRET_KEY
from tests.stats.test_stats import stats, today
from tests.support import Sender
from tests.tracking.conftest import Delivered, Tokens, feed

DeliverTo = Callable[..., Awaitable[list[Delivered]]]
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
LATER = timedelta(minutes=2)  # past the seconds after delivery in which fetches are machines'


def tampered(path: str, position: int) -> str:
    """The path with one character of its token replaced."""
    head, _, token = path.rpartition("/")
    swapped = "A" if token[position] != "A" else "B"
    return f"{head}/{token[:position]}{swapped}{token[position + 1 :]}"


async def test_the_pixel_is_a_transparent_gif_and_records_one_open(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    travel: Callable[[timedelta], None],
) -> None:
    [alice] = await deliver_to("alice@example.test")
    travel(LATER)
    response = await client.get(token_path(alice, Kind.OPEN), headers={"User-Agent": BROWSER})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert "no-store" in response.headers["cache-control"]
    assert response.content == PIXEL
    assert response.content[:6] == b"GIF89a"
    assert (response.content[6], response.content[8]) == (1, 1)  # 1×1 (little-endian)
    [opened] = await feed(client, sender, "opened")
    assert opened["recipient_id"] == alice.recipient_id
    assert opened["email"] == "alice@example.test"
    assert opened["data"]["useragent"] == BROWSER
    assert opened["data"]["ip"] == "127.0.0.1"
    assert opened["data"]["unique"] is True
    assert opened["data"]["machine"] is False


async def test_opens_and_clicks_are_unique_once_per_recipient(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    travel: Callable[[timedelta], None],
) -> None:
    alice, bob = await deliver_to("alice@example.test", "bob@example.test")
    travel(LATER)
    headers = {"User-Agent": BROWSER}
    for recipient, opens in ((alice, 3), (bob, 1)):
        for _ in range(opens):
            assert (await client.get(token_path(recipient, Kind.OPEN), headers=headers)).is_success
    for url in ("https://shop.example/a", "https://shop.example/b"):
        path = token_path(alice, Kind.CLICK, url=url)
        assert (await client.get(path, headers=headers)).status_code == 302
    totals = (await stats(client, sender, start=today()))["totals"]
    assert (totals["opens"], totals["unique_opens"]) == (4, 2)
    assert (totals["clicks"], totals["unique_clicks"]) == (2, 1)
    assert (totals["machine_opens"], totals["machine_clicks"]) == (0, 0)
    uniques = [e["data"]["unique"] for e in await feed(client, sender, "opened")]
    assert sorted(uniques) == [False, False, True, True]


async def test_a_click_redirects_to_the_url_its_token_carries(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    travel: Callable[[timedelta], None],
) -> None:
    [alice] = await deliver_to("alice@example.test")
    travel(LATER)
    url = "https://shop.example/sale?item=42&utm_source=columba#top"
    response = await client.get(
        token_path(alice, Kind.CLICK, url=url),
        headers={"User-Agent": BROWSER, "Cookie": "ignored=1"},
    )
    assert response.status_code == 302
    assert response.headers["location"] == url
    assert "no-store" in response.headers["cache-control"]
    [clicked] = await feed(client, sender, "clicked")
    assert clicked["data"]["url"] == url
    assert clicked["data"]["useragent"] == BROWSER
    assert clicked["data"]["ip"] == "127.0.0.1"
    assert clicked["data"]["unique"] is True


async def test_a_link_with_non_ascii_characters_redirects_quoted(
    client: httpx.AsyncClient, deliver_to: DeliverTo, token_path: Tokens
) -> None:
    [alice] = await deliver_to("alice@example.test")
    response = await client.get(token_path(alice, Kind.CLICK, url="https://shop.example/café"))
    assert response.status_code == 302
    assert response.headers["location"] == "https://shop.example/caf%C3%A9"


@pytest.mark.parametrize("position", [0, 5, 20, 40, -1])
async def test_a_tampered_click_token_is_404_and_never_a_redirect(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    position: int,
) -> None:
    [alice] = await deliver_to("alice@example.test")
    path = token_path(alice, Kind.CLICK, url="https://shop.example/")
    response = await client.get(tampered(path, position))
    assert response.status_code == 404
    assert "location" not in response.headers
    assert await feed(client, sender, "clicked") == []


async def test_forged_truncated_and_misplaced_tokens_are_404(
    client: httpx.AsyncClient, sender: Sender, deliver_to: DeliverTo, token_path: Tokens
) -> None:
    [alice] = await deliver_to("alice@example.test")
    forged = link(
        "",
        Token(Kind.CLICK, alice.tracked(), "https://evil.example/"),
        secret_key=b"another-secret-key-" + b"y" * 32,
    )
    click = token_path(alice, Kind.CLICK, url="https://shop.example/")
    opened = token_path(alice, Kind.OPEN)
    token = click.rpartition("/")[2]
    bad_paths = [
        forged,  # sealed with another key
        click[:-4],  # truncated
        "/t/c/" + base64.urlsafe_b64encode(b"https://evil.example/").decode(),  # plain URL
        "/t/c/" + opened.rpartition("/")[2],  # an open token at the click endpoint
        "/t/o/" + token,  # a click token at the pixel
        "/u/" + token,  # ... and at the unsubscribe link
        "/t/c/",
        "/t/c/%00",
    ]
    for path in bad_paths:
        response = await client.get(path)
        assert response.status_code in (400, 404), path
        assert "location" not in response.headers, path
    assert await feed(client, sender, "clicked", "opened") == []
    assert SECRET_KEY.encode() != b"another-secret-key-" + b"y" * 32


async def test_apple_privacy_protection_fetches_are_machine_opens(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    travel: Callable[[timedelta], None],
) -> None:
    [alice] = await deliver_to("alice@example.test")
    travel(LATER)
    pixel = token_path(alice, Kind.OPEN)
    # Apple's proxy: a bare user agent (and an address of its relay).
    assert (await client.get(pixel, headers={"User-Agent": "Mozilla/5.0"})).status_code == 200
    assert (await client.get(pixel, headers={"User-Agent": BROWSER})).status_code == 200
    machine, person = await feed(client, sender, "opened")
    assert machine["data"]["machine"] is True
    assert machine["data"]["machine_reason"] == "apple_privacy_protection"
    assert machine["data"]["unique"] is False
    assert person["data"]["machine"] is False
    assert person["data"]["unique"] is True  # the machine's fetch did not take it
    totals = (await stats(client, sender, start=today()))["totals"]
    assert (totals["machine_opens"], totals["opens"], totals["unique_opens"]) == (1, 1, 1)


async def test_fetches_at_delivery_and_scanners_are_machines(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    travel: Callable[[timedelta], None],
) -> None:
    [alice] = await deliver_to("alice@example.test")
    click = token_path(alice, Kind.CLICK, url="https://shop.example/")
    # Within seconds of delivery, whatever the user agent says: a gateway scanning the mail.
    assert (await client.get(click, headers={"User-Agent": BROWSER})).status_code == 302
    travel(LATER)
    scanner = "Mozilla/5.0 (compatible; Barracuda Sentinel URL scanner)"
    assert (await client.get(click, headers={"User-Agent": scanner})).status_code == 302
    assert (await client.get(click, headers={"User-Agent": BROWSER})).status_code == 302
    at_delivery, scan, person = await feed(client, sender, "clicked")
    assert at_delivery["data"]["machine_reason"] == "at_delivery"
    assert scan["data"]["machine_reason"] == "security_scanner"
    assert person["data"]["machine"] is False
    assert person["data"]["unique"] is True
    totals = (await stats(client, sender, start=today()))["totals"]
    assert (totals["machine_clicks"], totals["clicks"], totals["unique_clicks"]) == (2, 1, 1)


async def test_concurrent_opens_count_one_unique(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    travel: Callable[[timedelta], None],
) -> None:
    [alice] = await deliver_to("alice@example.test")
    travel(LATER)
    pixel = token_path(alice, Kind.OPEN)
    answers = await asyncio.gather(
        *(client.get(pixel, headers={"User-Agent": BROWSER}) for _ in range(30))
    )
    assert all(answer.status_code == 200 for answer in answers)
    totals = (await stats(client, sender, start=today()))["totals"]
    assert (totals["opens"], totals["unique_opens"]) == (30, 1)
