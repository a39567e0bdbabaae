"""HTTP: SendGrid's Email Activity API, `GET /v3/messages` and `GET /v3/messages/{msg_id}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.core.errors import BadRequest
from app.deps import MessagesReader, SessionDep
from app.messages import activity, activity_query, search
from app.messages.search_schemas import ActivityDetail, ActivityList, ActivityMessage
from app.openapi import errors
from app.routing import StrictJsonRoute

router = APIRouter(tags=["sendgrid"], route_class=StrictJsonRoute)


@router.get("/v3/messages", response_model=ActivityList, responses=errors(400, 401, 403))
async def filter_messages(
    principal: MessagesReader,
    session: SessionDep,
    query: Annotated[
        str | None,
        Query(
            description='SendGrid\'s query language, e.g. `to_email="ann@example.com" AND '
            'status="delivered"`; last_event_time compares with the acceptance time.'
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Rows to return.")] = 10,
) -> ActivityList:
    """Recipients' copies, newest first, one row per recipient (SendGrid's Email Activity)."""
    try:
        alternatives = activity_query.to_filters(query) if query else [search.SearchFilters()]
    except activity_query.QueryError as exc:
        raise BadRequest(str(exc), "query") from exc
    rows = await activity.list_activity(session, principal.account.id, alternatives, limit)
    return ActivityList(
        messages=[ActivityMessage.model_validate(r, from_attributes=True) for r in rows]
    )


@router.get("/v3/messages/{msg_id}", response_model=ActivityDetail, responses=errors(401, 403, 404))
async def filter_message(
    msg_id: str, principal: MessagesReader, session: SessionDep
) -> ActivityDetail:
    """One recipient's copy with its events (SendGrid's msg_id: `<message id>.<recipient id>`)."""
    detail = await activity.activity_detail(session, principal.account.id, msg_id)
    return ActivityDetail.model_validate(detail)
