"""The dashboard's HTTP plumbing: templates, security headers, the signed-in principal,
CSRF-checked forms."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader

from app.accounts import service as accounts
from app.accounts.service import Principal
from app.dashboard import sessions
from app.dashboard.sessions import DashboardSession
from app.deps import SessionDep, SettingsDep

HERE = Path(__file__).parent
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
FORM_LIMIT = 64 * 1024
# No inline script or style anywhere: JS and CSS come from /dashboard/static only.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):
    """No valid session: the handler sends the browser to the sign-in page."""


class PageError(Exception):
    """A page-level refusal (a missing scope, an unknown object) shown as an HTML page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A template rendered with the security headers every page carries."""
    html = TEMPLATES.get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def redirect(url: str) -> RedirectResponse:
    """303 See Other: the browser follows a POST with a GET (RFC 9110 §15.4.4)."""
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


class Signed:
    """The signed-in principal and their session, for a page."""

    def __init__(self, principal: Principal, session: DashboardSession) -> None:
        self.principal = principal
        self.session = session

    @property
    def account_id(self) -> str:
        """The only account this page may show."""
        return self.principal.account.id

    def require(self, scope: str) -> None:
        """403 page unless the key carries `scope`."""
        if not self.principal.allows(scope):
            raise PageError(403, f"This key lacks the {scope} scope that this page needs.")

    def require_full_access(self) -> None:
        """Key management asks for a full-access key: a scoped key may not mint keys."""
        if self.principal.api_key.scopes is not None:
            raise PageError(403, "Managing API keys needs a full-access key.")


async def signed_in(request: Request, db: SessionDep, settings: SettingsDep) -> Signed:
    """The session's principal; the key is looked up on every request, so a revoked key's
    sessions end at once."""
    cookie = request.cookies.get(sessions.SESSION_COOKIE)
    found = sessions.unseal(settings.secret_key_bytes(), cookie)
    if found is None:
        raise SignInRequired()
    principal = await accounts.active_principal(db, api_key_id=found.api_key_id)
    if principal is None:
        raise SignInRequired()
    return Signed(principal, found)


SignedDep = Annotated[Signed, Depends(signed_in)]


async def form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (what the dashboard's forms post)."""
    body = await request.body()
    if len(body) > FORM_LIMIT:
        raise PageError(413, "The form is too large.")
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


async def checked_form(request: Request, signed: Signed) -> dict[str, str]:
    """The form, refused unless it carries the session's CSRF token (session-bound)."""
    fields = await form(request)
    if not signed.session.csrf_matches(fields.get("csrf")):
        raise PageError(403, "The form expired or did not come from this dashboard: reload it.")
    return fields


def set_session(response: Response, settings_dev: bool, value: str, max_age: int) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Secure outside `columba dev` (which
    serves plain HTTP on loopback)."""
    response.set_cookie(
        sessions.SESSION_COOKIE,
        value,
        max_age=max_age,
        path="/dashboard",
        httponly=True,
        secure=not settings_dev,
        samesite="strict",
    )
