"""HTTP: `GET /v1/inbound`, every message `columba inbound` received, with its outcome."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.bounces import inbox
from app.bounces.intake import Outcome
from app.bounces.schemas import InboundList, InboundView
from app.core.errors import NotFound
from app.delivery.classify import BounceKind
from app.deps import MessagesReader, SessionDep
from app.openapi import errors
from app.routing import StrictJsonRoute

router = APIRouter(tags=["inbound"], route_class=StrictJsonRoute)


@router.get("/v1/inbound", response_model=InboundList, responses=errors(400, 401, 403))
async def list_inbound(
    principal: MessagesReader,
    session: SessionDep,
    outcome: Outcome | None = None,
    bounce_type: BounceKind | None = None,
    email: Annotated[
        str | None, Query(max_length=320, description="The recipient the bounce named.")
    ] = None,
    message_id: Annotated[str | None, Query(max_length=26)] = None,
    start_time: Annotated[datetime | None, Query(description="Received at or after.")] = None,
    end_time: Annotated[datetime | None, Query(description="Received before.")] = None,
    before: Annotated[
        str | None, Query(max_length=26, description="A `next_cursor` from an earlier page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> InboundList:
    """Bounces, delays, complaints, auto-replies and unclassified mail received for the
    account's messages, newest first, with cursor pagination."""
    where = inbox.InboxFilter(
        account_id=principal.account.id,
        outcome=outcome,
        bounce_type=bounce_type.value if bounce_type else None,
        email=email,
        message_id=message_id,
        since=start_time,
        until=end_time,
    )
    rows = await inbox.list_before(session, where=where, before=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return InboundList(
        messages=[InboundView.of(row) for row in rows],
        next_cursor=rows[-1].id if more else None,
    )


@router.get("/v1/inbound/{id}", response_model=InboundView, responses=errors(401, 403, 404))
async def get_inbound(id: str, principal: MessagesReader, session: SessionDep) -> InboundView:
    """One received message and what was concluded about it."""
    row = await inbox.get(session, account_id=principal.account.id, id=id)
    if row is None:
        raise NotFound("no such inbound message", "id")
    return InboundView.of(row)


@router.get(
    "/v1/inbound/{id}/raw",
    response_class=Response,
    responses={
        200: {"content": {"message/rfc822": {}}, "description": "The message as received."},
        **errors(401, 403, 404),
    },
)
async def get_inbound_raw(id: str, principal: MessagesReader, session: SessionDep) -> Response:
    """The message as received (its first COLUMBA_INBOUND_STORE_MAX_SIZE bytes)."""
    row = await inbox.get(session, account_id=principal.account.id, id=id)
    if row is None:
        raise NotFound("no such inbound message", "id")
    headers = {"X-Columba-Truncated": "true"} if row.raw_truncated else {}
    return Response(content=row.raw, media_type="message/rfc822", headers=headers)
