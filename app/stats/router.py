"""HTTP: `GET /v1/stats`, and SendGrid's `GET /v3/stats` and `GET /v3/categories/stats`.

Dashboards poll these every few seconds, so every answer carries an ETag (a digest of the
body) and a request whose If-None-Match matches gets 304 with no body."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from app.common.fields import in_utc
from app.core import clock
from app.core.errors import BadRequest
from app.deps import SessionDep, StatsReader
from app.openapi import errors
from app.routing import StrictJsonRoute
from app.stats import dimensions, service
from app.stats.models import ALL_CATEGORIES, METRICS, SENDGRID_METRICS
from app.stats.schemas import SendGridDay, StatsReport
from app.stats.service import Granularity

router = APIRouter(tags=["stats"], route_class=StrictJsonRoute)

MAX_CATEGORIES = 10  # as SendGrid
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {304: {"description": "Not modified (ETag)"}}


def json_with_etag(request: Request, body: Any) -> Response:
    """The body as JSON with a strong ETag; 304 when the client already has it."""
    content = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    presented = [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]
    if etag in presented or "*" in presented:
        return Response(status_code=304, headers=headers)
    return Response(content, media_type="application/json", headers=headers)


# Counters start with Columba; the upper bound leaves room for the period after the last one.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def parse_moment(value: str, field: str, *, end: bool = False) -> datetime:
    """A date (`2026-11-01`) or an ISO 8601 time; naive times are UTC. A date as `end`
    includes that whole day. 400 outside 1970-01-01 to 9999-01-01."""
    try:
        moment = _moment(value, end=end)
    except ValueError as exc:
        raise BadRequest(f"{field} must be a date (YYYY-MM-DD) or an ISO 8601 time", field) from exc
    if moment is None or not EARLIEST <= moment <= LATEST:
        raise BadRequest(f"{field} must lie between 1970-01-01 and 9999-01-01", field)
    return moment


def _moment(value: str, *, end: bool) -> datetime | None:
    """The moment in UTC; None when it has none (past what a datetime holds)."""
    if len(value) == 10:
        day = service.day_start(date.fromisoformat(value))
        if not end:
            return day
        return day + timedelta(days=1) if day < LATEST else None  # 9999-12-31 has no next day
    parsed = datetime.fromisoformat(value)
    try:
        return in_utc(parsed)
    except ValueError:
        return None


@router.get(
    "/v1/stats",
    response_model=StatsReport,
    responses={**errors(400, 401, 403), **NOT_MODIFIED},
)
async def get_stats(
    request: Request,
    principal: StatsReader,
    session: SessionDep,
    start: Annotated[str, Query(description="A date or ISO 8601 time (inclusive).")],
    end: Annotated[
        str | None,
        Query(
            description="A date (inclusive) or ISO 8601 time (exclusive); "
            "default the end of the current hour."
        ),
    ] = None,
    granularity: Granularity = Granularity.DAY,
    category: Annotated[str | None, Query(max_length=255)] = None,
) -> Response:
    """Metrics per hour, day, week or month (UTC), for all mail or one category."""
    start_at = parse_moment(start, "start")
    if category is not None and not dimensions.is_category(category):
        raise BadRequest("a category must not start with a control character", "category")
    # Default: the end of the current hour, so that the answer (and its ETag) stays the same
    # while nothing happens, however often a dashboard polls.
    end_at = (
        parse_moment(end, "end", end=True)
        if end
        else service.period_start(clock.now(), Granularity.HOUR) + timedelta(hours=1)
    )
    try:
        rows = await service.series(
            session,
            account_id=principal.account.id,
            start=start_at,
            end=end_at,
            granularity=granularity,
            categories=(category if category is not None else ALL_CATEGORIES,),
        )
    except ValueError as exc:
        raise BadRequest(str(exc), "end") from exc
    stats = [{"start": _iso(period), "metrics": next(iter(per.values()))} for period, per in rows]
    per_period = [next(iter(per.values())) for _, per in rows]
    totals = {metric: sum(metrics[metric] for metrics in per_period) for metric in METRICS}
    # Built as plain data (the shape StatsReport documents): validating 720 buckets of
    # 17 integers through pydantic would cost more than the query.
    report = {
        "granularity": granularity.value,
        "start": _iso(start_at),
        "end": _iso(end_at),
        "category": category,
        "stats": stats,
        "totals": totals,
    }
    return json_with_etag(request, report)


def _iso(moment: datetime) -> str:
    """UTC times as pydantic writes them: `2026-11-01T00:00:00Z`."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _sendgrid_range(start_date: str, end_date: str | None) -> tuple[datetime, datetime]:
    """SendGrid's YYYY-MM-DD range: both days included; end defaults to today."""
    for name, value in (("start_date", start_date), ("end_date", end_date)):
        if value is not None and len(value) != 10:
            raise BadRequest(f"{name} must be in the format YYYY-MM-DD", name)
    start_at = parse_moment(start_date, "start_date")
    end_at = (
        parse_moment(end_date, "end_date", end=True)
        if end_date
        else service.day_start(clock.now().date()) + timedelta(days=1)
    )
    if end_at <= start_at:
        raise BadRequest("end_date must not be before start_date", "end_date")
    return start_at, end_at


def _sendgrid_metrics(metrics: dict[str, int]) -> dict[str, int]:
    """Only SendGrid's own metric names."""
    return {metric: metrics[metric] for metric in SENDGRID_METRICS}


AggregatedBy = Annotated[
    Granularity, Query(description="day, week or month (hour is a Columba extension).")
]


@router.get(
    "/v3/stats",
    response_model=list[SendGridDay],
    response_model_exclude_none=True,
    responses={**errors(400, 401, 403), **NOT_MODIFIED},
)
async def sendgrid_global_stats(
    request: Request,
    principal: StatsReader,
    session: SessionDep,
    start_date: str,
    end_date: str | None = None,
    aggregated_by: AggregatedBy = Granularity.DAY,
    limit: Annotated[int | None, Query(ge=1)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """SendGrid's global stats: `[{"date", "stats": [{"metrics": {...}}]}]`."""
    start_at, end_at = _sendgrid_range(start_date, end_date)
    try:
        rows = await service.series(
            session,
            account_id=principal.account.id,
            start=start_at,
            end=end_at,
            granularity=aggregated_by,
        )
    except ValueError as exc:
        raise BadRequest(str(exc), "end_date") from exc
    body = [
        {"date": _date(period, aggregated_by), "stats": [{"metrics": _sendgrid_metrics(m)}]}
        for period, per in rows
        for m in per.values()
    ]
    body = body[offset : offset + limit if limit else None]
    return json_with_etag(request, body)


def _date(period: datetime, granularity: Granularity) -> str:
    """SendGrid labels periods by date; hours get the full time."""
    return period.isoformat() if granularity is Granularity.HOUR else period.date().isoformat()


@router.get(
    "/v3/categories/stats",
    response_model=list[SendGridDay],
    response_model_exclude_none=True,
    responses={**errors(400, 401, 403), **NOT_MODIFIED},
)
async def sendgrid_category_stats(
    request: Request,
    principal: StatsReader,
    session: SessionDep,
    start_date: str,
    categories: Annotated[list[str], Query(description="Up to 10 categories.")],
    end_date: str | None = None,
    aggregated_by: AggregatedBy = Granularity.DAY,
) -> Response:
    """SendGrid's category stats: each date with one entry per category asked for."""
    names = list(dict.fromkeys(c for value in categories for c in value.split(",") if c))
    if not names or len(names) > MAX_CATEGORIES:
        raise BadRequest(f"give between 1 and {MAX_CATEGORIES} categories", "categories")
    if not all(map(dimensions.is_category, names)):  # a key of app.stats.dimensions
        raise BadRequest("a category must not start with a control character", "categories")
    start_at, end_at = _sendgrid_range(start_date, end_date)
    try:
        rows = await service.series(
            session,
            account_id=principal.account.id,
            start=start_at,
            end=end_at,
            granularity=aggregated_by,
            categories=names,
        )
    except ValueError as exc:
        raise BadRequest(str(exc), "end_date") from exc
    body = [
        {
            "date": _date(period, aggregated_by),
            "stats": [
                {"type": "category", "name": name, "metrics": _sendgrid_metrics(per[name])}
                for name in names
            ],
        }
        for period, per in rows
    ]
    return json_with_etag(request, body)
