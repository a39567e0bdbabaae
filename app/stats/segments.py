"""HTTP: SendGrid's `/v3/categories`, `/v3/categories/stats/sums`, `/v3/mailbox_providers/stats`
and the bounce classification totals under `/v3/suppression/bounces/classifications`
(tsg_stats_v3.yaml, tsg_suppressions_v3.yaml).

Included before the suppression lists' router: `/v3/suppression/bounces/{email}` would
otherwise read `classifications` as an address."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response

from app.common.fields import MAX_INT64
from app.core.errors import BadRequest
from app.delivery.classify import Bucket
from app.deps import SessionDep, StatsReader, SuppressionReader
from app.openapi import errors
from app.routing import StrictJsonRoute
from app.stats import dimensions, service
from app.stats.models import METRICS, SENDGRID_METRICS
from app.stats.router import (
    MAX_CATEGORIES,
    NOT_MODIFIED,
    _date,
    _sendgrid_metrics,
    _sendgrid_range,
    json_with_etag,
)
from app.stats.schemas import SendGridDay
from app.stats.service import Granularity

router = APIRouter(tags=["stats"], route_class=StrictJsonRoute)

# The metrics SendGrid's mailbox provider stats show (tsg_stats_v3.yaml, its example).
PROVIDER_METRICS = (
    "blocks",
    "bounces",
    "clicks",
    "deferred",
    "delivered",
    "drops",
    "opens",
    "processed",
    "requests",
    "spam_reports",
    "unique_clicks",
    "unique_opens",
)
CLASSIFICATION_DAYS = 30  # the range when start_date is not given


class Direction(StrEnum):
    """sort_by_direction."""

    DESC = "desc"
    ASC = "asc"


class SendGridPeriod(StrEnum):
    """aggregated_by where SendGrid allows day, week or month only."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@router.get(
    "/v3/categories",
    response_model=list[dict[str, str]],
    responses=errors(400, 401, 403),
)
async def list_categories(
    principal: StatsReader,
    session: SessionDep,
    category: Annotated[str | None, Query(description="A prefix to search by.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,  # SQL OFFSET is a bigint
) -> list[dict[str, str]]:
    """Every category the account has sent with (and still has stats for), by name."""
    names = await service.category_names(
        session, account_id=principal.account.id, prefix=category, limit=limit, offset=offset
    )
    return [{"category": name} for name in names]


@router.get(
    "/v3/categories/stats/sums",
    response_model=SendGridDay,
    response_model_exclude_none=True,
    responses={**errors(400, 401, 403), **NOT_MODIFIED},
)
async def category_sums(
    request: Request,
    principal: StatsReader,
    session: SessionDep,
    start_date: str,
    end_date: str | None = None,
    sort_by_metric: str = "delivered",
    sort_by_direction: Direction = Direction.DESC,
    limit: Annotated[int, Query(ge=1, le=500)] = 5,
    offset: Annotated[int, Query(ge=0)] = 0,
    aggregated_by: SendGridPeriod | None = None,  # accepted as SendGrid does: sums ignore it
) -> Response:
    """Each category's metrics summed over the range, sorted by one metric."""
    if sort_by_metric not in SENDGRID_METRICS:
        raise BadRequest("invalid sort value", "sort_by_metric")
    start_at, end_at = _sendgrid_range(start_date, end_date)
    sums = await service.category_sums(
        session, account_id=principal.account.id, start=start_at, end=end_at
    )
    sign = -1 if sort_by_direction is Direction.DESC else 1
    # Ties in name order (either direction), so that pages never overlap.
    names = sorted(sums, key=lambda name: (sign * sums[name][sort_by_metric], name))
    page = names[offset : offset + limit]
    body = {
        "date": start_at.date().isoformat(),
        "stats": [
            {"type": "category", "name": name, "metrics": _sendgrid_metrics(sums[name])}
            for name in page
        ],
    }
    return json_with_etag(request, body)


@router.get(
    "/v3/mailbox_providers/stats",
    response_model=list[SendGridDay],
    responses={**errors(400, 401, 403), **NOT_MODIFIED},
)
async def mailbox_provider_stats(
    request: Request,
    principal: StatsReader,
    session: SessionDep,
    start_date: str,
    end_date: str | None = None,
    aggregated_by: SendGridPeriod = SendGridPeriod.DAY,
    mailbox_providers: Annotated[
        list[str] | None,
        Query(description=f"Up to 10 of: {', '.join(dimensions.PROVIDERS)}."),
    ] = None,
    limit: Annotated[int, Query(ge=1)] = 500,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """Metrics per period and mailbox provider (by the recipient's domain): the providers
    asked for, or every one that had mail in the range."""
    asked = list(dict.fromkeys(mailbox_providers or ()))
    if len(asked) > MAX_CATEGORIES:
        raise BadRequest(f"give at most {MAX_CATEGORIES} mailbox providers", "mailbox_providers")
    start_at, end_at = _sendgrid_range(start_date, end_date)
    keys = [dimensions.provider_key(name) for name in asked or dimensions.PROVIDERS]
    rows = await service.series(
        session,
        account_id=principal.account.id,
        start=start_at,
        end=end_at,
        granularity=Granularity(aggregated_by.value),
        categories=keys,
    )
    shown = keys if asked else [k for k in keys if any(any(per[k].values()) for _, per in rows)]
    body = [
        {
            "date": _date(period, Granularity(aggregated_by.value)),
            "stats": [
                {
                    "type": "mailbox_provider",
                    "name": key.removeprefix(dimensions.PROVIDER),
                    "metrics": {metric: per[key][metric] for metric in PROVIDER_METRICS},
                }
                for key in shown
            ],
        }
        for period, per in rows
    ]
    return json_with_etag(request, body[offset : offset + limit])


Accept = Annotated[str, Header(description="application/json, or text/csv for CSV.")]


@router.get(
    "/v3/suppression/bounces/classifications",
    tags=["sendgrid: bounces"],
    responses=errors(400, 401, 403),
)
async def bounce_classifications(
    principal: SuppressionReader,
    session: SessionDep,
    accept: Accept = "application/json",
    start_date: str | None = None,
    end_date: str | None = None,
) -> Response:
    """Bounces and blocks per day and classification, most first."""
    prefix = dimensions.CLASSIFICATION
    per_day = await _daily(session, principal.account.id, prefix, start_date, end_date)
    return _classified(per_day, "classification", accept)


@router.get(
    "/v3/suppression/bounces/classifications/{classification}",
    tags=["sendgrid: bounces"],
    responses=errors(400, 401, 403),
)
async def bounce_classification_domains(
    classification: Annotated[Bucket, Path(description="One of SendGrid's classifications.")],
    principal: SuppressionReader,
    session: SessionDep,
    accept: Accept = "application/json",
    start_date: str | None = None,
    end_date: str | None = None,
) -> Response:
    """One classification's bounces and blocks per day and recipient domain, most first."""
    prefix = dimensions.classification_domain_prefix(classification.value)
    per_day = await _daily(session, principal.account.id, prefix, start_date, end_date)
    return _classified(per_day, "domain", accept)


async def _daily(
    session: SessionDep, account_id: str, prefix: str, start: str | None, end: str | None
) -> dict[str, dict[str, int]]:
    """Bounces plus blocks per day and key (the part after `prefix`), in the range."""
    start_at, end_at = _sendgrid_range(start or "1970-01-01", end)  # 400 for a bad date
    if start is None:
        start_at = max(start_at, end_at - timedelta(days=CLASSIFICATION_DAYS))
    rows = await service.keys_like(
        session, account_id=account_id, prefix=prefix, start=start_at, end=end_at
    )
    counted = (METRICS.index("bounces"), METRICS.index("blocks"))
    per_day: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (key, hour), values in sorted(rows.items()):
        count = sum(values[index] for index in counted)
        if count:
            per_day[hour.date().isoformat()][key.removeprefix(prefix)] += count
    return per_day


def _classified(per_day: dict[str, dict[str, int]], field: str, accept: str) -> Response:
    """`{"result": [{"date", "stats": [{field, "count"}]}]}`, or the same rows as CSV."""
    result = [
        {
            "date": day,
            "stats": [
                {field: name, "count": count}
                for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            ],
        }
        for day, counts in sorted(per_day.items())
    ]
    if "text/csv" in accept.lower():
        return Response(_csv(result, field), media_type="text/csv")
    return json_response({"result": result})


def _csv(result: list[dict[str, Any]], field: str) -> str:
    """One line per day and name: `date,<field>,count`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180 §2: CRLF line breaks
    writer.writerow(["date", field, "count"])
    for day in result:
        for stat in day["stats"]:
            writer.writerow([day["date"], stat[field], stat["count"]])
    return out.getvalue()


def json_response(body: Any) -> Response:
    """A JSON body, written compactly."""
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")
