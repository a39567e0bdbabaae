"""HTTP: `GET /v1/messages`, the activity search (app.messages.search)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.core.errors import BadRequest
from app.deps import MessagesReader, SessionDep
from app.messages import search
from app.messages.models import RecipientStatus
from app.messages.search_schemas import FoundMessageView, FoundRecipientView, MessageSearchPage
from app.openapi import errors
from app.routing import StrictJsonRoute

router = APIRouter(tags=["messages"], route_class=StrictJsonRoute)

KNOWN = frozenset(
    {"recipient", "from", "subject", "status", "category", "template_id", "batch_id", "start",
     "end", "cursor", "limit"}
)  # fmt: skip
METADATA = "metadata."
MAX_VALUE = 320  # characters of a filter value (the longest address)


@router.get(
    "/v1/messages",
    response_model=MessageSearchPage,
    response_model_by_alias=True,
    responses=errors(400, 401, 403),
)
async def search_messages(
    request: Request,
    principal: MessagesReader,
    session: SessionDep,
    recipient: Annotated[
        str | None, Query(description="An address (any case), or `@domain` for all of one.")
    ] = None,
    from_: Annotated[str | None, Query(alias="from", description="The From address.")] = None,
    subject: Annotated[
        str | None, Query(description="The subject starts with this (any case).")
    ] = None,
    status: Annotated[RecipientStatus | None, Query(description="A recipient is in it.")] = None,
    category: str | None = None,
    template_id: str | None = None,
    batch_id: str | None = None,
    start: Annotated[
        str | None, Query(description="Accepted at or after (ISO 8601 or Unix seconds).")
    ] = None,
    end: Annotated[
        str | None, Query(description="Accepted before (ISO 8601 or Unix seconds).")
    ] = None,
    cursor: Annotated[
        str | None, Query(description="A `next_cursor` from an earlier page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=search.MAX_LIMIT)] = 50,
) -> MessageSearchPage:
    """Messages of the account, newest first. `metadata.KEY=VALUE` (repeatable) matches the
    message's (or a recipient's) custom_args. Every filter given must match; recipient and
    status must hold for the same recipient, and only matching recipients are listed."""
    filters = search.SearchFilters(
        recipient=_value(recipient, "recipient"),
        sender=_value(from_, "from"),
        subject=_value(subject, "subject"),
        statuses=(status,) if status else (),
        category=_value(category, "category"),
        metadata=_metadata(request),
        template_id=_value(template_id, "template_id"),
        batch_id=_value(batch_id, "batch_id"),
        start=parse_time(start, "start"),
        end=parse_time(end, "end"),
    )
    _check(filters)
    page = await search.search(session, principal.account.id, filters, cursor, limit)
    return MessageSearchPage(
        messages=[_view(m) for m in page.messages], next_cursor=page.next_cursor
    )


def _value(value: str | None, field: str) -> str | None:
    """A filter value: None when absent; 400 when empty or too long."""
    if value is None:
        return None
    if not value.strip():
        raise BadRequest(f"{field} must not be empty", field)
    if len(value) > MAX_VALUE:
        raise BadRequest(f"{field} must be at most {MAX_VALUE} characters", field)
    return value


def _metadata(request: Request) -> tuple[tuple[str, str], ...]:
    """The `metadata.KEY=VALUE` pairs; 400 for a parameter no filter knows (a typo would
    otherwise widen the search silently)."""
    pairs = []
    for name, value in request.query_params.multi_items():
        if name.startswith(METADATA) and len(name) > len(METADATA):
            pairs.append((name.removeprefix(METADATA), _value(value, name) or ""))
        elif name not in KNOWN:
            raise BadRequest(f"unknown filter {name!r}", name)
    return tuple(dict.fromkeys(pairs))


def _check(filters: search.SearchFilters) -> None:
    """400 for values that cannot match anything by construction."""
    if filters.recipient is not None and "@" not in filters.recipient:
        raise BadRequest("recipient must be an address or @domain", "recipient")
    if filters.start and filters.end and filters.start >= filters.end:
        raise BadRequest("start must be before end", "start")


def parse_time(value: str | None, field: str) -> datetime | None:
    """ISO 8601 (a date, or a time with or without an offset: UTC if none) or Unix seconds."""
    if value is None:
        return None
    text = value.strip()
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError) as exc:
        raise BadRequest(
            f"{field} is not an ISO 8601 time or Unix seconds: {value!r}", field
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _view(found: search.FoundMessage) -> FoundMessageView:
    return FoundMessageView.model_validate(
        {
            "id": found.id,
            "created_at": found.created_at,
            "from": {"email": found.from_email, "name": found.from_name},
            "subject": found.subject,
            "categories": found.categories,
            "metadata": found.metadata,
            "template_id": found.template_id,
            "batch_id": found.batch_id,
            "recipient_count": found.recipient_count,
            "status_counts": found.status_counts,
            "recipients": [
                FoundRecipientView.model_validate(r, from_attributes=True) for r in found.recipients
            ],
            "url": f"/v1/messages/{found.id}",
        }
    )
