"""The dashboard's pages (HTML, left out of the OpenAPI schema): sign-in, overview,
activity and timelines, suppressions, domains, webhooks, keys and the dev mailbox."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from app.accounts import service as accounts
from app.accounts.models import ApiKey
from app.accounts.scopes import Scope
from app.dashboard import overview, sessions
from app.dashboard.mailbox_router import router as mailbox_router
from app.dashboard.manage_router import router as manage_router
from app.dashboard.messages_router import router as messages_router
from app.dashboard.web import (
    HERE,
    PageError,
    SignedDep,
    SignInRequired,
    form,
    redirect,
    render,
    set_session,
)
from app.deps import SessionDep, SettingsDep

# HTML pages post forms and answer HTML, so the JSON-only StrictJsonRoute does not apply.
router = APIRouter(prefix="/dashboard", include_in_schema=False)


@router.get("")
async def overview_page(
    request: Request, signed: SignedDep, db: SessionDep, range: str = "24h"
) -> Response:
    """Counters over the chosen range, delivery rate, latency and the queue now."""
    signed.require(Scope.STATS_READ)
    chosen = (
        overview.Range(range) if range in {r.value for r in overview.Range} else overview.Range.DAY
    )
    chart = await overview.series(db, account_id=signed.account_id, chosen=chosen)
    queue = await overview.queue_now(db, account_id=signed.account_id)
    since = datetime.fromtimestamp(chart.times[0], UTC)
    latency = await overview.latency(db, account_id=signed.account_id, since=since)
    return render(
        request, "overview.html", signed=signed, page="overview", chart=chart,
        ranges=list(overview.Range), chosen=chosen, rate=overview.delivery_rate(chart),
        queue=queue, latency=latency, metrics=overview.CHART_METRICS,
    )  # fmt: skip


@router.get("/signin")
async def signin_page(request: Request, settings: SettingsDep, failed: bool = False) -> Response:
    """The sign-in form, with a double-submit CSRF token (there is no session yet)."""
    token = secrets.token_urlsafe(32)
    response = render(request, "signin.html", csrf=token, failed=failed, signed=None)
    response.set_cookie(
        sessions.SIGNIN_CSRF_COOKIE, token, max_age=3600, path="/dashboard/signin",
        httponly=True, secure=not settings.dev_mode, samesite="strict",
    )  # fmt: skip
    return response


@router.post("/signin")
async def signin(request: Request, db: SessionDep, settings: SettingsDep) -> Response:
    """Check the key once, then keep only its id in the encrypted session cookie."""
    fields = await form(request)
    cookie = request.cookies.get(sessions.SIGNIN_CSRF_COOKIE, "")
    if not cookie or not secrets.compare_digest(cookie, fields.get("csrf", "")):
        raise PageError(403, "The sign-in form expired: reload it and try again.")
    principal = await accounts.authenticate(db, plaintext=fields.get("key", "").strip())
    if principal is None:
        return redirect("/dashboard/signin?failed=true")
    return _start_session(settings, principal.api_key)


@router.get("/signin/{token}")
async def signin_link(
    request: Request, token: str, db: SessionDep, settings: SettingsDep
) -> Response:
    """A one-time link from `columba dev`'s banner: spent on first use, expires in minutes."""
    links: sessions.SignInLinks = request.app.state.signin_links
    prefix = links.redeem(token)
    found = await accounts.principal_by_prefix(db, prefix=prefix) if prefix else None
    if found is None:
        return redirect("/dashboard/signin?failed=true")
    return _start_session(settings, found[1].api_key)


def _start_session(settings: SettingsDep, api_key: ApiKey) -> Response:
    """A new session (fresh CSRF token) for the key, and the overview."""
    session = sessions.new_session(api_key.id, settings.dashboard_session_lifetime)
    response = redirect("/dashboard")
    value = sessions.seal(settings.secret_key_bytes(), session)
    lifetime = int(settings.dashboard_session_lifetime.total_seconds())
    set_session(response, settings.dev_mode, value, lifetime)
    response.delete_cookie(sessions.SIGNIN_CSRF_COOKIE, path="/dashboard/signin")
    return response


@router.post("/signout")
async def signout(request: Request, signed: SignedDep) -> Response:
    """End the session (CSRF-checked: a third-party page cannot sign anyone out)."""
    fields = await form(request)
    if not signed.session.csrf_matches(fields.get("csrf")):
        raise PageError(403, "The form expired: reload the page.")
    response = redirect("/dashboard/signin")
    response.delete_cookie(sessions.SESSION_COOKIE, path="/dashboard")
    return response


router.include_router(messages_router)
router.include_router(manage_router)
router.include_router(mailbox_router)


def install_dashboard(app: FastAPI) -> None:
    """Mount the pages, their static files and the handlers that answer in HTML."""
    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=HERE / "static"), name="dashboard")

    async def to_signin(request: Request, exc: Exception) -> Response:
        return redirect("/dashboard/signin")

    async def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return render(request, "error.html", status=exc.status, message=exc.message, signed=None)

    app.add_exception_handler(SignInRequired, to_signin)
    app.add_exception_handler(PageError, page_error)
    app.state.signin_links = sessions.SignInLinks()
