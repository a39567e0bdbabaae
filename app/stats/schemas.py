"""Bodies of the stats APIs: the native one and SendGrid's /v3 shapes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, create_model

from app.stats.models import METRICS, SENDGRID_METRICS


def _metrics_model(name: str, metrics: tuple[str, ...], doc: str) -> type[BaseModel]:
    """A model with an int field, default 0, per metric."""
    fields: dict[str, object] = {metric: (int, 0) for metric in metrics}
    model: type[BaseModel] = create_model(name, __doc__=doc, **fields)  # type: ignore[call-overload]
    return model


Metrics = _metrics_model("Metrics", METRICS, "SendGrid's metric names, plus `drops` (all drops).")
SendGridMetrics = _metrics_model("SendGridMetrics", SENDGRID_METRICS, "SendGrid's metrics.")


class PeriodStats(BaseModel):
    """The metrics of one period."""

    start: datetime
    metrics: Metrics  # type: ignore[valid-type]


class StatsReport(BaseModel):
    """`GET /v1/stats`: metrics per period, and their totals."""

    granularity: str
    start: datetime
    end: datetime
    category: str | None = Field(description="The category asked for; null for all mail.")
    stats: list[PeriodStats]
    totals: Metrics  # type: ignore[valid-type]


class SendGridStat(BaseModel):
    """One entry of `stats` in SendGrid's shape."""

    model_config = ConfigDict(json_schema_extra={"required": ["metrics"]})

    type: str | None = None
    name: str | None = None
    metrics: SendGridMetrics  # type: ignore[valid-type]


class SendGridDay(BaseModel):
    """One date of SendGrid's stats response."""

    date: str
    stats: list[SendGridStat]
