"""Dashboard sign-in, session cookies, CSRF, sign-out, expiry and revocation over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx

from app.core.db import Database
from app.dashboard.sessions import SESSION_COOKIE, SIGNIN_CSRF_COOKIE
from tests.dashboard.support import dashboard, sign_in
from tests.support import ApiServer, Sender, make_key


def _set_cookie(response: httpx.Response, name: str) -> str:
    """The Set-Cookie header that sets `name`."""
    found = [v for v in response.headers.get_list("set-cookie") if v.startswith(name + "=")]
    assert len(found) == 1, response.headers
    return found[0]


async def test_sign_in_sets_a_strict_httponly_secure_cookie_that_holds_no_key(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    answer = await sign_in(client, sender.key)
    assert answer.status_code == 303
    cookie = _set_cookie(answer, SESSION_COOKIE)
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/dashboard"} <= flags
    secret = sender.key.rsplit(".", 1)[1]
    assert secret not in cookie
    assert sender.key.split(".")[1] not in cookie
    assert secret not in answer.text


async def test_pages_carry_a_strict_csp_and_never_show_the_key(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    session = await dashboard(client, sender.key)
    for path in ("/dashboard", "/dashboard/activity", "/dashboard/keys"):
        page = await session.get(path)
        assert page.status_code == 200, path
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "<script>" not in page.text  # every script is a static file
        assert sender.key.rsplit(".", 1)[1] not in page.text


async def test_sign_in_without_its_csrf_token_is_refused(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    await client.get("/dashboard/signin")
    answer = await client.post(
        "/dashboard/signin",
        data={"csrf": "forged", "key": sender.key},
        headers={"Cookie": f"{SIGNIN_CSRF_COOKIE}=other"},
    )
    assert answer.status_code == 403
    assert SESSION_COOKIE not in answer.cookies


async def test_a_wrong_key_gets_no_session(client: httpx.AsyncClient, sender: Sender) -> None:
    answer = await sign_in(client, sender.key + "x")
    assert answer.headers["location"] == "/dashboard/signin?failed=true"
    assert SESSION_COOKIE not in answer.cookies


async def test_a_form_without_the_session_csrf_token_changes_nothing(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    session = await dashboard(client, sender.key)
    for token in (None, "forged"):
        data = {"email": "victim@example.test"} | ({"csrf": token} if token else {})
        answer = await session.post("/dashboard/suppressions", data, csrf=False)
        assert answer.status_code == 403
    listed = await session.get("/dashboard/suppressions")
    assert "victim@example.test" not in listed.text
    added = await session.post("/dashboard/suppressions", {"email": "victim@example.test"})
    assert added.status_code == 303
    assert "victim@example.test" in (await session.get("/dashboard/suppressions")).text


async def test_without_a_session_every_page_sends_to_sign_in(client: httpx.AsyncClient) -> None:
    for path in ("/dashboard", "/dashboard/activity", "/dashboard/keys", "/dashboard/mailbox"):
        answer = await client.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/dashboard/signin")
    forged = await client.get("/dashboard", headers={"Cookie": f"{SESSION_COOKIE}=gAAAAforged"})
    assert forged.headers["location"] == "/dashboard/signin"


async def test_sign_out_clears_the_cookie_and_needs_the_csrf_token(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    session = await dashboard(client, sender.key)
    refused = await session.post("/dashboard/signout", {}, csrf=False)
    assert refused.status_code == 403
    answer = await session.post("/dashboard/signout", {})
    assert answer.headers["location"] == "/dashboard/signin"
    cleared = _set_cookie(answer, SESSION_COOKIE)
    assert 'columba_session=""' in cleared
    assert "Max-Age=0" in cleared


async def test_a_session_expires(
    client: httpx.AsyncClient, sender: Sender, api: ApiServer, travel: Callable[[timedelta], None]
) -> None:
    session = await dashboard(client, sender.key)
    assert (await session.get("/dashboard")).status_code == 200
    travel(api.settings.dashboard_session_lifetime + timedelta(seconds=1))
    expired = await session.get("/dashboard")
    assert (expired.status_code, expired.headers["location"]) == (303, "/dashboard/signin")


async def test_revoking_the_key_ends_its_sessions(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    session = await dashboard(client, sender.key)
    keys = await session.get("/dashboard/keys")
    key_id = keys.text.split('action="/dashboard/keys/', 1)[1].split("/revoke", 1)[0]
    answer = await session.post(f"/dashboard/keys/{key_id}/revoke", {})
    assert answer.headers["location"] == "/dashboard/signin"
    assert (await session.get("/dashboard")).headers["location"] == "/dashboard/signin"


async def test_a_key_without_the_page_scope_is_told_which_it_lacks(
    client: httpx.AsyncClient, db: Database, sender: Sender
) -> None:
    key = await make_key(db, account="acme", scopes=["stats.read"])
    session = await dashboard(client, key)
    assert (await session.get("/dashboard")).status_code == 200
    page = await session.get("/dashboard/activity")
    assert page.status_code == 403
    assert "messages.read" in page.text
    assert (await session.get("/dashboard/keys")).status_code == 403
