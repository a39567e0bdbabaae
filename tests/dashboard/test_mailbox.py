"""The dev mailbox in the dashboard and the one-time sign-in links of `columba dev`."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import httpx

from app.dashboard.sessions import SESSION_COOKIE
from tests.dashboard.conftest import DevDashboard, sample_mail
from tests.dashboard.support import dashboard
from tests.support import Sender

MAIL_LINK = re.compile(r'href="/dashboard/mailbox/([^"/]+\.eml)"')


async def test_a_one_time_link_signs_in_once(dev_dashboard: DevDashboard, sender: Sender) -> None:
    link = dev_dashboard.signin_link(sender.key)
    async with httpx.AsyncClient(base_url=dev_dashboard.api.url) as http:
        first = await http.get(link)
        assert first.headers["location"] == "/dashboard"
        cookie = next(c for c in first.headers.get_list("set-cookie") if SESSION_COOKIE in c)
        assert "Secure" not in cookie  # `columba dev` serves plain HTTP on loopback
        assert "HttpOnly" in cookie
        assert (await http.get("/dashboard")).status_code == 200
    async with httpx.AsyncClient(base_url=dev_dashboard.api.url) as http:
        again = await http.get(link)
        assert again.headers["location"] == "/dashboard/signin?failed=true"


async def test_a_one_time_link_expires(
    dev_dashboard: DevDashboard, sender: Sender, travel: Callable[[timedelta], None]
) -> None:
    link = dev_dashboard.signin_link(sender.key)
    travel(timedelta(minutes=11))
    async with httpx.AsyncClient(base_url=dev_dashboard.api.url) as http:
        answer = await http.get(link)
    assert answer.headers["location"] == "/dashboard/signin?failed=true"


async def test_a_captured_mail_is_shown_safely(dev_dashboard: DevDashboard, sender: Sender) -> None:
    await dev_dashboard.capture(sample_mail())
    async with httpx.AsyncClient(base_url=dev_dashboard.api.url) as http:
        await http.get(dev_dashboard.signin_link(sender.key))
        listed = await http.get("/dashboard/mailbox")
        assert "Your receipt" in listed.text
        (name,) = MAIL_LINK.findall(listed.text)
        page = await http.get(f"/dashboard/mailbox/{name}")
        assert "Thank you for your order." in page.text
        assert "X-Columba-Envelope-To" in page.text  # headers
        assert 'sandbox=""' in page.text
        assert "&lt;script&gt;" in page.text  # the raw source, escaped
        html = await http.get(f"/dashboard/mailbox/{name}/html")
        csp = html.headers["content-security-policy"]
        assert csp.startswith("sandbox;")
        assert "script-src" not in csp  # default-src 'none' covers scripts
        assert "img-src data:" in csp  # remote images are not fetched
        attachment = await http.get(f"/dashboard/mailbox/{name}/attachments/2")
        assert attachment.content == b"%PDF-1.4 receipt"
        assert attachment.headers["content-disposition"] == 'attachment; filename="receipt.pdf"'
        assert attachment.headers["content-type"] == "application/octet-stream"
        for bad in ("..%2Fcolumba.db", "secret_key", f"{name}x"):
            assert (await http.get(f"/dashboard/mailbox/{bad}")).status_code == 404


async def test_there_is_no_mailbox_outside_dev_mode(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    session = await dashboard(client, sender.key)
    page = await session.get("/dashboard/mailbox")
    assert page.status_code == 404
    assert "Mailbox" not in (await session.get("/dashboard")).text
