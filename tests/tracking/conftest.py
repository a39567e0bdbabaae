"""Fixtures for the tracking tests: delivered recipients and their real tokens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.asm.models import UnsubscribeGroup
from app.core.config import Settings
from app.core.db import Database
from app.tracking.tokens import Kind, Token, TrackedRecipient, link, seal
from tests.bounces.conftest import inbound  # noqa: F401 (a fixture used here)
from tests.fakes.mx import ScriptedMX
from tests.support import Sender
from tests.test_end_to_end import send
from tests.webhooks.conftest import dispatcher, receiver  # noqa: F401 (fixtures used here)


@dataclass(frozen=True)
class Delivered:
    """A recipient of a real, delivered send."""

    account_id: str
    message_id: str
    recipient_id: str
    email: str

    def tracked(self, group_id: int | None = None) -> TrackedRecipient:
        """The recipient as a token carries it."""
        return TrackedRecipient(
            self.account_id, self.message_id, self.recipient_id, self.email, group_id
        )


Tokens = Callable[..., str]


@pytest.fixture
def token_path(settings: Settings) -> Tokens:
    """The path of a token's link, sealed with the test settings' secret key."""

    def make(
        recipient: Delivered, kind: Kind, *, group_id: int | None = None, url: str | None = None
    ) -> str:
        token = Token(kind, recipient.tracked(group_id), url)
        full = link("http://x", token, secret_key=settings.secret_key_bytes())
        return full.removeprefix("http://x")

    return make


def sealed(settings: Settings, token: Token) -> str:
    """A token as text."""
    return seal(token, secret_key=settings.secret_key_bytes())


@pytest.fixture
def deliver_to(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Callable[[], Awaitable[int]]
) -> Callable[..., Awaitable[list[Delivered]]]:
    """Send to addresses at example.test, deliver, and return the delivered recipients."""

    async def run(*addresses: str, **fields: Any) -> list[Delivered]:
        accepted = await send(client, sender, to=list(addresses), **fields)
        await deliver()
        await mx.wait_for(1)
        return [
            Delivered(sender.account_id, accepted["id"], r["id"], r["email"])
            for r in accepted["recipients"]
        ]

    return run


async def make_group(db: Database, sender: Sender, name: str, description: str = "") -> int:
    """An unsubscribe group of the sender's account."""
    async with db.session() as session:
        group = UnsubscribeGroup(account_id=sender.account_id, name=name, description=description)
        session.add(group)
        await session.commit()
        return group.id


async def feed(client: httpx.AsyncClient, sender: Sender, *types: str) -> list[dict[str, Any]]:
    """The account's events of these types, oldest first (GET /v1/events)."""
    response = await client.get("/v1/events", params={"limit": 1000}, headers=sender.headers)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return [event for event in found if event["type"] in types]
