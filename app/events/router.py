"""HTTP: `GET /v1/events`, the event feed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.core.errors import BadRequest
from app.deps import DatabaseDep, MessagesReader, SessionDep
from app.events import feed, sequencer
from app.events.models import EventType
from app.events.schemas import EventPage
from app.events.waiting import LongPolls
from app.openapi import errors
from app.routing import StrictJsonRoute

router = APIRouter(tags=["events"], route_class=StrictJsonRoute)

MAX_WAIT_SECONDS = 30


def _types(values: list[str]) -> tuple[str, ...]:
    """`type=a&type=b` or `type=a,b`; unknown names are a 400."""
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    known = {event_type.value for event_type in EventType}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise BadRequest(
            f"unknown event type {unknown[0]!r}; known types: {', '.join(sorted(known))}", "type"
        )
    return tuple(dict.fromkeys(names))


@router.get("/v1/events", response_model=EventPage, responses=errors(400, 401, 403, 429))
async def list_events(
    request: Request,
    principal: MessagesReader,
    session: SessionDep,
    database: DatabaseDep,
    after: Annotated[
        str | None, Query(description="A `next_cursor` from an earlier page; omit to start.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    type: Annotated[list[str], Query(description="Only these event types.")] = [],  # noqa: B006
    message_id: str | None = None,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT_SECONDS, description="Seconds to wait for an event.")
    ] = 0,
) -> EventPage:
    """Events in commit order after a cursor; following `next_cursor` sees each event once.

    With `wait`, an empty page is held until an event arrives (long poll); past
    LONG_POLL_MAX_PER_KEY waiting requests of one key or LONG_POLL_MAX in the process: 429."""
    # Authentication read the key in the request's session: hand its connection back to the
    # pool now, so that a request waiting up to 30 s holds none (issue 10, item 3).
    await session.close()
    try:
        position = feed.parse_cursor(after)
    except ValueError as exc:
        raise BadRequest(str(exc), "after") from exc
    query = feed.FeedQuery(
        account_id=principal.account.id,
        after=position,
        limit=limit,
        types=_types(type),
        message_id=message_id,
    )

    async def read() -> EventPage:
        """Sequence what has committed, then read one page."""
        async with database.session() as session:
            await sequencer.sequence(session)
            await session.commit()
            return await feed.page(session, query)

    polls: LongPolls = request.app.state.long_polls
    return await feed.wait_for_page(read, wait=wait, hold=lambda: polls.hold(principal.api_key.id))
