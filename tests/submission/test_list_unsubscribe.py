"""Mail submitted over SMTP with an unsubscribe group (X-SMTPAPI's asm_group_id) carries each
recipient's one-click List-Unsubscribe, signed, above its own header fields."""

from __future__ import annotations

import asyncio
import json

from app.core.config import Settings
from app.core.db import Database
from app.tracking.tokens import UNSUBSCRIBE_PATH, Kind
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.submission.clients import Listener
from tests.submission.test_smtplib import Deliver, mime, submit
from tests.support import Sender, verify_dkim, verify_dkim_with_perl
from tests.tracking.support import by_recipient, make_group, parsed, signed_names, token


async def test_a_group_gives_each_recipient_its_own_signed_list_unsubscribe(
    submission: Listener,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    dns_server: FakeDNS,
    db: Database,
    settings: Settings,
) -> None:
    group = await make_group(db, sender)
    data = mime(sender, f"X-SMTPAPI: {json.dumps({'asm_group_id': group})}", "Subject: Sale")
    addresses = ["a@example.test", "b@example.test"]
    await asyncio.to_thread(submit, submission, sender, addresses, data)
    await deliver()
    copies = by_recipient(await mx.wait_for(2))
    for address, copy in copies.items():
        url = str(copy["List-Unsubscribe"]).split(">, <mailto:")[0].removeprefix("<")
        unsubscribe = token(url, UNSUBSCRIBE_PATH, settings)
        assert (unsubscribe.kind, unsubscribe.recipient.email) == (Kind.UNSUBSCRIBE, address)
        assert unsubscribe.recipient.group_id == group
        assert copy["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(signed_names(copy))
    for received in mx.messages:
        assert await verify_dkim(received.data, dns_server)
        assert await verify_dkim_with_perl(received.data, dns_server) == ["rsa-sha256 pass"]


async def test_the_messages_own_list_unsubscribe_is_kept_alone(
    submission: Listener, sender: Sender, mx: ScriptedMX, deliver: Deliver, db: Database
) -> None:
    group = await make_group(db, sender)
    data = mime(
        sender,
        f"X-SMTPAPI: {json.dumps({'asm_group_id': group})}",
        "List-Unsubscribe: <mailto:leave@shop.example>",
    )
    await asyncio.to_thread(submit, submission, sender, ["a@example.test"], data)
    await deliver()
    [received] = await mx.wait_for(1)
    copy = parsed(received.data)
    assert copy.get_all("List-Unsubscribe") == ["<mailto:leave@shop.example>"]
    assert copy["List-Unsubscribe-Post"] is None
