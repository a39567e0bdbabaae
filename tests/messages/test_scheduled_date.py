"""A scheduled message is dated when it is first sent (its send_at), on every attempt."""

from __future__ import annotations

import email
import email.policy
import email.utils
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.core import clock
from tests.fakes.mx import ScriptedMX
from tests.support import Sender

Deliver = Callable[[], Awaitable[int]]
Travel = Callable[[timedelta], None]


async def v3_send(client: httpx.AsyncClient, sender: Sender, **fields: Any) -> None:
    """POST /v3/mail/send with a plain text body."""
    body = {
        "from": {"email": sender.address()},
        "subject": "Reminder",
        "content": [{"type": "text/plain", "value": "See you."}],
        **fields,
    }
    response = await client.post("/v3/mail/send", json=body, headers=sender.headers)
    assert response.status_code == 202, response.text


def whole_seconds(moment: datetime) -> int:
    """A moment as SendGrid's send_at (a Unix time)."""
    return int(moment.timestamp())


def dates_by_recipient(mx: ScriptedMX) -> dict[str, datetime]:
    """The Date header of each received message, by its first recipient."""
    found = {}
    for received in mx.messages:
        parsed = email.message_from_bytes(received.data, policy=email.policy.default)
        found[received.rcpt_tos[0]] = email.utils.parsedate_to_datetime(str(parsed["Date"]))
    return found


async def test_scheduled_message_is_dated_at_its_send_at_even_after_a_retry(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, travel: Travel
) -> None:
    send_at = whole_seconds(clock.now() + timedelta(days=3))
    await v3_send(
        client, sender, personalizations=[{"to": [{"email": "a@example.test"}]}], send_at=send_at
    )
    travel(timedelta(days=3, minutes=1))
    mx.reply_at("RCPT", 450, "4.2.1 mailbox busy, try later", times=1)
    await deliver()
    assert mx.messages == []
    travel(timedelta(minutes=6))  # past the first retry wait
    await deliver()
    await mx.wait_for(1)

    dated = dates_by_recipient(mx)["a@example.test"]
    assert dated == datetime.fromtimestamp(send_at, UTC)


async def test_each_personalization_is_dated_at_its_own_send_at(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, travel: Travel
) -> None:
    soon = whole_seconds(clock.now() + timedelta(hours=1))
    later = whole_seconds(clock.now() + timedelta(hours=5))
    await v3_send(
        client,
        sender,
        personalizations=[
            {"to": [{"email": "soon@example.test"}], "send_at": soon},
            {"to": [{"email": "later@example.test"}], "send_at": later},
        ],
    )
    travel(timedelta(hours=6))
    await deliver()
    await mx.wait_for(2)

    assert dates_by_recipient(mx) == {
        "soon@example.test": datetime.fromtimestamp(soon, UTC),
        "later@example.test": datetime.fromtimestamp(later, UTC),
    }


async def test_one_personalization_scheduled_on_its_own_is_dated_at_its_send_at(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, travel: Travel
) -> None:
    send_at = whole_seconds(clock.now() + timedelta(hours=2))
    await v3_send(
        client,
        sender,
        personalizations=[{"to": [{"email": "one@example.test"}], "send_at": send_at}],
    )
    travel(timedelta(hours=3))
    await deliver()
    await mx.wait_for(1)

    assert dates_by_recipient(mx)["one@example.test"] == datetime.fromtimestamp(send_at, UTC)


async def test_send_at_in_the_past_is_dated_when_accepted(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    accepted = clock.now()
    await v3_send(
        client,
        sender,
        personalizations=[{"to": [{"email": "now@example.test"}]}],
        send_at=whole_seconds(accepted - timedelta(hours=1)),
    )
    await deliver()
    await mx.wait_for(1)

    dated = dates_by_recipient(mx)["now@example.test"]
    assert abs(dated - accepted) < timedelta(seconds=5)
