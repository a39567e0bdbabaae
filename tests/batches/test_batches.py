"""Batches: pause, resume and cancel scheduled sends, natively and through SendGrid's
scheduled-sends API; cancelling works until the moment each recipient is claimed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx

from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.messages import dispatch
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, make_key, run_job
from tests.test_end_to_end import Deliver, message_view, send
from worker import jobs


async def new_batch(client: httpx.AsyncClient, sender: Sender) -> str:
    """POST /v3/mail/batch."""
    response = await client.post("/v3/mail/batch", headers=sender.headers)
    assert response.status_code == 201
    batch_id: str = response.json()["batch_id"]
    return batch_id


async def scheduled_send(
    client: httpx.AsyncClient, sender: Sender, batch_id: str, *to: str, hours: int = 1
) -> str:
    """A v3 send in the batch, due in `hours`; returns the message id."""
    response = await client.post(
        "/v3/mail/send",
        headers=sender.headers,
        json={
            "personalizations": [{"to": [{"email": address}]} for address in to],
            "from": {"email": sender.address()},
            "subject": "Campaign",
            "content": [{"type": "text/plain", "value": "Deals."}],
            "batch_id": batch_id,
            "send_at": int((clock.now() + timedelta(hours=hours)).timestamp()),
        },
    )
    assert response.status_code == 202, response.text
    return response.headers["X-Message-Id"]


async def statuses(client: httpx.AsyncClient, sender: Sender, message_id: str) -> dict[str, str]:
    """Recipient statuses by address."""
    view = await message_view(client, sender, message_id)
    return {r["email"]: r["status"] for r in view["recipients"]}


async def test_pause_holds_past_send_at_and_resume_sends(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    travel: Callable[[timedelta], None],
) -> None:
    batch_id = await new_batch(client, sender)
    assert (await client.get(f"/v3/mail/batch/{batch_id}", headers=sender.headers)).json() == {
        "batch_id": batch_id
    }
    message_id = await scheduled_send(client, sender, batch_id, "a@example.test")
    paused = await client.post(
        "/v3/user/scheduled_sends",
        headers=sender.headers,
        json={"batch_id": batch_id, "status": "pause"},
    )
    assert paused.status_code == 201
    assert paused.json() == {"batch_id": batch_id, "status": "pause"}
    listed = await client.get("/v3/user/scheduled_sends", headers=sender.headers)
    assert listed.json() == [{"batch_id": batch_id, "status": "pause"}]
    travel(timedelta(hours=2))
    await deliver()
    assert mx.messages == []
    assert await statuses(client, sender, message_id) == {"a@example.test": "paused"}
    again = await client.post(
        "/v3/user/scheduled_sends",
        headers=sender.headers,
        json={"batch_id": batch_id, "status": "cancel"},
    )
    assert again.status_code == 400  # a status exists: SendGrid wants PATCH
    removed = await client.delete(f"/v3/user/scheduled_sends/{batch_id}", headers=sender.headers)
    assert removed.status_code == 204
    await deliver()
    await mx.wait_for(1)
    assert await statuses(client, sender, message_id) == {"a@example.test": "delivered"}


async def test_cancel_stops_unclaimed_recipients_with_events(
    client: httpx.AsyncClient, sender: Sender, deliver: Deliver, mx: ScriptedMX
) -> None:
    batch = (await client.post("/v1/batches", headers=sender.headers)).json()
    first = await scheduled_send(client, sender, batch["id"], "a@example.test", "b@example.test")
    response = await client.post(f"/v1/batches/{batch['id']}/cancel", headers=sender.headers)
    assert response.status_code == 200
    assert response.json()["changed"] == 2
    assert response.json()["recipients"] == {"cancelled": 2}
    view = await message_view(client, sender, first)
    for recipient in view["recipients"]:
        assert recipient["status"] == "cancelled"
        assert [e["type"] for e in recipient["events"]] == ["processed", "cancelled"]
    # A send into a cancelled batch is accepted and cancelled at once, never sent.
    later = await scheduled_send(client, sender, batch["id"], "c@example.test", hours=0)
    assert await statuses(client, sender, later) == {"c@example.test": "cancelled"}
    await deliver()
    assert mx.messages == []
    resumed = await client.post(f"/v1/batches/{batch['id']}/resume", headers=sender.headers)
    assert resumed.status_code == 400


async def test_cancel_works_until_the_moment_each_recipient_is_claimed(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    batch = (await client.post("/v1/batches", headers=sender.headers)).json()
    accepted = await send(
        client, sender, to=["claimed@example.test"], batch_id=batch["id"]
    )  # due now
    other = await send(client, sender, to=["waiting@example.test"], batch_id=batch["id"])
    async with db.session() as session:  # a worker claims the first message's recipient
        claim = await dispatch.claim(session, message_id=accepted["id"], lease=timedelta(minutes=5))
        await session.commit()
    assert len(claim.recipients) == 1
    response = await client.post(f"/v1/batches/{batch['id']}/cancel", headers=sender.headers)
    assert response.json()["changed"] == 1
    assert await statuses(client, sender, accepted["id"]) == {"claimed@example.test": "sending"}
    assert await statuses(client, sender, other["id"]) == {"waiting@example.test": "cancelled"}


async def test_paused_recipients_are_not_claimed(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    batch = (await client.post("/v1/batches", headers=sender.headers)).json()
    accepted = await send(client, sender, to=["a@example.test"], batch_id=batch["id"])
    pause = await client.post(f"/v1/batches/{batch['id']}/pause", headers=sender.headers)
    assert pause.json()["status"] == "pause"
    assert pause.json()["changed"] == 1
    async with db.session() as session:
        claim = await dispatch.claim(session, message_id=accepted["id"], lease=timedelta(minutes=5))
        due = await dispatch.due_message_ids(session)
        await session.commit()
    assert claim.recipients == ()
    assert due == []
    # Sends into a paused batch wait too.
    later = await send(client, sender, to=["b@example.test"], batch_id=batch["id"])
    assert [r["status"] for r in later["recipients"]] == ["paused"]
    resume = await client.post(f"/v1/batches/{batch['id']}/resume", headers=sender.headers)
    assert resume.json()["changed"] == 2
    assert resume.json()["recipients"] == {"queued": 2}


async def test_patch_turns_a_pause_into_a_cancel(client: httpx.AsyncClient, sender: Sender) -> None:
    batch_id = await new_batch(client, sender)
    message_id = await scheduled_send(client, sender, batch_id, "a@example.test")
    await client.post(
        "/v3/user/scheduled_sends",
        headers=sender.headers,
        json={"batch_id": batch_id, "status": "pause"},
    )
    patched = await client.patch(
        f"/v3/user/scheduled_sends/{batch_id}", headers=sender.headers, json={"status": "cancel"}
    )
    assert patched.status_code == 204
    got = await client.get(f"/v3/user/scheduled_sends/{batch_id}", headers=sender.headers)
    assert got.json() == [{"batch_id": batch_id, "status": "cancel"}]
    assert await statuses(client, sender, message_id) == {"a@example.test": "cancelled"}


async def test_batches_of_another_account_are_404(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    batch_id = await new_batch(client, sender)
    stranger = {"Authorization": f"Bearer {await make_key(db, account='other', scopes=None)}"}
    calls: list[tuple[str, str, Any]] = [
        ("GET", f"/v3/mail/batch/{batch_id}", None),
        ("GET", f"/v1/batches/{batch_id}", None),
        ("POST", f"/v1/batches/{batch_id}/cancel", None),
        ("POST", "/v3/user/scheduled_sends", {"batch_id": batch_id, "status": "cancel"}),
        ("DELETE", f"/v3/user/scheduled_sends/{batch_id}", None),
    ]
    for method, path, body in calls:
        response = await client.request(method, path, headers=stranger, json=body)
        assert response.status_code == 404, (method, path, response.text)
    sent = await client.post(
        "/v1/send",
        headers=stranger,
        json={"from": sender.address(), "to": ["x@example.test"], "subject": "s", "text": "t"},
    )
    assert sent.status_code == 403


async def test_recipients_left_paused_past_the_expiry_expire_with_an_event(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    settings: Settings,
    travel: Callable[[timedelta], None],
) -> None:
    batch_id = await new_batch(client, sender)
    early = await scheduled_send(client, sender, batch_id, "a@example.test", hours=1)
    late = await scheduled_send(client, sender, batch_id, "b@example.test", hours=48)
    paused = await client.post(f"/v1/batches/{batch_id}/pause", headers=sender.headers)
    assert paused.status_code == 200
    # The first is due in 1 hour: 72 hours after that, it has been paused too long.
    travel(timedelta(hours=1) + settings.paused_expiry - timedelta(minutes=1))
    assert await run_job(settings, jobs.expire_paused_recipients) == 0
    travel(timedelta(minutes=2))
    assert await run_job(settings, jobs.expire_paused_recipients) == 1
    view = await message_view(client, sender, early)
    [recipient] = view["recipients"]
    assert recipient["status"] == "expired"
    assert [e["type"] for e in recipient["events"]] == ["processed", "expired"]
    assert "paused for longer than" in recipient["events"][-1]["data"]["reason"]
    # The second was due only 25 hours ago: it stays paused and is sent on resume.
    assert await statuses(client, sender, late) == {"b@example.test": "paused"}
    resumed = await client.post(f"/v1/batches/{batch_id}/resume", headers=sender.headers)
    assert resumed.status_code == 200
    assert resumed.json()["changed"] == 1
    await deliver()
    [received] = await mx.wait_for(1)
    assert received.rcpt_tos == ["b@example.test"]
