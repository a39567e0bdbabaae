"""MTA-STS policies kept in the database, and TLS-RPT counters gathered in memory and added
to the database in batches."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.db import Database, conflict_insert
from app.delivery.mta_sts import CachedPolicy, PolicyError, StsPolicy
from app.delivery.smtp import TlsResult
from app.delivery.tls_policy import TlsRequirement
from app.tlspolicy.models import MtaStsPolicy, TlsReportCount


class DatabasePolicyStore:
    """Policies shared by every worker, surviving restarts (RFC 8461 §5.1 caching)."""

    def __init__(self, db: Database) -> None:
        """Keep policies in `db`."""
        self.db = db

    async def load(self, domain: str) -> CachedPolicy | None:
        """The stored policy of `domain`, if any."""
        async with self.db.session() as session:
            row = await session.get(MtaStsPolicy, domain)
        if row is None:
            return None
        policy = StsPolicy(row.mode, tuple(row.mx), row.max_age, row.text)
        return CachedPolicy(row.domain, row.policy_id, policy, row.fetched_at, row.expires_at)

    async def save(self, cached: CachedPolicy) -> None:
        """Store (or replace) a policy: one upsert, since workers fetching a domain's first
        policy at the same moment both store it (a read, then an INSERT, collided on the
        primary key and left the recipients of that delivery to their leases)."""
        values = {
            "policy_id": cached.policy_id,
            "mode": cached.policy.mode,
            "mx": list(cached.policy.mx),
            "max_age": cached.policy.max_age,
            "text": cached.policy.text,
            "fetched_at": cached.fetched_at,
            "expires_at": cached.expires_at,
        }
        async with self.db.session() as session:
            insert = conflict_insert(session)
            statement = insert(MtaStsPolicy).values(domain=cached.domain, **values)
            await session.execute(
                statement.on_conflict_do_update(index_elements=["domain"], set_=values)
            )
            await session.commit()


async def cached_policies(session: AsyncSession, domains: list[str]) -> dict[str, MtaStsPolicy]:
    """Stored policies of these domains."""
    rows = await session.execute(select(MtaStsPolicy).where(MtaStsPolicy.domain.in_(domains)))
    return {row.domain: row for row in rows.scalars()}


_UNIQUE = ("day", "policy_domain", "policy_type", "mx_host", "result_type", "receiving_ip")
# (day, policy domain, policy type, policy lines, MX host, result, receiving IP, detail)
_Key = tuple[str, str, str, tuple[str, ...], str, str, str, str | None]


class TlsCounter:
    """Counts of sessions under receivers' policies, by day and result, kept in memory until
    `flush` adds them to the database (a worker's crash loses at most one interval)."""

    def __init__(self) -> None:
        """Start with nothing counted."""
        self.counts: Counter[_Key] = Counter()

    def observe(
        self,
        domain: str,
        requirement: TlsRequirement,
        failure: PolicyError | None,
        results: list[TlsResult],
        policy_text: str | None,
        when: datetime | None = None,
    ) -> None:
        """Count what one delivery did under `domain`'s policy (or its failed fetch)."""
        day = (when or clock.now()).strftime("%Y-%m-%d")
        if requirement.policy_domain is not None:
            lines = tuple((policy_text or "").replace("\r\n", "\n").strip().split("\n"))
            for mx_host, ip, result, detail in results:
                extra = None if result == "success" else detail
                self.counts[(day, domain, "sts", lines, mx_host, result, ip, extra)] += 1
        elif failure is not None:
            key = (day, domain, "no-policy-found", (), "", failure.result_type, "", str(failure))
            self.counts[key] += 1

    async def flush(self, session: AsyncSession) -> int:
        """Add the counts to the database in the caller's transaction; returns rows touched."""
        counts, self.counts = self.counts, Counter()
        if not counts:
            return 0
        # One row per unique key: PostgreSQL refuses to update a row twice in one statement.
        merged: dict[tuple[Any, ...], dict[str, Any]] = {}
        for key, count in counts.items():
            row = _row(key, count)
            unique = tuple(row[name] for name in _UNIQUE)
            if unique in merged:
                row["count"] += merged[unique]["count"]
            merged[unique] = row
        rows = list(merged.values())
        insert = conflict_insert(session)
        statement = insert(TlsReportCount)
        statement = statement.on_conflict_do_update(
            index_elements=list(_UNIQUE),
            set_={
                "count": TlsReportCount.count + statement.excluded.count,
                "detail": statement.excluded.detail,
            },
        )
        await session.execute(statement, rows)
        return len(rows)


def _row(key: _Key, count: int) -> dict[str, Any]:
    """The table row of one counter."""
    day, domain, policy_type, lines, mx_host, result, ip, detail = key
    return {
        "day": day,
        "policy_domain": domain,
        "policy_type": policy_type,
        "policy_string": list(lines),
        "mx_host": mx_host,
        "result_type": result,
        "receiving_ip": ip,
        "detail": detail,
        "count": count,
    }
