"""Who may scrape /metrics: a key with `metrics.read` (or full access), or an address in
COLUMBA_METRICS_ALLOW_IPS; everyone else gets 401 or 403 in SendGrid's error shape."""

from __future__ import annotations

import httpx
import pytest

from app.core.config import Settings
from app.core.db import Database
from app.observability import access
from tests.support import ApiServer, Sender, make_key


async def test_metrics_need_a_key_with_the_scope(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    anonymous = await client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.json()["errors"][0]["message"] == "authorization required"
    unknown = await client.get("/metrics", headers={"Authorization": "Bearer SG.nope.nope"})
    assert unknown.status_code == 401
    mail_only = await make_key(db, account=sender.account_name, scopes=["mail.send"])
    refused = await client.get("/metrics", headers={"Authorization": f"Bearer {mail_only}"})
    assert refused.status_code == 403
    assert "metrics.read" in refused.json()["errors"][0]["message"]
    scraper = await make_key(db, account=sender.account_name, scopes=["metrics.read"])
    allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {scraper}"})
    assert allowed.status_code == 200
    full_access = await client.get("/metrics", headers=sender.headers)
    assert full_access.status_code == 200


async def test_an_allowed_address_scrapes_without_a_key(settings: Settings) -> None:
    allowing = settings.model_copy(update={"metrics_allow_ips": ("10.0.0.0/8", "127.0.0.1")})
    async with ApiServer.running(allowing) as api, httpx.AsyncClient(base_url=api.url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert "columba_http_requests_total" in response.text


def test_address_rules() -> None:
    networks = access.networks_of(["10.0.0.0/8", "::1", "192.0.2.7"])
    assert access.address_allowed("10.1.2.3", networks)
    assert access.address_allowed("::1", networks)
    assert access.address_allowed("192.0.2.7", networks)
    assert not access.address_allowed("192.0.2.8", networks)
    assert not access.address_allowed("testclient", networks)  # not an address
    assert not access.address_allowed(None, networks)
    assert not access.address_allowed("10.1.2.3", ())


def test_metrics_allow_ips_setting_is_validated() -> None:
    assert Settings(metrics_allow_ips="10.0.0.0/8, ::1").metrics_allow_ips == ("10.0.0.0/8", "::1")
    with pytest.raises(ValueError, match="COLUMBA_METRICS_ALLOW_IPS"):
        Settings(metrics_allow_ips="10.0.0.0/8,intranet")
