"""Helpers of the dashboard tests: signing in over plain HTTP as a browser would."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from app.dashboard.sessions import SESSION_COOKIE, SIGNIN_CSRF_COOKIE

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Dashboard:
    """A signed-in dashboard session driven over HTTP.

    The session cookie is Secure outside `columba dev`, so a cookie jar would not send it
    over the tests' plain HTTP: it is passed by hand, as a browser would over HTTPS."""

    http: httpx.AsyncClient
    cookie: str

    async def get(self, path: str, **params: str) -> httpx.Response:
        """GET a page with the session."""
        return await self.http.get(path, params=params, headers=self._headers())

    async def post(self, path: str, data: dict[str, str], *, csrf: bool = True) -> httpx.Response:
        """POST a form, with the CSRF token of a page of this session unless told not to."""
        if csrf:
            data = {"csrf": await self.csrf(), **data}
        return await self.http.post(path, data=data, headers=self._headers())

    async def csrf(self) -> str:
        """The CSRF token the dashboard puts in its forms for this session."""
        page = await self.get("/dashboard/suppressions")
        found = CSRF_FIELD.search(page.text)
        assert found, page.text
        return found.group(1)

    def _headers(self) -> dict[str, str]:
        return {"Cookie": f"{SESSION_COOKIE}={self.cookie}"}


async def sign_in(http: httpx.AsyncClient, key: str) -> httpx.Response:
    """Post the sign-in form with its double-submit token; the 303 that answers."""
    form = await http.get("/dashboard/signin")
    token = form.cookies[SIGNIN_CSRF_COOKIE]
    assert CSRF_FIELD.search(form.text)
    return await http.post(
        "/dashboard/signin",
        data={"csrf": token, "key": key},
        headers={"Cookie": f"{SIGNIN_CSRF_COOKIE}={token}"},
    )


async def dashboard(http: httpx.AsyncClient, key: str) -> Dashboard:
    """A signed-in session for `key`."""
    answer = await sign_in(http, key)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/dashboard"
    return Dashboard(http, answer.cookies[SESSION_COOKIE])
