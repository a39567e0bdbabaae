"""HTTP: `/v1/suppressions` and SendGrid's `/v3/suppression/{list}`."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from app.common.fields import MAX_INT64, MAX_UNIX_TIME
from app.core.errors import NotFound
from app.deps import SessionDep, SuppressionCreator, SuppressionDeleter, SuppressionReader
from app.openapi import errors
from app.routing import StrictJsonRoute
from app.suppressions import service
from app.suppressions.models import Suppression, SuppressionType
from app.suppressions.schemas import (
    AddSuppressions,
    SendGridDeleteMany,
    SendGridSuppression,
    SuppressionList,
    SuppressionView,
)

router = APIRouter(tags=["suppressions"], route_class=StrictJsonRoute)


@router.get("/v1/suppressions", response_model=SuppressionList, responses=errors(400, 401, 403))
async def list_suppressions(
    principal: SuppressionReader,
    session: SessionDep,
    type: SuppressionType | None = None,
    email: Annotated[str | None, Query(description="Addresses starting with this.")] = None,
    after: Annotated[str | None, Query(description="A `next_cursor` from an earlier page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SuppressionList:
    """Suppressed addresses, oldest first, with cursor pagination."""
    where = service.ListFilter(
        account_id=principal.account.id, types=(type.value,) if type else (), email=email
    )
    rows = await service.list_after(session, where=where, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return SuppressionList(
        suppressions=[SuppressionView.of(row) for row in rows],
        next_cursor=rows[-1].id if more else None,
    )


@router.post(
    "/v1/suppressions",
    status_code=201,
    response_model=SuppressionList,
    responses=errors(400, 401, 403),
)
async def add_suppressions(
    body: AddSuppressions, principal: SuppressionCreator, session: SessionDep
) -> SuppressionList:
    """Suppress one or many addresses; later sends to them are dropped at once."""
    entries = [
        service.NewSuppression(email=item.email, type=item.type, reason=item.reason)
        for item in body.suppressions
    ]
    rows = await service.add_many(session, account_id=principal.account.id, entries=entries)
    await session.commit()
    return SuppressionList(suppressions=[SuppressionView.of(row) for row in rows], next_cursor=None)


@router.get(
    "/v1/suppressions/{email}",
    response_model=list[SuppressionView],
    responses=errors(401, 403, 404),
)
async def lookup_suppression(
    email: str, principal: SuppressionReader, session: SessionDep
) -> list[SuppressionView]:
    """Every suppression of one address; 404 when it is not suppressed."""
    rows = await service.lookup(session, account_id=principal.account.id, email=email)
    if not rows:
        raise NotFound(f"{email} is not suppressed", "email")
    return [SuppressionView.of(row) for row in rows]


@router.delete("/v1/suppressions/{email}", status_code=204, responses=errors(400, 401, 403, 404))
async def delete_suppression(
    email: str,
    principal: SuppressionDeleter,
    session: SessionDep,
    type: Annotated[SuppressionType | None, Query(description="Only this type.")] = None,
) -> Response:
    """Remove an address's suppressions (of one type); sends to it are allowed again."""
    types = (type.value,) if type else tuple(t.value for t in SuppressionType)
    removed = await service.remove(
        session, account_id=principal.account.id, types=types, emails=[email]
    )
    if not removed:
        raise NotFound(f"{email} is not suppressed", "email")
    await session.commit()
    return Response(status_code=204)


# SendGrid's lists and the suppression type each one shows.
SENDGRID_LISTS = {
    "bounces": SuppressionType.BOUNCE,
    "blocks": SuppressionType.BLOCK,
    "spam_reports": SuppressionType.COMPLAINT,
    "invalid_emails": SuppressionType.INVALID,
    "unsubscribes": SuppressionType.UNSUBSCRIBE,
}


def _sendgrid_entry(name: str, row: Suppression) -> dict[str, Any]:
    """A row in the shape of SendGrid's list `name` (tsg_suppressions_v3.yaml)."""
    entry: dict[str, Any] = {"created": int(row.created_at.timestamp()), "email": row.email}
    if name in {"bounces", "blocks"}:
        entry.update(reason=row.reason, status=row.status)
    elif name == "invalid_emails":
        entry["reason"] = row.reason
    elif name == "spam_reports":
        entry["ip"] = ""  # the IP the message was sent from; Columba does not track it
    return entry


UnixTime = Annotated[int | None, Query(ge=0, le=MAX_UNIX_TIME, description="A Unix time.")]


def _timestamp(value: int | None) -> datetime | None:
    """A Unix time as an aware datetime."""
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _add_sendgrid_routes(name: str, kind: SuppressionType) -> None:
    """GET/DELETE for the list and for one address of it."""
    tag: list[str | Enum] = [f"sendgrid: {name.replace('_', ' ')}"]

    async def list_entries(
        principal: SuppressionReader,
        session: SessionDep,
        start_time: UnixTime = None,
        end_time: UnixTime = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 500,
        offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
        email: Annotated[str | None, Query(description="Prefix; `%` is a wildcard.")] = None,
    ) -> list[dict[str, Any]]:
        """The list, newest first, with SendGrid's filters."""
        where = service.ListFilter(
            account_id=principal.account.id,
            types=(kind.value,),
            email=email,
            created_from=_timestamp(start_time),
            created_to=_timestamp(end_time),
        )
        rows = await service.list_offset(session, where=where, offset=offset, limit=limit)
        return [_sendgrid_entry(name, row) for row in rows]

    async def delete_entries(
        principal: SuppressionDeleter, session: SessionDep, body: SendGridDeleteMany
    ) -> Response:
        """Delete some addresses, or all, from the list."""
        await service.remove(
            session,
            account_id=principal.account.id,
            types=(kind.value,),
            emails=None if body.delete_all else body.emails,
        )
        await session.commit()
        return Response(status_code=204)

    async def get_entry(
        email: str, principal: SuppressionReader, session: SessionDep
    ) -> list[dict[str, Any]]:
        """One address's entry (an empty list when absent)."""
        rows = await service.lookup(
            session, account_id=principal.account.id, email=email, types=(kind.value,)
        )
        return [_sendgrid_entry(name, row) for row in rows]

    async def delete_entry(
        email: str, principal: SuppressionDeleter, session: SessionDep
    ) -> Response:
        """Delete one address from the list."""
        removed = await service.remove(
            session, account_id=principal.account.id, types=(kind.value,), emails=[email]
        )
        if not removed:
            raise NotFound("Email does not exist", "email")
        await session.commit()
        return Response(status_code=204)

    path = f"/v3/suppression/{name}"
    model = list[SendGridSuppression]
    for endpoint, method, route, options in (
        (list_entries, "GET", path, {"response_model": model}),
        (delete_entries, "DELETE", path, {"status_code": 204}),
        (get_entry, "GET", path + "/{email}", {"response_model": model}),
        (delete_entry, "DELETE", path + "/{email}", {"status_code": 204}),
    ):
        endpoint.__doc__ = f"SendGrid's {method} {route}."
        router.add_api_route(
            route,
            endpoint,
            methods=[method],
            tags=tag,
            name=f"{method.lower()}_{name}{'_one' if '{email}' in route else ''}",
            response_model_exclude_none=True,
            responses=errors(400, 401, 403, 404),
            **options,
        )


for _name, _kind in SENDGRID_LISTS.items():
    _add_sendgrid_routes(_name, _kind)
