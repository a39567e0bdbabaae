"""SendGrid's substitutions and sections: replaced in one pass, and refused before they are
built when they would grow a copy without bound (a short tag repeated in a long body, each
replaced by a long value: the template amplification of issue 10 item 1, without a template)."""

from __future__ import annotations

import email
import email.policy
import tracemalloc

import httpx

from tests.fakes.mx import ScriptedMX
from tests.support import Sender
from tests.test_end_to_end import Deliver, message_view


def v3(sender: Sender, text: str, substitutions: dict[str, str]) -> dict[str, object]:
    """A v3 body with one personalization and its substitutions."""
    return {
        "personalizations": [
            {"to": [{"email": "alice@example.test"}], "substitutions": substitutions}
        ],
        "from": {"email": sender.address()},
        "subject": "Hello -name-",
        "content": [{"type": "text/plain", "value": text}],
        "sections": {"%footer%": "Bye -name-"},
    }


async def test_tags_are_replaced_once_each(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    body = v3(sender, "Hi -name-, -name-! %footer%", {"-name-": "Ann"})
    response = await client.post("/v3/mail/send", json=body, headers=sender.headers)
    assert response.status_code == 202, response.text
    await deliver()
    [received] = await mx.wait_for(1)
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert message["Subject"] == "Hello Ann"
    part = message.get_body(("plain",))
    assert part is not None
    # A section's own tags are not substituted again (one pass).
    assert str(part.get_content()).strip() == "Hi Ann, Ann! Bye -name-"


async def test_substitutions_that_would_grow_a_copy_without_bound_drop_it(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    # 100,000 tags, each replaced by 9,000 characters: 900 MB.
    body = v3(sender, "-x-" * 100_000, {"-x-": "y" * 9_000})
    response = await client.post("/v3/mail/send", json=body, headers=sender.headers)
    assert response.status_code == 202, response.text
    message_id = response.headers["X-Message-Id"]
    tracemalloc.start()
    try:
        await deliver()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024, f"delivery peaked at {peak / 2**20:.0f} MiB"
    assert mx.messages == []
    view = await message_view(client, sender, message_id)
    [recipient] = view["recipients"]
    assert recipient["status"] == "dropped"
    response_text = recipient["events"][-1]["data"]["response"]
    assert "the substitutions make the message more than 1048576 characters longer" in response_text
