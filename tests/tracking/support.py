"""Reading what a tracked copy carries: its parts, links, headers and tokens."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any

import httpx

from app.asm.models import UnsubscribeGroup
from app.core.config import Settings
from app.core.db import Database
from app.tracking.tokens import Token, unseal
from tests.support import Sender


class Html(HTMLParser):
    """The hrefs, img srcs and raw start tags of an html part."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.anchors: list[str] = []
        self.feed(source)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Collect links and images."""
        if tag == "a":
            self.anchors.append(self.get_starttag_text() or "")
            self.hrefs.append(dict(attrs).get("href") or "")
        if tag == "img":
            self.images.append(dict(attrs))


def parsed(data: bytes) -> EmailMessage:
    """A received message, parsed."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body(message: EmailMessage, subtype: str) -> str:
    """The text of the message's text/<subtype> part."""
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None
    assert part.get_content_subtype() == subtype
    content: str = part.get_content()
    return content


def token(url: str, path: str, settings: Settings) -> Token:
    """The token of one of our links."""
    prefix = settings.public_url.rstrip("/") + path
    assert url.startswith(prefix), url
    return unseal(url.removeprefix(prefix), secret_key=settings.secret_key_bytes())


def signed_names(message: EmailMessage) -> list[str]:
    """The h= of the (first) DKIM signature, lower-cased."""
    signature = str(message["DKIM-Signature"])
    tags = dict(
        tag.strip().split("=", 1) for tag in "".join(signature.split()).split(";") if tag.strip()
    )
    return [name.lower() for name in tags["h"].split(":")]


def by_recipient(received: list[Any]) -> dict[str, EmailMessage]:
    """Received messages keyed by their single RCPT TO."""
    copies: dict[str, EmailMessage] = {}
    for item in received:
        [recipient] = item.rcpt_tos
        copies[recipient] = parsed(item.data)
    return copies


async def make_group(db: Database, sender: Sender, name: str = "Promotions") -> int:
    """An unsubscribe group of the sender's account."""
    async with db.session() as session:
        group = UnsubscribeGroup(account_id=sender.account_id, name=name, description="")
        session.add(group)
        await session.commit()
        return group.id


async def send_v3(client: httpx.AsyncClient, sender: Sender, **fields: Any) -> str:
    """POST /v3/mail/send; returns the X-Message-Id."""
    mail = {
        "personalizations": [{"to": [{"email": "alice@example.test"}]}],
        "from": {"email": sender.address()},
        "subject": "Spring sale",
        "content": [{"type": "text/plain", "value": "Hi."}],
        **fields,
    }
    response = await client.post("/v3/mail/send", json=mail, headers=sender.headers)
    assert response.status_code == 202, response.text
    return response.headers["X-Message-Id"]
