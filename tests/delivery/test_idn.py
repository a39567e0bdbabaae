"""Internationalised domains travel as A-labels; only a non-ASCII local part needs SMTPUTF8."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Awaitable, Callable

import httpx
import pytest
import pytest_asyncio

from app.core.config import Settings
from app.core.db import Database
from app.delivery.idn import ascii_domain, envelope_address, needs_smtputf8
from app.domains.service import normalize_domain_name
from app.messages.service import recipient_domain
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, make_sender, verify_dkim
from tests.test_end_to_end import message_view, send, status_of

Deliver = Callable[[], Awaitable[int]]
StartMX = Callable[..., Awaitable[ScriptedMX]]


@pytest.mark.parametrize(
    ("domain", "a_label"),
    [
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),  # UTS #46 maps case
        ("faß.de", "xn--fa-hia.de"),  # IDNA 2008; IDNA 2003 made it fass.de, another domain
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("Example.TEST", "example.test"),
    ],
)
def test_domains_become_a_labels(domain: str, a_label: str) -> None:
    assert ascii_domain(domain) == a_label
    assert recipient_domain(f"user@{domain}") == a_label  # what MX lookups use
    assert normalize_domain_name(domain + ".") == a_label  # sending domains, as stored


@pytest.mark.parametrize(
    ("address", "on_the_wire", "smtputf8"),
    [
        ("user@bücher.example", "user@xn--bcher-kva.example", False),
        ("jörg@bücher.example", "jörg@xn--bcher-kva.example", True),
        ("user@example.test", "user@example.test", False),
        ("", "", False),  # the null reverse-path
        ("user@[192.0.2.1]", "user@[192.0.2.1]", False),
        ("user@a..b", "user@a..b", False),  # no IDN: as it is
        ("user@\u0080bad.example", "user@\u0080bad.example", True),  # no valid IDN: SMTPUTF8
    ],
)
def test_envelope_addresses(address: str, on_the_wire: str, smtputf8: bool) -> None:
    assert envelope_address(address) == on_the_wire
    assert needs_smtputf8(address) is smtputf8


@pytest_asyncio.fixture
async def idn_mx(start_mx: StartMX, dns_server: FakeDNS) -> ScriptedMX:
    """The MX host of bücher.example, which does not offer SMTPUTF8."""
    dns_server.add_mx("xn--bcher-kva.example", (10, "mx.xn--bcher-kva.example"))
    dns_server.add_a("mx.xn--bcher-kva.example", "127.0.0.6")
    mx = await start_mx("127.0.0.6")
    mx.advertise_smtputf8 = False
    return mx


async def test_an_idn_domain_is_delivered_without_smtputf8(
    client: httpx.AsyncClient,
    db: Database,
    dns_server: FakeDNS,
    settings: Settings,
    idn_mx: ScriptedMX,
    deliver: Deliver,
) -> None:
    # Both sides internationalised: the sending domain and the recipient's.
    shop = await make_sender(db, dns_server, settings, account="shop", domain="bücher-shop.test")
    assert shop.domain.name == "xn--bcher-shop-9db.test"
    accepted = await send(
        client, shop, **{"from": {"email": "news@bücher-shop.test", "name": "Bücher"}},
        to=["user@bücher.example"], reply_to="hilfe@bücher-shop.test",
    )  # fmt: skip
    await deliver()
    [received] = await idn_mx.wait_for(1)
    assert received.rcpt_tos == ["user@xn--bcher-kva.example"]
    assert received.mail_from.endswith("@bounces.xn--bcher-shop-9db.test")
    assert "SMTPUTF8" not in received.mail_options
    assert received.data.isascii()  # RFC 6532 headers only with SMTPUTF8: A-labels here
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["From"] == "Bücher <news@xn--bcher-shop-9db.test>"  # an encoded-word name
    assert parsed["To"] == "user@xn--bcher-kva.example"
    assert parsed["Reply-To"] == "hilfe@xn--bcher-shop-9db.test"
    assert await verify_dkim(received.data, dns_server)
    view = await message_view(client, shop, accepted["id"])
    assert status_of(view, "user@bücher.example") == "delivered"


async def test_a_non_ascii_local_part_needs_smtputf8(
    client: httpx.AsyncClient, sender: Sender, idn_mx: ScriptedMX, deliver: Deliver
) -> None:
    accepted = await send(client, sender, to=["jörg@bücher.example"])
    await deliver()
    view = await message_view(client, sender, accepted["id"])
    assert status_of(view, "jörg@bücher.example") == "bounced"
    [attempt] = view["recipients"][0]["attempts"]
    assert attempt["enhanced_code"] == "5.6.7"

    idn_mx.advertise_smtputf8 = True
    accepted = await send(client, sender, to=["jörg@bücher.example"])
    await deliver()
    [received] = await idn_mx.wait_for(1)
    assert received.rcpt_tos == ["jörg@xn--bcher-kva.example"]
    assert "SMTPUTF8" in received.mail_options
