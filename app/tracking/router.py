"""HTTP, public and unauthenticated: the open pixel, the click redirect and the unsubscribe
link (RFC 8058's one-click POST and the page). A token that is not ours is 404, never a
redirect and never a hint of why.

The endpoints take only the request: app.fastpath serves them straight from the ASGI stack
(they are hit once per open and click of every mail), and they are registered here too for
the OpenAPI description and for anything the fast path does not match.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.db import Database
from app.core.errors import BadRequest, NotFound
from app.openapi import errors
from app.routing import StrictJsonRoute
from app.tracking import service
from app.tracking.committer import TrackingCommitter
from app.tracking.hits import Hit, Visitor, target_group
from app.tracking.page import HEADERS, PageView, render
from app.tracking.settings import effective_settings
from app.tracking.tokens import (
    CLICK_PATH,
    OPEN_PATH,
    UNSUBSCRIBE_PATH,
    InvalidToken,
    Kind,
    Token,
    unseal,
)

router = APIRouter(tags=["tracking"], route_class=StrictJsonRoute)

# A transparent 1×1 GIF (GIF89a, one colour, transparent): the smallest image every client
# shows as nothing.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_STORE = {"Cache-Control": "no-store, max-age=0", "Pragma": "no-cache"}
MAX_FORM = 16 * 1024  # one-click and page forms are a few bytes
FORM_TOO_LARGE = "the form is too large"
OPEN_KIND, CLICK_KIND = frozenset({Kind.OPEN}), frozenset({Kind.CLICK})
UNSUBSCRIBE_KINDS = frozenset({Kind.UNSUBSCRIBE, Kind.GLOBAL_UNSUBSCRIBE, Kind.PREFERENCES})
TOKEN_PARAMETER = {
    "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}]
}
ONE_CLICK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "List-Unsubscribe": {"type": "string", "enum": ["One-Click"]},
                        "action": {
                            "type": "string",
                            "enum": [
                                "unsubscribe",
                                "resubscribe",
                                "unsubscribe_all",
                                "resubscribe_all",
                                "preferences",
                            ],
                        },
                        "group": {"type": "array", "items": {"type": "integer"}},
                    },
                }
            }
        },
    },
    **TOKEN_PARAMETER,
}
NOT_FOUND = "not found"
Change = Callable[[int | None, bool], Awaitable[None]]  # (group or None for all, subscribed)


def _token(request: Request, kinds: frozenset[Kind]) -> Token:
    """The request's token, if it is ours and of one of `kinds`; 404 otherwise."""
    settings: Settings = request.app.state.settings
    text = request.scope["path"].rpartition("/")[2]
    try:
        token = unseal(text, secret_key=settings.secret_key_bytes())
    except InvalidToken:
        raise NotFound(NOT_FOUND) from None
    if token.kind not in kinds:
        raise NotFound(NOT_FOUND)
    return token


def _visitor(request: Request) -> Visitor:
    """The user agent and client address (uvicorn applied COLUMBA_FORWARDED_ALLOW_IPS)."""
    client = request.scope.get("client")
    return Visitor(request.headers.get("user-agent", ""), client[0] if client else None)


def _database(request: Request) -> Database:
    database: Database = request.app.state.db
    return database


def _committer(request: Request) -> TrackingCommitter:
    committer: TrackingCommitter = request.app.state.tracking_committer
    return committer


@router.get(
    OPEN_PATH + "{token}",
    response_class=Response,
    responses={200: {"content": {"image/gif": {}}}, **errors(404)},
    openapi_extra=TOKEN_PARAMETER,
)
async def open_pixel(request: Request) -> Response:
    """The open-tracking image: records an `opened` event, answers a 1×1 transparent GIF."""
    token = _token(request, OPEN_KIND)
    await _committer(request).submit(Hit(token, _visitor(request)))
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


def _safe_target(url: str | None) -> str:
    """The click's URL when it is an http(s) URL fit for a Location header; 404 otherwise."""
    if not url or urlsplit(url).scheme.lower() not in ("http", "https"):
        raise NotFound(NOT_FOUND)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise NotFound(NOT_FOUND)
    return url


@router.get(
    CLICK_PATH + "{token}",
    response_class=Response,
    status_code=302,
    responses={302: {"description": "To the link's URL."}, **errors(404)},
    openapi_extra=TOKEN_PARAMETER,
)
async def click(request: Request) -> Response:
    """A tracked link: records a `clicked` event and redirects (302) to the URL the token
    carries; a token that was forged or altered is 404 (no open redirect)."""
    token = _token(request, CLICK_KIND)
    target = _safe_target(token.url)
    await _committer(request).submit(Hit(token, _visitor(request)))
    if target.isascii():  # as it is: Starlette's RedirectResponse would quote it again
        return Response(status_code=302, headers={"Location": target, **NO_STORE})
    return RedirectResponse(target, status_code=302, headers=NO_STORE)


async def _form(request: Request) -> dict[str, list[str]]:
    """The POSTed form: application/x-www-form-urlencoded or multipart/form-data (RFC 8058
    §3.2 allows both)."""
    body = await _capped_body(request)
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        return _multipart(content_type, body)
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


async def _capped_body(request: Request) -> bytes:
    """The body, refused (400) past MAX_FORM as it streams in: these routes are served
    before the app's body size limit (app.main)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM:
        raise BadRequest(FORM_TOO_LARGE, "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM:
            raise BadRequest(FORM_TOO_LARGE, "body")
        chunks.append(chunk)
    return b"".join(chunks)


def _multipart(content_type: str, body: bytes) -> dict[str, list[str]]:
    """The fields of a multipart/form-data body (RFC 7578), read as MIME."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode("utf-8", "replace")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    fields: dict[str, list[str]] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields.setdefault(name, []).append(payload.decode("utf-8", "replace").strip())
    return fields


def is_one_click(form: dict[str, list[str]]) -> bool:
    """RFC 8058 §3.2: the one-click POST's body is `List-Unsubscribe=One-Click`."""
    return form.get("List-Unsubscribe") == ["One-Click"]


@router.post(
    UNSUBSCRIBE_PATH + "{token}",
    response_class=HTMLResponse,
    responses=errors(400, 404),
    openapi_extra=ONE_CLICK_BODY,
)
async def unsubscribe(request: Request) -> Response:
    """RFC 8058 one-click: with the body `List-Unsubscribe=One-Click`, unsubscribes at once
    (no cookie, login or confirmation), answers 200 (no redirect) and is idempotent. The
    page's own forms (`action`) unsubscribe, resubscribe or save the group preferences."""
    token = _token(request, UNSUBSCRIBE_KINDS)
    form = await _form(request)
    visitor = _visitor(request)
    if is_one_click(form):
        await _committer(request).submit(Hit(token, visitor))
        return HTMLResponse(_DONE, headers=HEADERS)
    async with _database(request).session() as session:
        notice = await _act(session, token, form, visitor)
        await session.commit()
        return HTMLResponse(render(await _view(session, token, notice)), headers=HEADERS)


_DONE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Unsubscribed</title>'
    "</head><body><p>You are unsubscribed.</p></body></html>"
)


@router.get(
    UNSUBSCRIBE_PATH + "{token}",
    response_class=HTMLResponse,
    responses=errors(404),
    openapi_extra=TOKEN_PARAMETER,
)
async def unsubscribe_page(request: Request) -> Response:
    """The unsubscribe page. It changes nothing (link scanners follow GETs): its buttons
    POST."""
    token = _token(request, UNSUBSCRIBE_KINDS)
    async with _database(request).session() as session:
        return HTMLResponse(render(await _view(session, token, "")), headers=HEADERS)


async def _view(session: AsyncSession, token: Token, notice: str) -> PageView:
    """What the page shows for this token now."""
    settings = await effective_settings(session, token.recipient.account_id)
    display = await service.page_display(session, token)
    groups = await service.page_groups(session, token, display=display)
    target = target_group(token)
    group = next((g for g in groups if g.id == target), None) if target is not None else None
    return PageView(
        email=token.recipient.email,
        group=group,
        globally_unsubscribed=await service.globally_unsubscribed(session, token),
        choices=groups if display else [],
        landing=settings.subscription_landing,
        notice=notice,
    )


async def _act(
    session: AsyncSession, token: Token, form: dict[str, list[str]], visitor: Visitor
) -> str:
    """Carry out the page's form; returns the notice to show."""
    action = (form.get("action") or [""])[0]

    async def change(group_id: int | None, subscribed: bool) -> None:
        await service.set_subscription(
            session,
            token,
            group_id=group_id,
            subscribed=subscribed,
            source="page",
            visitor=visitor,
        )

    target = target_group(token)
    if action in ("unsubscribe", "resubscribe"):
        await change(target, action == "resubscribe")
    elif action in ("unsubscribe_all", "resubscribe_all"):
        await change(None, action == "resubscribe_all")
    elif action == "preferences":
        await _save_preferences(session, token, form, change)
    else:
        raise BadRequest("unknown action", "action")
    return _NOTICES[action]


_NOTICES = {
    "unsubscribe": "You are unsubscribed.",
    "resubscribe": "You are subscribed again.",
    "unsubscribe_all": "You are unsubscribed from all mail.",
    "resubscribe_all": "You are subscribed to all mail again.",
    "preferences": "Your preferences are saved.",
}


async def _save_preferences(
    session: AsyncSession, token: Token, form: dict[str, list[str]], change: Change
) -> None:
    """Each offered group checked stays (or becomes) subscribed; unchecked ones are left.
    Only groups the page offers are touched, whatever ids the form carries."""
    display = await service.page_display(session, token)
    offered = await service.page_groups(session, token, display=display)
    checked = set(form.get("group", []))
    for group in offered:
        wanted = str(group.id) in checked
        if wanted != group.subscribed:
            await change(group.id, wanted)


# Served by app.fastpath: (method, path prefix) → endpoint.
FAST_ROUTES = {
    ("GET", OPEN_PATH): open_pixel,
    ("GET", CLICK_PATH): click,
    ("POST", UNSUBSCRIBE_PATH): unsubscribe,
    ("GET", UNSUBSCRIBE_PATH): unsubscribe_page,
}
