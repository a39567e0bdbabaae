"""SendGrid's domain authentication with the official `sendgrid` client: create a domain, read
the records to publish, publish them on the test DNS server, validate, delete."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from python_http_client.exceptions import BadRequestsError, ForbiddenError, NotFoundError
from sendgrid import SendGridAPIClient

from app.core.db import Database
from tests.fakes.dns import FakeDNS
from tests.support import ApiServer, Sender, make_key

RECORDS = {"mail_server", "subdomain_spf", "domain_spf", "dkim"}


async def call(request: Callable[..., Any], **kwargs: Any) -> Any:
    """One synchronous client call in a thread; the JSON body (None when empty)."""
    response = await asyncio.to_thread(request, **kwargs)
    return json.loads(response.body) if response.body else None


def publish(dns_server: FakeDNS, records: dict[str, Any]) -> None:
    """Publish the records as a domain owner would (and our host's address, for SPF)."""
    dns_server.add_a("mta.columba.test", "127.0.0.1")
    for record in records.values():
        if record["type"] == "mx":
            dns_server.add_mx(record["host"], (10, record["data"]))
        else:
            dns_server.add_txt(record["host"], record["data"])


async def test_create_publish_validate_and_delete(
    api: ApiServer, sender: Sender, dns_server: FakeDNS
) -> None:
    sg = SendGridAPIClient(sender.key, host=api.url)
    domains = sg.client.whitelabel.domains
    created = await call(
        domains.post,
        request_body={"domain": "Shop.Test", "subdomain": "em", "custom_dkim_selector": "s1a"},
    )
    assert created["domain"] == "shop.test"
    assert created["subdomain"] == "em"
    assert created["automatic_security"] is False
    assert created["valid"] is False
    dns = created["dns"]
    assert set(dns) == RECORDS
    assert dns["dkim"]["host"] == "s1a._domainkey.shop.test"
    assert dns["dkim"]["type"] == "txt"
    assert dns["dkim"]["data"].startswith("v=DKIM1; k=rsa; p=")
    assert dns["mail_server"] == {
        "valid": False,
        "type": "mx",
        "host": "em.shop.test",
        "data": "mta.columba.test",
    }
    assert dns["subdomain_spf"]["host"] == "em.shop.test"
    assert dns["domain_spf"]["host"] == "shop.test"
    domain_id = created["id"]

    unpublished = await call(domains._(domain_id).validate.post)
    assert unpublished["id"] == domain_id
    assert unpublished["valid"] is False
    results = unpublished["validation_results"]
    assert set(results) == RECORDS
    assert results["dkim"]["valid"] is False
    assert results["dkim"]["reason"]

    publish(dns_server, dns)
    validated = await call(domains._(domain_id).validate.post)
    assert validated["valid"] is True
    assert all(
        r == {"valid": True, "reason": None} for r in validated["validation_results"].values()
    )
    shown = await call(domains._(domain_id).get)
    assert shown["valid"] is True
    assert all(record["valid"] for record in shown["dns"].values())
    listed = await call(domains.get, query_params={"limit": 10, "offset": 0})
    assert domain_id in [d["id"] for d in listed]

    assert await call(domains._(domain_id).delete) is None
    with pytest.raises(NotFoundError):
        await call(domains._(domain_id).get)


async def test_a_domain_twice_or_badly_named_is_refused(api: ApiServer, sender: Sender) -> None:
    domains = SendGridAPIClient(sender.key, host=api.url).client.whitelabel.domains
    with pytest.raises(BadRequestsError) as twice:
        await call(domains.post, request_body={"domain": sender.domain.name})
    assert json.loads(twice.value.body)["errors"][0]["field"] == "domain"
    with pytest.raises(BadRequestsError):
        await call(domains.post, request_body={"domain": "x.test", "subdomain": "a.b"})
    with pytest.raises(BadRequestsError):
        await call(domains.post, request_body={"domain": "x.test", "custom_dkim_selector": "long"})
    for bad in ("localhost", "a..test", "-a.test", "a." + "b" * 64 + ".test", "x" * 250 + ".test"):
        with pytest.raises(BadRequestsError):
            await call(domains.post, request_body={"domain": bad})


async def test_paging_scopes_and_other_accounts(
    api: ApiServer, sender: Sender, db: Database
) -> None:
    domains = SendGridAPIClient(sender.key, host=api.url).client.whitelabel.domains
    for name in ("a.test", "b.test"):
        await call(domains.post, request_body={"domain": name})
    every = [d["domain"] for d in await call(domains.get)]
    assert every == sorted(every)
    page = await call(domains.get, query_params={"limit": 1, "offset": 1})
    assert [d["domain"] for d in page] == every[1:2]

    reader = await make_key(db, account=sender.account_name, scopes=["whitelabel.read"])
    read_only = SendGridAPIClient(reader, host=api.url).client.whitelabel.domains
    assert len(await call(read_only.get)) == len(every)
    with pytest.raises(ForbiddenError):
        await call(read_only.post, request_body={"domain": "c.test"})

    stranger = await make_key(db, account="stranger", scopes=None)
    theirs = SendGridAPIClient(stranger, host=api.url).client.whitelabel.domains
    assert await call(theirs.get) == []
    with pytest.raises(NotFoundError):
        await call(theirs._(sender.domain.id).get)


async def test_a_domain_with_kept_messages_is_not_deleted(
    sender: Sender, client: httpx.AsyncClient
) -> None:
    body = {"from": sender.address(), "to": ["a@example.test"], "subject": "s", "text": "t"}
    assert (await client.post("/v1/send", json=body, headers=sender.headers)).status_code == 202
    refused = await client.delete(
        f"/v3/whitelabel/domains/{sender.domain.id}", headers=sender.headers
    )
    assert refused.status_code == 409
