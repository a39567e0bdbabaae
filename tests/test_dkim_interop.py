"""Signatures verify with two independent verifiers: dkimpy and Perl's Mail::DKIM."""

from __future__ import annotations

import shutil

import httpx
import pytest

from app.accounts.models import Account
from app.core.config import Settings
from app.core.db import Database
from app.domains import service as domains
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, make_sender, verify_dkim, verify_dkim_with_perl
from tests.test_end_to_end import Deliver, send

needs_perl = pytest.mark.skipif(
    shutil.which("perl") is None, reason="Perl's Mail::DKIM (libmail-dkim-perl) is not installed"
)


@needs_perl
async def test_rsa_signature_verifies_with_mail_dkim(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, dns_server: FakeDNS
) -> None:
    await send(client, sender, to=["perl@example.test"], subject="Grüße", html="<p>hi</p>")
    await deliver()
    [received] = await mx.wait_for(1)
    assert await verify_dkim_with_perl(received.data, dns_server) == ["rsa-sha256 pass"]
    assert await verify_dkim(received.data, dns_server)


@needs_perl
async def test_ed25519_dual_signature_verifies(
    client: httpx.AsyncClient,
    mx: ScriptedMX,
    deliver: Deliver,
    dns_server: FakeDNS,
    db: Database,
    settings: Settings,
) -> None:
    dual = await make_sender(db, dns_server, settings, account="dual", domain="dual.test")
    async with db.session() as session:
        # A second domain of the same account with both keys, published in DNS.
        account_id = dual.account_id
        owner = await session.get_one(Account, account_id)
        both = await domains.add_domain(
            session,
            account=owner,
            name="both.test",
            secret_key=settings.secret_key_bytes(),
            ed25519=True,
        )
        both.verified_at = both.created_at
        await session.commit()
    for record in domains.dns_records(both, hostname=settings.hostname)[:2]:
        dns_server.add_txt(record.name, record.value)
    body = {"from": "hello@both.test", "to": ["dual@example.test"], "subject": "two", "text": "x"}
    response = await client.post("/v1/send", json=body, headers=dual.headers)
    assert response.status_code == 202, response.text
    await deliver()
    [received] = await mx.wait_for(1)
    assert received.data.count(b"DKIM-Signature:") == 2
    # dkimpy verifies both; Debian's Mail::DKIM (1.20230212) verifies RSA but has no
    # Ed25519 support at all, so it reports that signature as an unsupported algorithm.
    assert await verify_dkim(received.data, dns_server, index=0)
    assert await verify_dkim(received.data, dns_server, index=1)
    verdicts = await verify_dkim_with_perl(received.data, dns_server)
    assert "rsa-sha256 pass" in verdicts
