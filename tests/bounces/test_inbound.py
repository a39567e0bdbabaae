"""`columba inbound`: real DSN and ARF reports (Postfix, Exim, Gmail, Outlook, Yahoo
formats) sent over SMTP; what they change; what the listener refuses."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
import trustme

from app.bounces import verp
from app.bounces.inbound import start_inbound
from app.core.config import Settings
from app.core.db import Database
from app.suppressions import service as suppressions_service
from tests.bounces.conftest import INBOUND_HOST
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX, free_port
from tests.support import Sender, make_sender
from tests.test_end_to_end import Deliver, message_view, send

FIXTURES = Path(__file__).parent / "fixtures"


def render(name: str, **values: str) -> bytes:
    """A fixture with {{VERP}}, {{RCPT}}, … filled in, with CRLF line ends."""
    text = (FIXTURES / name).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


async def submit(port: int, rcpt: str, data: bytes, sender: str = "") -> Any:
    """Send a report to the listener with a null reverse path, as MTAs send DSNs."""
    async with aiosmtplib.SMTP(hostname=INBOUND_HOST, port=port, start_tls=False) as smtp:
        return await smtp.sendmail(sender, [rcpt], data)


async def delivered(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, *to: str
) -> tuple[dict[str, Any], str, str]:
    """Send to `to` and deliver: (the message view, the VERP MAIL FROM, the Message-ID)."""
    accepted = await send(client, sender, to=list(to))
    await deliver()
    [received] = await mx.wait_for(1)
    view = await message_view(client, sender, accepted["id"])
    return view, received.mail_from, view["message_id"]


def recipient(view: dict[str, Any], email: str) -> dict[str, Any]:
    """One recipient of a message view."""
    return next(r for r in view["recipients"] if r["email"] == email)


async def suppressions_of(client: httpx.AsyncClient, sender: Sender) -> dict[str, str]:
    """The account's suppressions by address."""
    listed = (await client.get("/v1/suppressions", headers=sender.headers)).json()
    return {s["email"]: s["type"] for s in listed["suppressions"]}


@pytest.mark.parametrize(
    ("fixture", "status", "classification", "suppression"),
    [
        ("postfix_user_unknown.eml", "5.1.1", "Invalid Address", "bounce"),
        ("gmail_no_such_user.eml", "5.1.1", "Invalid Address", "bounce"),
        ("outlook_recipient_not_found.eml", "5.1.10", "Invalid Address", "bounce"),
        ("gmail_blocked.eml", "5.7.1", "Content", "block"),
    ],
)
async def test_a_dsn_bounces_the_delivered_recipient(
    fixture: str,
    status: str,
    classification: str,
    suppression: str,
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
    settings: Settings,
) -> None:
    view, mail_from, message_id = await delivered(client, sender, mx, deliver, "gone@example.test")
    leader = verp.parse(mail_from, secret_key=settings.secret_key_bytes())
    assert leader.recipient_id == view["recipients"][0]["id"]
    data = render(
        fixture,
        VERP=mail_from,
        RCPT="gone@example.test",
        RCPT_UPPER="Gone@Example.test",
        MESSAGE_ID=message_id,
    )
    errors, reply = await submit(inbound, mail_from, data)
    assert errors == {}
    assert "1 recorded" in reply

    view = await message_view(client, sender, view["id"])
    gone = recipient(view, "gone@example.test")
    assert gone["status"] == "bounced"  # delivered → bounced
    assert gone["last_enhanced_code"] == status
    assert [e["type"] for e in gone["events"]] == ["processed", "delivered", "bounced"]
    event = gone["events"][-1]["data"]
    assert event["asynchronous"] is True
    assert event["bounce_classification"] == classification
    assert (await suppressions_of(client, sender)) == {"gone@example.test": suppression}


async def test_a_dsn_picks_the_right_recipients_of_a_shared_transaction(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
) -> None:
    view, mail_from, message_id = await delivered(
        client, sender, mx, deliver, "lead@example.test", "one@example.test", "two@example.test"
    )
    data = render(
        "exim_two_recipients.eml",
        VERP=mail_from,
        RCPT="one@example.test",
        RCPT2="two@example.test",
        MESSAGE_ID=message_id,
    )
    await submit(inbound, mail_from, data)
    view = await message_view(client, sender, view["id"])
    assert recipient(view, "lead@example.test")["status"] == "delivered"
    assert recipient(view, "one@example.test")["last_enhanced_code"] == "5.1.1"
    two = recipient(view, "two@example.test")
    assert two["status"] == "bounced"
    assert two["last_enhanced_code"] == "5.2.1"
    assert await suppressions_of(client, sender) == {
        "one@example.test": "bounce",
        "two@example.test": "bounce",
    }


async def test_a_dsn_names_idn_recipients_as_they_were_sent(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
    dns_server: FakeDNS,
) -> None:
    # Stored with the U-label (as email-validator normalises), sent and bounced as A-labels.
    dns_server.add_mx("xn--bcher-kva.example", (10, "mx1.example.test"))
    view, mail_from, message_id = await delivered(
        client, sender, mx, deliver, "lead@bücher.example", "one@bücher.example",
        "two@bücher.example",
    )  # fmt: skip
    data = render(
        "exim_two_recipients.eml",
        VERP=mail_from,
        RCPT="one@xn--bcher-kva.example",
        RCPT2="two@XN--BCHER-KVA.example",
        MESSAGE_ID=message_id,
    )
    await submit(inbound, mail_from, data)
    view = await message_view(client, sender, view["id"])
    assert recipient(view, "lead@bücher.example")["status"] == "delivered"
    assert recipient(view, "one@bücher.example")["status"] == "bounced"
    assert recipient(view, "two@bücher.example")["status"] == "bounced"


async def test_a_dsn_naming_no_known_recipient_falls_back_to_the_leader(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
) -> None:
    view, mail_from, message_id = await delivered(client, sender, mx, deliver, "lead@example.test")
    data = render(
        "postfix_user_unknown.eml",
        VERP=mail_from,
        RCPT="forwarded-to@elsewhere.test",
        MESSAGE_ID=message_id,
    )
    await submit(inbound, mail_from, data)
    view = await message_view(client, sender, view["id"])
    assert recipient(view, "lead@example.test")["status"] == "bounced"


async def test_a_delay_warning_changes_nothing(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, inbound: int
) -> None:
    view, mail_from, message_id = await delivered(client, sender, mx, deliver, "slow@example.test")
    data = render(
        "postfix_delayed.eml", VERP=mail_from, RCPT="slow@example.test", MESSAGE_ID=message_id
    )
    _errors, reply = await submit(inbound, mail_from, data)
    assert "0 recorded" in reply
    view = await message_view(client, sender, view["id"])
    assert recipient(view, "slow@example.test")["status"] == "delivered"
    assert await suppressions_of(client, sender) == {}


@pytest.mark.parametrize("fixture", ["yahoo_arf_complaint.eml", "outlook_jmrp_complaint.eml"])
async def test_an_arf_report_is_a_complaint_and_suppresses(
    fixture: str,
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
) -> None:
    view, mail_from, message_id = await delivered(
        client, sender, mx, deliver, "lead@example.test", "angry@example.test"
    )
    data = render(fixture, VERP=mail_from, RCPT="angry@example.test", MESSAGE_ID=message_id)
    await submit(inbound, mail_from, data, sender="feedback@fbl.example.test")
    view = await message_view(client, sender, view["id"])
    angry = recipient(view, "angry@example.test")
    assert angry["status"] == "delivered"  # a complaint does not undo the delivery
    assert [e["type"] for e in angry["events"]] == ["processed", "delivered", "complained"]
    assert angry["events"][-1]["data"]["feedback_type"] == "abuse"
    assert recipient(view, "lead@example.test")["events"][-1]["type"] == "delivered"
    assert await suppressions_of(client, sender) == {"angry@example.test": "complaint"}
    params = {"start": view["created_at"][:10]}
    stats = (await client.get("/v1/stats", params=params, headers=sender.headers)).json()
    assert stats["totals"]["spam_reports"] == 1


async def test_repeated_reports_make_one_event(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, inbound: int
) -> None:
    view, mail_from, message_id = await delivered(client, sender, mx, deliver, "gone@example.test")
    bounce = render(
        "gmail_no_such_user.eml", VERP=mail_from, RCPT="gone@example.test", MESSAGE_ID=message_id
    )
    complaint = render(
        "yahoo_arf_complaint.eml", VERP=mail_from, RCPT="gone@example.test", MESSAGE_ID=message_id
    )
    for data in (bounce, bounce, complaint, complaint):
        errors, _ = await submit(inbound, mail_from, data)
        assert errors == {}
    view = await message_view(client, sender, view["id"])
    kinds = [e["type"] for e in recipient(view, "gone@example.test")["events"]]
    assert kinds == ["processed", "delivered", "bounced", "complained"]
    feed = (
        await client.get(
            "/v1/stats", params={"start": view["created_at"][:10]}, headers=sender.headers
        )
    ).json()
    assert feed["totals"]["bounces"] == 1
    assert feed["totals"]["spam_reports"] == 1


async def test_only_valid_verp_addresses_on_bounce_domains_are_accepted(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
    db: Database,
    dns_server: FakeDNS,
    settings: Settings,
) -> None:
    _, mail_from, message_id = await delivered(client, sender, mx, deliver, "gone@example.test")
    data = render(
        "postfix_user_unknown.eml", VERP=mail_from, RCPT="gone@example.test", MESSAGE_ID=message_id
    )
    local, domain = mail_from.split("@")
    tampered = local[:-1] + ("a" if local[-1] != "a" else "b") + "@" + domain
    other = await make_sender(db, dns_server, settings, account="other", domain="other.test")
    cross = local + "@" + other.domain.bounce_domain  # a valid token, moved to another domain
    for rcpt, code in (
        (tampered, 550),  # bad HMAC
        (cross, 550),
        ("postmaster@" + domain, 550),
        ("someone@gmail.test", 550),  # a foreign domain: no open relay
        (local + "@example.test", 550),
    ):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await submit(inbound, rcpt, data)
        [reply] = refused.value.recipients
        assert reply.code == code, (rcpt, reply)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as foreign:
        await submit(inbound, "someone@gmail.test", data)
    assert "Relaying denied" in foreign.value.recipients[0].message
    assert (await suppressions_of(client, sender)) == {}


async def test_nothing_is_acknowledged_before_it_is_committed(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    view, mail_from, message_id = await delivered(client, sender, mx, deliver, "gone@example.test")
    data = render(
        "postfix_user_unknown.eml", VERP=mail_from, RCPT="gone@example.test", MESSAGE_ID=message_id
    )
    real = suppressions_service.suppress

    async def failing(*args: Any, **kwargs: Any) -> None:
        """A database write that fails mid-transaction."""
        raise ConnectionError("database went away")  # an injected fault after the first writes

    monkeypatch.setattr(suppressions_service, "suppress", failing)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await submit(inbound, mail_from, data)
    assert refused.value.code == 451
    view_after = await message_view(client, sender, view["id"])
    assert recipient(view_after, "gone@example.test")["status"] == "delivered"  # rolled back
    monkeypatch.setattr(suppressions_service, "suppress", real)
    _errors, reply = await submit(inbound, mail_from, data)  # the MTA retries: now it sticks
    assert "1 recorded" in reply
    view_after = await message_view(client, sender, view["id"])
    assert recipient(view_after, "gone@example.test")["status"] == "bounced"


async def test_inbound_offers_starttls_when_a_certificate_is_configured(
    settings: Settings,
    db: Database,
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    tls_ca: trustme.CA,
    tmp_path: Path,
) -> None:
    pem = tmp_path / "inbound.pem"
    certificate = tls_ca.issue_cert("mta.columba.test", INBOUND_HOST)
    certificate.private_key_and_cert_chain_pem.write_to_path(str(pem))
    with_tls = settings.model_copy(update={"smtp_tls_cert": pem, "smtp_tls_key": pem})
    port = free_port()
    server = await start_inbound(with_tls, db, host=INBOUND_HOST, port=port)
    try:
        view, mail_from, message_id = await delivered(
            client, sender, mx, deliver, "gone@example.test"
        )
        data = render(
            "gmail_no_such_user.eml",
            VERP=mail_from,
            RCPT="gone@example.test",
            MESSAGE_ID=message_id,
        )
        context = ssl.create_default_context()
        tls_ca.configure_trust(context)
        async with aiosmtplib.SMTP(
            hostname=INBOUND_HOST,
            port=port,
            start_tls=True,
            tls_context=context,
        ) as smtp:
            assert smtp.get_transport_info("sslcontext") is not None
            await smtp.sendmail("", [mail_from], data)
    finally:
        server.close()
        await server.wait_closed()
    view = await message_view(client, sender, view["id"])
    assert recipient(view, "gone@example.test")["status"] == "bounced"
