"""Property: any valid send request becomes a message that the standard library parses back
to the same subject, addresses, bodies and attachments (through the live API, the accept
transaction and the worker's composer, DKIM signature included)."""

from __future__ import annotations

import base64
import email.header
import email.policy
import re
from datetime import timedelta
from email._header_value_parser import get_address_list
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.config import Settings
from app.core.db import Database
from app.delivery.signing import DkimSigner
from app.domains.service import dkim_keys
from app.messages import dispatch
from app.messages.compose import Composer, Copy
from tests.support import Sender

# Header text: anything printable (the API refuses control characters), never only blanks.
TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs", "Cc", "Zl", "Zp"]), min_size=1, max_size=80
).filter(lambda value: value.strip() == value and value.strip())
# Bodies: any text but NUL, which the API refuses (RFC 5322 §2.3; PostgreSQL cannot store it).
BODY = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=2000,
)
LOCAL = st.from_regex(r"[a-z][a-z0-9._-]{0,20}[a-z0-9]", fullmatch=True).filter(
    lambda local: ".." not in local
)
DOMAIN = st.sampled_from(["example.test", "mail.example.test", "bücher.test", "例え.test"])
ADDRESS = st.builds(
    lambda local, domain, name: {"email": f"{local}@{domain}", "name": name},
    LOCAL,
    DOMAIN,
    st.none() | TEXT,
)
FILENAME = st.from_regex(r"[A-Za-z0-9 _()-]{1,30}\.(txt|csv|bin|pdf|json)", fullmatch=True)
ATTACHMENT = st.builds(
    lambda name, data: {"filename": name.strip() or "file.bin", "data": data},
    FILENAME,
    # Executables are refused by design, and so are bytes that start like an archive but are
    # none (a damaged archive cannot be looked into) or like one that cannot be read (7z, RAR).
    st.binary(min_size=0, max_size=3000).filter(
        lambda data: (
            not data.startswith(
                (
                    b"MZ",
                    b"\x7fELF",
                    b"PK",
                    b"\xfe\xed",
                    b"\xce\xfa",
                    b"\xcf\xfa",
                    b"\xca\xfe",
                    b"\x1f\x8b",
                    b"BZh",
                    b"\xfd7zXZ",
                    b"7z\xbc",
                    b"Rar!",
                    b"\x28\xb5\x2f\xfd",
                    b"MSCF",
                    b"\x04\x22\x4d\x18",
                    b"LZIP",
                )
            )
            and data[257:262] != b"ustar"
        )
    ),
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A valid POST /v1/send body (attachments carried decoded, for the comparison)."""
    to = draw(st.lists(ADDRESS, min_size=1, max_size=4, unique_by=lambda a: a["email"]))
    text, html = draw(
        st.one_of(st.tuples(BODY, st.none()), st.tuples(st.none(), BODY), st.tuples(BODY, BODY))
    )
    return {
        "subject": draw(TEXT),
        "from_name": draw(st.none() | TEXT),
        "to": to,
        "text": text,
        "html": None if html is None else f"<p>{html}</p>",
        "files": draw(st.lists(ATTACHMENT, max_size=3)),
    }


def body_of(request: dict[str, Any], sender: Sender) -> dict[str, Any]:
    """The JSON body the request stands for."""
    body: dict[str, Any] = {
        "from": {"email": sender.address(), "name": request["from_name"]},
        "to": request["to"],
        "subject": request["subject"],
        "attachments": [
            {
                "content": base64.b64encode(f["data"]).decode(),
                "filename": f["filename"],
                "content_type": "application/octet-stream",
            }
            for f in request["files"]
        ],
    }
    for part in ("text", "html"):
        if request[part] is not None:
            body[part] = request[part]
    return body


_ENCODED_PHRASE = re.compile(r"(?:=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=\s*)+")


def names_and_addresses(raw: bytes, field: str) -> list[tuple[str | None, str]]:
    """(display name, address) of each mailbox; names sent as encoded-words are decoded by the
    standard library's RFC 2047 decoder (CPython 3.11's phrase parser keeps the blanks between
    adjacent words, which §6.2 says to ignore, and collapses runs of blanks inside them)."""
    folded = str(BytesParser(policy=email.policy.compat32).parsebytes(raw)[field])
    value = re.sub(r"\r?\n(?=[ \t])", "", folded)  # unfold (RFC 5322 §2.2.3)
    result = []
    for part in _mailboxes(value):
        [mailbox] = get_address_list(part)[0].mailboxes
        name = mailbox.display_name or None
        phrase = part.rpartition("<")[0].strip()
        if _ENCODED_PHRASE.fullmatch(phrase):
            name = str(email.header.make_header(email.header.decode_header(phrase)))
        result.append((name, mailbox.addr_spec))
    return result


def _mailboxes(value: str) -> list[str]:
    """Split an address list at its top-level commas (not inside quotes or angle brackets)."""
    parts, current, quoted, escaped, depth = [], "", False, False, 0
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char in "<>":
            depth += 1 if char == "<" else -1
        elif char == "," and not quoted and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += char
    return [*parts, current.strip()]


def ascii_address(address: str) -> str:
    """The address as it appears in an ASCII header: domain as an IDNA A-label."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.encode('idna').decode()}"


@pytest.mark.timeout(900)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
async def test_valid_sends_parse_back_identically(
    request: dict[str, Any],
    client: httpx.AsyncClient,
    sender: Sender,
    db: Database,
    settings: Settings,
) -> None:
    response = await client.post("/v1/send", json=body_of(request, sender), headers=sender.headers)
    assert response.status_code == 202, response.text
    message_id = response.json()["id"]
    async with db.session() as session:
        loaded = await dispatch.load_message(session, message_id=message_id)
        claim = await dispatch.claim(session, message_id=message_id, lease=timedelta(minutes=1))
        await session.commit()
    signer = DkimSigner(dkim_keys(loaded.domain, secret_key=settings.secret_key_bytes()))
    copies = Composer(lambda _: signer).copies(loaded, claim.recipients)
    assert all(isinstance(c, Copy) for c in copies)
    assert len({c.data for c in copies if isinstance(c, Copy)}) == 1
    raw = copies[0].data if isinstance(copies[0], Copy) else b""
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    assert message["Subject"] == request["subject"]
    assert names_and_addresses(raw, "From") == [(request["from_name"], sender.address())]
    assert names_and_addresses(raw, "To") == [
        (a["name"], ascii_address(a["email"])) for a in request["to"]
    ]
    for part in ("text", "html"):
        sent = message.get_body(("plain",) if part == "text" else ("html",))
        if request[part] is None:
            assert sent is None or sent.get_content_subtype() != (
                "plain" if part == "text" else "html"
            )
        else:
            assert sent is not None
            assert _lines(sent.get_content()) == _lines(request[part])
    files = [(a.get_filename(), a.get_content()) for a in message.iter_attachments()]
    assert files == [(f["filename"], f["data"]) for f in request["files"]]


def _lines(text: str) -> list[str]:
    """Text as lines: mail turns every line break (CR, LF, CRLF) into CRLF (RFC 5322 §2.3)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")
