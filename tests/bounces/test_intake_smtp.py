"""Bounce intake end to end: each format family delivered over SMTP to a running
`columba inbound` at the VERP address of a message the test sent; what it changed, what
`GET /v1/inbound` shows, what the metrics count; nothing dropped, nothing retried forever."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.exc import DataError, OperationalError

from app.bounces import plaintext, service, verp
from app.core.config import Settings
from app.core.db import Database
from app.suppressions import service as suppressions_service
from tests.bounces.conftest import INBOUND_HOST
from tests.bounces.test_inbound import delivered, recipient, render, submit, suppressions_of
from tests.bounces.test_intake import EXPECTED
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, make_sender
from tests.test_end_to_end import Deliver, message_view
from tests.test_retention import purge

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
GONE = "gone@example.test"

# fixture: (outcome stored, the recipient's status afterwards, its suppression or None).
# Corpus files are sent as they are: the address they name is not ours, so VERP decides.
FAMILIES: list[tuple[str, str, str, str | None]] = [
    ("corpus/dsn_13.txt", "bounce", "bounced", "bounce"),  # DSN inside multipart/mixed
    ("corpus/dsn_18.txt", "bounce", "bounced", None),  # OpenSMTPD, `Action: error`
    ("corpus/dsn_12.txt", "bounce", "bounced", "bounce"),  # `Action: failed (…)`
    ("corpus/dsn_01.txt", "bounce", "bounced", None),  # 5.0.0 (recipient reached disk quota)
    ("corpus/qmail_03.txt", "bounce", "bounced", "bounce"),
    ("corpus/exim_01.txt", "bounce", "bounced", "bounce"),
    ("corpus/postfix_01.txt", "bounce", "bounced", "bounce"),
    ("corpus/yahoo_10.txt", "bounce", "bounced", "bounce"),
    ("corpus/microsoft_02.txt", "bounce", "bounced", "bounce"),  # Exchange
    ("corpus/groupwise_01.txt", "bounce", "bounced", None),
    ("corpus/smtp32_04.txt", "bounce", "bounced", "bounce"),
    ("corpus/aol_01.txt", "bounce", "bounced", None),
    ("corpus/netscape_01.txt", "bounce", "bounced", None),
    ("corpus/newmailru_01.txt", "bounce", "bounced", None),  # quota: soft
    ("corpus/simple_42.txt", "bounce", "bounced", "block"),  # Gmail via Exim, 2020
    ("corpus/simple_41.txt", "bounce", "bounced", "bounce"),  # Auto-Submitted, still a bounce
    ("corpus/dsn_06.txt", "delay", "delivered", None),
    ("corpus/simple_21.txt", "delay", "delivered", None),  # a text delay warning
    ("corpus/qmail_08.txt", "auto_reply", "delivered", None),
    ("corpus/groupwise_03.txt", "unclassified", "delivered", None),
    ("exchange_report_without_report_type.eml", "bounce", "bounced", "bounce"),
    ("dsn_per_message_fields_only.eml", "bounce", "bounced", "bounce"),
    ("dsn_recipient_not_named.eml", "bounce", "bounced", "bounce"),
    ("sendmail_2xx_diagnostics.eml", "bounce", "bounced", "bounce"),
    ("exchange_automatic_reply.eml", "auto_reply", "delivered", None),
    ("gmail_vacation_responder.eml", "auto_reply", "delivered", None),
    ("rfc3834_abwesenheitsnotiz.eml", "auto_reply", "delivered", None),
    ("boxtrapper_challenge.eml", "auto_reply", "delivered", None),
    ("postfix_delivered_notice.eml", "delivered", "delivered", None),
    ("postfix_delayed.eml", "delay", "delivered", None),
    ("hotmail_jmrp_legacy.eml", "complaint", "delivered", "complaint"),
    ("rfc6591_auth_failure.eml", "feedback", "delivered", None),
]


def fixture_bytes(name: str, **values: str) -> bytes:
    """A corpus file as it is, or a fixture filled in."""
    if name.startswith("corpus/"):
        return crlf((CORPUS / name.removeprefix("corpus/")).read_bytes())
    return render(name, **values)


def crlf(data: bytes) -> bytes:
    """Line ends as SMTP carries them."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def inbound_list(
    client: httpx.AsyncClient, sender: Sender, **params: Any
) -> list[dict[str, Any]]:
    """`GET /v1/inbound` with filters."""
    response = await client.get("/v1/inbound", params=params, headers=sender.headers)
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def counted(outcome: str, bounce_type: str = "") -> float:
    """The metric for an outcome."""
    labels = {"outcome": outcome, "bounce_type": bounce_type}
    return REGISTRY.get_sample_value("columba_inbound_messages_total", labels) or 0.0


@pytest.mark.parametrize(
    ("fixture", "outcome", "status", "suppression"), FAMILIES, ids=[f[0] for f in FAMILIES]
)
async def test_each_format_family_end_to_end(
    fixture: str,
    outcome: str,
    status: str,
    suppression: str | None,
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
) -> None:
    view, mail_from, message_id = await delivered(client, sender, mx, deliver, GONE)
    data = fixture_bytes(
        fixture, VERP=mail_from, RCPT=GONE, RCPT2="other@example.test", MESSAGE_ID=message_id
    )
    errors, reply = await submit(inbound, mail_from, data)
    assert errors == {}
    assert reply.startswith("2.0.0 OK: " + outcome)
    view = await message_view(client, sender, view["id"])
    assert recipient(view, GONE)["status"] == status
    expected = {GONE: suppression} if suppression else {}
    assert await suppressions_of(client, sender) == expected
    [stored] = await inbound_list(client, sender)
    assert stored["outcome"] == outcome
    assert stored["email"] == GONE
    assert stored["message_id"] == view["id"]
    assert stored["size"] == len(data)
    raw = await client.get(f"/v1/inbound/{stored['id']}/raw", headers=sender.headers)
    assert raw.content == data
    if outcome == "bounce":
        assert stored["bounce_type"] in {"hard", "soft", "block", "unknown"}
        assert stored["bounce_classification"]


async def test_a_global_dsn_bounces_an_internationalised_recipient(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
    dns_server: FakeDNS,
) -> None:
    dns_server.add_mx("xn--bcher-kva.example", (10, "mx1.example.test"))
    view, mail_from, message_id = await delivered(
        client, sender, mx, deliver, "lead@bücher.example", "jörg@bücher.example"
    )
    data = render(
        "postfix_smtputf8_global_dsn.eml",
        VERP=mail_from,
        RCPT="jörg@bücher.example",
        RCPT_XTEXT="j\\x{F6}rg@b\\x{FC}cher.example",
        MESSAGE_ID=message_id,
    )
    await submit(inbound, mail_from, data)
    view = await message_view(client, sender, view["id"])
    assert recipient(view, "jörg@bücher.example")["status"] == "bounced"
    assert recipient(view, "lead@bücher.example")["status"] == "delivered"
    [stored] = await inbound_list(client, sender)
    assert stored["detector"] == "global-dsn"
    assert stored["recipients"][0]["email"] == "jörg@bücher.example"


async def test_of_many_named_addresses_only_the_messages_own_count(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, inbound: int
) -> None:
    # Old Yahoo lists six failed addresses; two of them are recipients of this message.
    view, mail_from, _ = await delivered(
        client, sender, mx, deliver, "usera@example.test", "userb@example.test", "keep@example.test"
    )
    data = crlf((CORPUS / "yahoo_08.txt").read_bytes()).replace(b"@example.com", b"@example.test")
    _errors, reply = await submit(inbound, mail_from, data)
    assert "2 recorded" in reply
    view = await message_view(client, sender, view["id"])
    assert recipient(view, "usera@example.test")["status"] == "bounced"
    assert recipient(view, "userb@example.test")["status"] == "bounced"
    assert recipient(view, "keep@example.test")["status"] == "delivered"
    assert set(await suppressions_of(client, sender)) == {
        "usera@example.test",
        "userb@example.test",
    }


@pytest.mark.parametrize(
    ("feedback_type", "outcome", "suppression"),
    [
        ("abuse", "complaint", "complaint"),
        ("fraud", "complaint", "complaint"),
        ("virus", "complaint", "complaint"),
        ("not-spam", "feedback", None),
    ],
)
async def test_arf_feedback_types(
    feedback_type: str,
    outcome: str,
    suppression: str | None,
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
) -> None:
    view, mail_from, message_id = await delivered(client, sender, mx, deliver, GONE)
    data = render(
        "rfc5965_arf_abuse.eml",
        VERP=mail_from,
        RCPT=GONE,
        MESSAGE_ID=message_id,
        FEEDBACK_TYPE=feedback_type,
    )
    await submit(inbound, mail_from, data, sender="abusedesk@example.com")
    [stored] = await inbound_list(client, sender)
    assert (stored["outcome"], stored["feedback_type"]) == (outcome, feedback_type)
    expected = {GONE: suppression} if suppression else {}
    assert await suppressions_of(client, sender) == expected
    view = await message_view(client, sender, view["id"])
    events = [e["type"] for e in recipient(view, GONE)["events"]]
    assert events[-1] == ("complained" if suppression else "delivered")


async def test_a_mailto_unsubscribe_unsubscribes(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, inbound: int
) -> None:
    view, mail_from, _ = await delivered(client, sender, mx, deliver, GONE)
    data = render("mailto_unsubscribe.eml", VERP=mail_from, RCPT=GONE)
    await submit(inbound, mail_from, data, sender=GONE)
    await submit(inbound, mail_from, data, sender=GONE)  # asked twice: one event
    assert await suppressions_of(client, sender) == {GONE: "unsubscribe"}
    view = await message_view(client, sender, view["id"])
    events = [e["type"] for e in recipient(view, GONE)["events"]]
    assert events == ["processed", "delivered", "unsubscribed"]
    assert [m["outcome"] for m in await inbound_list(client, sender)] == ["unsubscribe"] * 2


async def test_a_token_that_does_not_verify_is_never_trusted(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
    settings: Settings,
) -> None:
    # A complaint whose reported Return-Path is forged: the envelope's VERP decides. The two
    # copies share one transaction, whose VERP names its leader: either recipient, as claimed.
    view, mail_from, message_id = await delivered(
        client, sender, mx, deliver, "lead@example.test", GONE
    )
    forged = mail_from[:-20] + ("a" if mail_from[-20] != "a" else "b") + mail_from[-19:]
    data = render(
        "hotmail_jmrp_legacy.eml", VERP=forged, RCPT="nobody@example.test", MESSAGE_ID=message_id
    )
    await submit(inbound, mail_from, data)
    named = verp.parse(mail_from, secret_key=settings.secret_key_bytes()).recipient_id
    view = await message_view(client, sender, view["id"])
    last = {r["id"]: r["events"][-1]["type"] for r in view["recipients"]}
    assert len(last) == 2
    assert named in last
    assert last == {rid: "complained" if rid == named else "delivered" for rid in last}


async def test_the_whole_corpus_is_stored_and_answered_250(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, inbound: int
) -> None:
    _, mail_from, _ = await delivered(client, sender, mx, deliver, GONE)
    before = {o: counted(o) for o in ("delay", "auto_reply", "unclassified")}
    files = sorted(CORPUS.glob("*.txt"))
    sent: dict[str, str] = {}
    for path in files:
        errors, reply = await submit(inbound, mail_from, crlf(path.read_bytes()))
        assert errors == {}
        assert reply.startswith("2.0.0 OK"), (path.name, reply)
        sent[reply.rsplit("stored as ", 1)[1].strip()] = path.stem
    stored = await inbound_list(client, sender, limit=500)
    assert len(stored) == len(files)
    # Each file's stored outcome is what the reader says of it (tests/bounces/test_intake.py).
    assert {sent[m["id"]]: m["outcome"] for m in stored} == {
        name: outcome for name, (outcome, _, _) in EXPECTED.items()
    }
    outcomes = sorted(m["outcome"] for m in stored)
    assert outcomes.count("bounce") == 101
    assert outcomes.count("delay") == 11
    assert outcomes.count("unclassified") == 4
    assert counted("delay") - before["delay"] == 11
    assert counted("unclassified") - before["unclassified"] == 4
    assert counted("auto_reply") - before["auto_reply"] == 1
    # The first bounce bounced the recipient; the hundred others were repeats.
    assert sum(m["events"] for m in stored) == 1


async def test_messages_cut_short_never_crash_the_listener(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, inbound: int
) -> None:
    _, mail_from, message_id = await delivered(client, sender, mx, deliver, GONE)
    chooser = random.Random(1414)
    samples = [fixture_bytes(name, VERP=mail_from, RCPT=GONE, MESSAGE_ID=message_id)
               for name, *_ in FAMILIES[::3]]  # fmt: skip
    sent = 0
    for data in samples:
        for cut in chooser.sample(range(1, len(data)), 3):
            errors, reply = await submit(inbound, mail_from, data[:cut])
            assert errors == {}
            assert reply.startswith("2.0.0 OK"), reply
            sent += 1
    assert len(await inbound_list(client, sender, limit=500)) == sent


async def test_a_reader_that_raises_keeps_the_message_unclassified(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    view, mail_from, _ = await delivered(client, sender, mx, deliver, GONE)

    def broken(message: Any, raw: bytes) -> None:
        raise RuntimeError("a parser bug")  # an injected fault in the text readers

    monkeypatch.setattr(plaintext, "detect", broken)
    data = crlf((CORPUS / "qmail_03.txt").read_bytes())
    for _ in range(2):  # the sender is never told to retry: the message is kept
        errors, reply = await submit(inbound, mail_from, data)
        assert errors == {}
        assert reply.startswith("2.0.0 OK: unclassified")
    stored = await inbound_list(client, sender, outcome="unclassified")
    assert len(stored) == 2
    assert "a parser bug" in stored[0]["reason"]
    assert f"inbound message {stored[0]['id']} unclassified" in caplog.text
    view = await message_view(client, sender, view["id"])
    assert recipient(view, GONE)["status"] == "delivered"


async def test_a_bug_applying_a_reading_keeps_the_message(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, mail_from, message_id = await delivered(client, sender, mx, deliver, GONE)

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError("a bug")  # an injected fault that is not the database's

    monkeypatch.setattr(service, "apply", broken)
    data = render("postfix_user_unknown.eml", VERP=mail_from, RCPT=GONE, MESSAGE_ID=message_id)
    errors, reply = await submit(inbound, mail_from, data)
    assert errors == {}
    assert reply.startswith("2.0.0 OK: unclassified")
    [stored] = await inbound_list(client, sender)
    assert stored["reason"].startswith("not applied: KeyError")
    assert stored["size"] == len(data)


async def test_inbound_listing_filters_pages_and_isolates_accounts(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
    db: Database,
    dns_server: FakeDNS,
    settings: Settings,
) -> None:
    view, mail_from, message_id = await delivered(client, sender, mx, deliver, GONE)
    for name in ("postfix_delayed.eml", "gmail_no_such_user.eml", "exchange_automatic_reply.eml"):
        data = render(name, VERP=mail_from, RCPT=GONE, MESSAGE_ID=message_id)
        await submit(inbound, mail_from, data)
    everything = await inbound_list(client, sender)
    assert [m["outcome"] for m in everything] == ["auto_reply", "bounce", "delay"]  # newest first
    [bounce] = await inbound_list(client, sender, outcome="bounce", bounce_type="hard")
    assert bounce["bounce_classification"] == "Invalid Address"
    assert bounce["status"] == "5.1.1"
    assert bounce["recipients"] == [
        {
            "email": GONE,
            "recipient_id": view["recipients"][0]["id"],
            "action": "bounce",
            "recorded": True,
            "status": "5.1.1",
            "bounce_type": "hard",
            "bounce_classification": "Invalid Address",
        }
    ]
    assert await inbound_list(client, sender, email="GONE@example.test") == everything
    assert await inbound_list(client, sender, email="other@example.test") == []
    assert await inbound_list(client, sender, message_id=view["id"]) == everything
    page = (await client.get("/v1/inbound?limit=2", headers=sender.headers)).json()
    assert [m["id"] for m in page["messages"]] == [m["id"] for m in everything[:2]]
    rest = await inbound_list(client, sender, before=page["next_cursor"])
    assert [m["id"] for m in rest] == [everything[2]["id"]]
    one = await client.get(f"/v1/inbound/{bounce['id']}", headers=sender.headers)
    assert one.json() == bounce
    other = await make_sender(db, dns_server, settings, account="other", domain="other.test")
    assert await inbound_list(client, other) == []
    hidden = await client.get(f"/v1/inbound/{bounce['id']}", headers=other.headers)
    assert hidden.status_code == 404
    assert hidden.json()["errors"][0]["field"] == "id"
    bad = await client.get("/v1/inbound?outcome=exploded", headers=sender.headers)
    assert bad.status_code == 400


async def test_large_messages_are_kept_cut_to_the_store_limit(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    settings: Settings,
    db: Database,
) -> None:
    from app.bounces.inbound import start_inbound
    from tests.fakes.mx import free_port

    small = settings.model_copy(update={"inbound_store_max_size": 2048})
    port = free_port()
    server = await start_inbound(small, db, host=INBOUND_HOST, port=port)
    try:
        _, mail_from, message_id = await delivered(client, sender, mx, deliver, GONE)
        data = render("gmail_no_such_user.eml", VERP=mail_from, RCPT=GONE, MESSAGE_ID=message_id)
        data += (b"x" * 70 + b"\r\n") * 80
        await submit(port, mail_from, data)
    finally:
        server.close()
        await server.wait_closed()
    [stored] = await inbound_list(client, sender)
    assert (stored["size"], stored["raw_truncated"], stored["outcome"]) == (
        len(data),
        True,
        "bounce",
    )
    raw = await client.get(f"/v1/inbound/{stored['id']}/raw", headers=sender.headers)
    assert raw.content == data[:2048]
    assert raw.headers["x-columba-truncated"] == "true"


async def test_retention_deletes_old_inbound_messages(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
    db: Database,
    settings: Settings,
    travel: Any,
) -> None:
    _, mail_from, message_id = await delivered(client, sender, mx, deliver, GONE)
    data = render("postfix_delayed.eml", VERP=mail_from, RCPT=GONE, MESSAGE_ID=message_id)
    await submit(inbound, mail_from, data)
    travel(settings.retention - timedelta(hours=1))
    assert (await purge(db, settings))["inbound_messages"] == 0
    travel(timedelta(hours=2))
    assert (await purge(db, settings))["inbound_messages"] == 1
    assert await inbound_list(client, sender) == []


async def test_raw_8bit_headers_and_nul_bytes_are_stored(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, inbound: int
) -> None:
    # Raw Latin-1 in a header and a NUL in the diagnostic: PostgreSQL takes neither as text.
    view, mail_from, message_id = await delivered(client, sender, mx, deliver, GONE)
    data = render("gmail_no_such_user.eml", VERP=mail_from, RCPT=GONE, MESSAGE_ID=message_id)
    data = data.replace(b"Subject: ", b"Subject: Zustellung gescheitert \xe4\xfc ", 1)
    data = data.replace(b"tried to reach does", b"tried to\x00 reach does")
    errors, reply = await submit(inbound, mail_from, data)
    assert errors == {}
    assert reply.startswith("2.0.0 OK: bounce")
    [stored] = await inbound_list(client, sender)
    assert "\x00" not in stored["diagnostic"]
    assert stored["subject"].startswith("Zustellung gescheitert")
    raw = await client.get(f"/v1/inbound/{stored['id']}/raw", headers=sender.headers)
    assert raw.content == data
    view = await message_view(client, sender, view["id"])
    assert recipient(view, GONE)["status"] == "bounced"


@pytest.mark.parametrize(
    ("fault", "answer"),
    [
        (OperationalError("INSERT", {}, ConnectionResetError("server closed")), 451),
        (ConnectionRefusedError("database down"), 451),
        (DataError("INSERT", {}, ValueError("value too long for type")), 250),
    ],
    ids=["operational", "connection", "data"],
)
async def test_only_a_failure_that_may_pass_is_answered_451(
    fault: Exception,
    answer: int,
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, mail_from, message_id = await delivered(client, sender, mx, deliver, GONE)

    async def failing(*args: Any, **kwargs: Any) -> None:
        raise fault  # an injected database fault after the first writes

    monkeypatch.setattr(suppressions_service, "suppress", failing)
    data = render("postfix_user_unknown.eml", VERP=mail_from, RCPT=GONE, MESSAGE_ID=message_id)
    if answer == 451:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await submit(inbound, mail_from, data)
        assert refused.value.code == 451
        assert await inbound_list(client, sender) == []
        return
    _errors, reply = await submit(inbound, mail_from, data)
    assert reply.startswith("2.0.0 OK: unclassified")
    [stored] = await inbound_list(client, sender)
    assert stored["reason"].startswith("not applied: DataError")
