"""TLS requirements of a destination: from the operator's destination table (like Postfix's
smtp_tls_policy_maps) or from the receiver's MTA-STS policy (RFC 8461), and the check of a
session against them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from app.delivery.mx import Destination, MXHost
from app.delivery.replies import Reply, synthetic
from app.delivery.smtp import TlsInfo


class TlsLevel(StrEnum):
    """How much TLS a destination needs (Postfix's security levels of the same names)."""

    MAY = "may"  # opportunistic: TLS when offered, plaintext otherwise
    ENCRYPT = "encrypt"  # STARTTLS required, any certificate
    VERIFY = "verify"  # STARTTLS required, certificate valid for the MX name


@dataclass(frozen=True, slots=True)
class TlsRequirement:
    """What a delivery to one domain must satisfy, and where the rule comes from."""

    level: TlsLevel = TlsLevel.MAY
    source: str = ""
    # MTA-STS: only MX hosts matching one of these patterns may be used (RFC 8461 §4.1).
    mx_patterns: tuple[str, ...] | None = None
    # MTA-STS `testing`: failures are reported (TLS-RPT), never enforced (RFC 8461 §5).
    report_only: bool = False
    policy_domain: str | None = None
    policy_id: str | None = None

    @property
    def enforced(self) -> bool:
        """Whether a failure stops the delivery."""
        return not self.report_only and (
            self.level is not TlsLevel.MAY or self.mx_patterns is not None
        )


OPPORTUNISTIC = TlsRequirement()


class DestinationTable:
    """`domain=level` entries; `.example.com` covers the subdomains of example.com."""

    def __init__(self, entries: Sequence[str]) -> None:
        """Parse the entries, refusing unknown levels and empty domains."""
        self._exact: dict[str, TlsLevel] = {}
        self._suffixes: list[tuple[str, TlsLevel]] = []
        for entry in entries:
            name, sep, level_text = entry.partition("=")
            name = name.strip().lower().rstrip(".")
            if not sep or not name.strip("."):
                raise ValueError(f"{entry!r}: expected domain=level")
            try:
                level = TlsLevel(level_text.strip().lower())
            except ValueError:
                raise ValueError(f"{entry!r}: the level is one of may, encrypt, verify") from None
            if name.startswith("."):
                self._suffixes.append((name, level))
            else:
                self._exact[name] = level
        self._suffixes.sort(key=lambda item: -len(item[0]))  # most specific first

    def level_for(self, domain: str) -> TlsLevel | None:
        """The table's level for `domain`, or None when no entry covers it."""
        domain = domain.lower().rstrip(".")
        if domain in self._exact:
            return self._exact[domain]
        return next((level for suffix, level in self._suffixes if domain.endswith(suffix)), None)

    def requirement_for(self, domain: str) -> TlsRequirement | None:
        """The requirement the table sets for `domain`, or None."""
        level = self.level_for(domain)
        if level is None:
            return None
        return TlsRequirement(level=level, source=f"destination table: {domain}={level}")


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: an exact name, or `*.example.com` matching exactly one more label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return pattern == host


def allowed_hosts(
    destination: Destination, requirement: TlsRequirement
) -> tuple[Destination, list[MXHost]]:
    """The destination without the MX hosts an enforced MTA-STS policy does not list, and
    the hosts it left out."""
    patterns = requirement.mx_patterns
    if patterns is None or destination.failure is not None:
        return destination, []
    kept = [h for h in destination.hosts if any(mx_matches(p, h.name) for p in patterns)]
    left = [h for h in destination.hosts if h not in kept]
    if requirement.report_only:
        return destination, left
    return replace(destination, hosts=tuple(kept)), left


def no_host_allowed(domain: str, requirement: TlsRequirement, left: Iterable[MXHost]) -> Reply:
    """The deferral when an enforced policy matches none of the domain's MX hosts."""
    names = ", ".join(host.name for host in left) or "none"
    return synthetic(
        451,
        "4.7.5",
        f"no MX host of {domain} matches its {requirement.source} (MX hosts: {names}); "
        "deferred until the policy or the MX records change",
        stage="CONNECT",
    )


def session_failure(requirement: TlsRequirement, host: MXHost, tls: TlsInfo) -> Reply | None:
    """Why a session does not meet an enforced requirement (a deferral: RFC 8461 §5 says
    never to bounce for it), or None when it does."""
    if not requirement.enforced or requirement.level is TlsLevel.MAY:
        return None
    if tls.version is None:
        detail = (
            "did not offer STARTTLS"
            if not tls.offered
            else f"TLS could not be negotiated ({tls.error or 'handshake failed'})"
        )
        return synthetic(
            451, "4.7.4", f"{host.name} {detail}; TLS is required by {requirement.source}"
        )
    if requirement.level is TlsLevel.VERIFY and not tls.verified:
        return synthetic(
            451,
            "4.7.5",
            f"{tls.error or f'the certificate of {host.name} did not validate'}; a valid "
            f"certificate is required by {requirement.source}",
        )
    return None


def report_result(tls: TlsInfo | None, requirement: TlsRequirement) -> str:
    """The RFC 8460 §4.3 result type of a session under the requirement: `success` or why
    it would fail (or did)."""
    if tls is None:
        return "validation-failure"
    if tls.version is None:
        return "starttls-not-supported" if not tls.offered else "validation-failure"
    if requirement.level is TlsLevel.VERIFY and not tls.verified:
        return tls.failure_type or "validation-failure"
    return "success"
