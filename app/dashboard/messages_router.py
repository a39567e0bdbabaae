"""Activity search and a message's timeline, rendered copy and raw source."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.accounts.scopes import Scope
from app.core.errors import ApiError
from app.dashboard import mailview, source
from app.dashboard.web import PageError, SignedDep, render
from app.deps import SessionDep, SettingsDep
from app.messages import search as activity
from app.messages import service as messages
from app.messages.models import RecipientStatus
from app.messages.schemas import RecipientView
from app.messages.search import SearchFilters

router = APIRouter()
PAGE_SIZE = 50
# The CSP of a message's HTML inside its sandboxed frame: no script, no remote anything
# (a remote image is a tracking pixel: blocked), inline styles only as mail uses them.
MAIL_CSP = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
    "form-action 'none'; base-uri 'none'"
)


def _filters(params: dict[str, str]) -> SearchFilters:
    """The search form's fields as activity-search filters (empty fields ignored)."""
    status = params.get("status") or ""
    return SearchFilters(
        recipient=params.get("recipient") or None,
        sender=params.get("from") or None,
        subject=params.get("subject") or None,
        statuses=(RecipientStatus(status),) if status in {s.value for s in RecipientStatus} else (),
        category=params.get("category") or None,
        start=_date(params.get("start")),
        end=_date(params.get("end")),
    )


def _date(text: str | None) -> datetime | None:
    """A date or date-time from the form, as UTC; None when empty or not a date."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise PageError(400, f"{text!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.get("/activity")
async def activity_page(request: Request, signed: SignedDep, db: SessionDep) -> Response:
    """Find messages by recipient, sender, subject, status, category and time."""
    signed.require(Scope.MESSAGES_READ)
    params = dict(request.query_params)
    searched = any(params.get(k) for k in ("recipient", "from", "subject", "status", "category"))
    try:
        page = await activity.search(
            db, signed.account_id, _filters(params), params.get("cursor") or None, PAGE_SIZE
        )
    except ApiError as exc:
        raise PageError(400, exc.errors[0].message) from None
    return render(
        request, "activity.html", signed=signed, page="activity", found=page,
        params=params, searched=searched, statuses=list(RecipientStatus),
    )  # fmt: skip


@router.get("/messages/{message_id}")
async def timeline_page(
    request: Request, message_id: str, signed: SignedDep, db: SessionDep
) -> Response:
    """Every recipient of the message with each attempt and event, in order."""
    signed.require(Scope.MESSAGES_READ)
    try:
        message = await messages.get_message_view(
            db, account_id=signed.account_id, message_id=message_id.upper()
        )
    except ApiError:
        raise PageError(404, "No such message in this account.") from None
    timelines = {r.id: _timeline(r) for r in message.recipients}
    return render(
        request, "message.html", signed=signed, page="activity", message=message,
        timelines=timelines,
    )  # fmt: skip


def _timeline(recipient: RecipientView) -> list[tuple[datetime, str, object]]:
    """A recipient's events and attempts in one list, in the order they happened."""
    items: list[tuple[datetime, str, object]] = [
        (event.created_at, "event", event) for event in recipient.events
    ]
    items += [(attempt.started_at, "attempt", attempt) for attempt in recipient.attempts]
    return sorted(items, key=lambda item: (item[0], item[1] == "event"))


@router.get("/messages/{message_id}/source")
async def source_page(
    request: Request, message_id: str, signed: SignedDep, db: SessionDep, settings: SettingsDep,
    recipient: str | None = None,
) -> Response:  # fmt: skip
    """The copy a recipient got: rendered, its raw source, and the DKIM verdict from DNS."""
    signed.require(Scope.MESSAGES_READ)
    found = await _source(db, settings, signed.account_id, message_id, recipient)
    return render(
        request, "source.html", signed=signed, page="activity", message_id=message_id.upper(),
        recipient=recipient, source=found, mail=mailview.view(found.data),
        raw=found.data.decode("utf-8", errors="replace"),
    )  # fmt: skip


@router.get("/messages/{message_id}/html")
async def message_html(
    message_id: str, signed: SignedDep, db: SessionDep, settings: SettingsDep,
    recipient: str | None = None,
) -> Response:  # fmt: skip
    """The copy's HTML body alone, for the sandboxed frame of the source page."""
    signed.require(Scope.MESSAGES_READ)
    found = await _source(db, settings, signed.account_id, message_id, recipient, check=False)
    return mail_html(mailview.view(found.data).html)


async def _source(
    db: SessionDep, settings: SettingsDep, account_id: str, message_id: str,
    recipient: str | None, *, check: bool = True,
) -> source.Source:  # fmt: skip
    """The signed copy, with 404 as a page; `check` False skips the DKIM look-ups."""
    try:
        return await source.source_of(
            db, settings, account_id=account_id, message_id=message_id.upper(),
            recipient_id=recipient.upper() if recipient else None, verify_dkim=check,
        )  # fmt: skip
    except source.ContentPurged:
        raise PageError(
            410,
            "The content of this message was removed after COLUMBA_CONTENT_RETENTION: it "
            "cannot be shown or rendered again. Its timeline (statuses, attempts and events) "
            "is kept until COLUMBA_RETENTION.",
        ) from None
    except ApiError:
        raise PageError(404, "No such message in this account.") from None


def mail_html(html: str | None) -> Response:
    """A mail's HTML served to a sandboxed frame: CSP `sandbox` applies even if the page is
    opened on its own (no scripts, a unique origin), and remote content is refused."""
    body = html if html is not None else "<p>This message has no HTML part.</p>"
    headers = {
        "Content-Security-Policy": MAIL_CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)
