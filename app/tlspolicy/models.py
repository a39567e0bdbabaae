"""Tables: cached MTA-STS policies, TLS-RPT counters and the reports sent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock
from app.core.db import Base, JSONType, UTCDateTime
from app.messages.models import AutoIncrement


class MtaStsPolicy(Base):
    """The last MTA-STS policy fetched for a recipient domain, shared by every worker and
    kept across restarts: RFC 8461 §5.1 has senders keep it for its max_age."""

    __tablename__ = "mta_sts_policies"

    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    policy_id: Mapped[str] = mapped_column(String(32))  # the TXT record's id=
    mode: Mapped[str] = mapped_column(String(8))
    mx: Mapped[list[str]] = mapped_column(JSONType)
    max_age: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)  # as served, for the TLS-RPT policy-string
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TlsReportCount(Base):
    """Sessions of one UTC day to one MX of a policy domain, by result (RFC 8460 §4.3)."""

    __tablename__ = "tls_report_counts"
    __table_args__ = (
        UniqueConstraint(
            "day", "policy_domain", "policy_type", "mx_host", "result_type", "receiving_ip"
        ),
    )

    id: Mapped[int] = mapped_column(AutoIncrement, primary_key=True, autoincrement=True)
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD, UTC
    policy_domain: Mapped[str] = mapped_column(String(253))
    policy_type: Mapped[str] = mapped_column(String(16))  # sts | no-policy-found
    policy_string: Mapped[list[str]] = mapped_column(JSONType, default=list)
    mx_host: Mapped[str] = mapped_column(String(253), default="")
    result_type: Mapped[str] = mapped_column(String(40))  # "success" or an RFC 8460 type
    receiving_ip: Mapped[str] = mapped_column(String(45), default="")
    detail: Mapped[str | None] = mapped_column(Text, default=None)  # additional-information
    count: Mapped[int] = mapped_column(Integer, default=0)


class TlsReport(Base):
    """A daily report built for a policy domain, and where it went (sent once per day)."""

    __tablename__ = "tls_reports"
    __table_args__ = (UniqueConstraint("day", "policy_domain"),)

    id: Mapped[int] = mapped_column(AutoIncrement, primary_key=True, autoincrement=True)
    day: Mapped[str] = mapped_column(String(10))
    policy_domain: Mapped[str] = mapped_column(String(253))
    report_id: Mapped[str] = mapped_column(String(128))
    report: Mapped[dict[str, Any]] = mapped_column(JSONType)
    delivered_to: Mapped[list[str]] = mapped_column(JSONType, default=list)
    errors: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
