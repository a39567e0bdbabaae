"""MIME item by item (CHECKLIST 30-32) for personalised copies, as the worker builds them."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import timedelta
from typing import Any

import httpx

from app.core.db import Database
from app.messages import dispatch
from app.messages.compose import Composer, Copy
from tests.support import Sender


class _NoSigner:
    """The bytes under test are the message's own."""

    def sign(self, data: bytes, *, timestamp: int) -> bytes:
        """No signature header."""
        return b""


async def copies_of(
    client: httpx.AsyncClient, sender: Sender, db: Database, **body: Any
) -> list[Copy]:
    """POST /v1/send, then build every recipient's copy as a worker would."""
    response = await client.post(
        "/v1/send", headers=sender.headers, json={"from": sender.address(), **body}
    )
    assert response.status_code == 202, response.text
    async with db.session() as session:
        loaded = await dispatch.load_message(session, message_id=response.json()["id"])
        claim = await dispatch.claim(
            session, message_id=loaded.message.id, lease=timedelta(minutes=1)
        )
        await session.commit()
    made = Composer(lambda _: _NoSigner()).copies(loaded, claim.recipients)
    assert all(isinstance(c, Copy) for c in made)
    return [c for c in made if isinstance(c, Copy)]


def header_names(data: bytes) -> list[str]:
    """The header field names, in order."""
    head = data.split(b"\r\n\r\n", 1)[0]
    return [
        line.split(b":", 1)[0].decode().lower()
        for line in head.split(b"\r\n")
        if line[:1] not in (b" ", b"\t")
    ]


async def test_each_copy_is_well_formed(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    long_line = "word " * 400  # 2,000 characters on one line of html
    copies = await copies_of(
        client,
        sender,
        db,
        subject="Grüße, {{ name }} — 📦 {{ code }}",
        html="<p>" + long_line + "{{ name }}</p>\r<p>bare CR</p>\n<p>bare LF</p>",
        text="Plain\rwith\nbreaks",
        template_engine="jinja",
        recipients=[
            {
                "to": {"email": "zoe@example.test", "name": "Zoë Ünïcode"},
                "template_data": {"name": "Zoë", "code": 1},
            },
            {"to": "bob@bücher.test", "template_data": {"name": "Bob", "code": 2}},
        ],
    )
    message_ids = set()
    for copy in copies:
        names = header_names(copy.data)
        for field in ("date", "from", "message-id", "mime-version", "subject", "to"):
            assert names.count(field) == 1, (field, names)
        assert all(len(line) <= 998 for line in copy.data.split(b"\r\n"))
        assert re.search(rb"\r(?!\n)|(?<!\r)\n", copy.data) is None  # no bare CR or LF
        assert copy.data.isascii()
        assert not copy.smtputf8
        parsed = email.message_from_bytes(copy.data, policy=email.policy.default)
        message_ids.add(parsed["Message-ID"])
        assert parsed["Subject"].startswith("Grüße, ")
    assert len(message_ids) == 2
    bob = next(c for c in copies if c.recipient.email == "bob@bücher.test")
    assert b"xn--bcher-kva.test" in bob.data


async def test_a_utf8_local_part_needs_smtputf8_only_for_its_copy(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    copies = await copies_of(
        client,
        sender,
        db,
        subject="Hi",
        text="Hi",
        recipients=[{"to": "用户@example.test"}, {"to": "plain@example.test"}],
    )
    by_rcpt = {c.recipient.email: c for c in copies}
    assert by_rcpt["用户@example.test"].smtputf8
    assert not by_rcpt["plain@example.test"].smtputf8
    assert by_rcpt["plain@example.test"].data.isascii()


async def test_mixed_contains_related_contains_alternative_text_first(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    png = "iVBORw0KGgoAAAAA"  # the PNG signature, base64
    [copy] = await copies_of(
        client,
        sender,
        db,
        to=["a@example.test"],
        subject="Layout",
        text="text",
        html='<img src="cid:logo">',
        attachments=[
            {
                "content": png,
                "filename": "logo.png",
                "content_type": "image/png",
                "content_id": "logo",
            },
            {"content": "aGk=", "filename": "notes.txt", "content_type": "text/plain"},
        ],
    )
    parsed = email.message_from_bytes(copy.data, policy=email.policy.default)
    tree = [(part.get_content_type(), part.get("Content-ID")) for part in parsed.walk()]
    assert tree == [
        ("multipart/mixed", None),
        ("multipart/related", None),
        ("multipart/alternative", None),
        ("text/plain", None),
        ("text/html", None),
        ("image/png", "<logo>"),
        ("text/plain", None),
    ]
