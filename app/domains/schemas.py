"""Bodies of the `/v1/domains` routes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.domains.checks import DomainReport
from app.domains.models import Domain, DomainKey
from app.domains.service import DnsRecord


class RecordToPublish(BaseModel):
    """A DNS record the domain owner publishes."""

    type: str
    name: str
    value: str
    purpose: str

    @classmethod
    def of(cls, record: DnsRecord) -> RecordToPublish:
        """From the service's record."""
        return cls(type=record.type, name=record.name, value=record.value, purpose=record.purpose)


class KeyView(BaseModel):
    """A DKIM key in rotation: the next one, or a previous one still (or no longer) published."""

    selector: str
    algorithm: str
    state: str
    retire_at: datetime | None


class RecordCheckView(BaseModel):
    """The verdict on one record: valid, missing, wrong, or error (DNS failed)."""

    kind: str
    type: str
    name: str
    status: str
    expected: str
    found: list[str]
    detail: str
    required: bool
    selector: str | None


class VerificationView(BaseModel):
    """Every record of the domain, checked now."""

    domain: str
    checked_at: datetime
    verified: bool
    records: list[RecordCheckView]

    @classmethod
    def of(cls, report: DomainReport | dict[str, Any]) -> VerificationView:
        """From a fresh report, or one stored on the domain."""
        data = report.to_json() if isinstance(report, DomainReport) else report
        return cls.model_validate(data)


class DomainView(BaseModel):
    """A sending domain, its verification and the records to publish."""

    id: str
    domain: str
    verified: bool
    verified_at: datetime | None
    last_checked_at: datetime | None
    dkim_selector: str
    ed25519_selector: str | None
    bounce_domain: str
    dns_records: list[RecordToPublish]
    keys: list[KeyView]
    last_check: VerificationView | None

    @classmethod
    def of(
        cls, domain: Domain, keys: Sequence[DomainKey], records: Sequence[DnsRecord]
    ) -> DomainView:
        """From the domain, its keys in rotation and its records."""
        return cls(
            id=domain.id,
            domain=domain.name,
            verified=domain.verified_at is not None,
            verified_at=domain.verified_at,
            last_checked_at=domain.last_checked_at,
            dkim_selector=domain.dkim_selector,
            ed25519_selector=domain.ed25519_selector,
            bounce_domain=domain.bounce_domain,
            dns_records=[RecordToPublish.of(record) for record in records],
            keys=[
                KeyView(
                    selector=k.selector, algorithm=k.algorithm, state=k.state, retire_at=k.retire_at
                )
                for k in keys
            ],
            last_check=VerificationView.of(domain.last_check) if domain.last_check else None,
        )


class DomainList(BaseModel):
    """The account's domains, by name."""

    domains: list[DomainView]
