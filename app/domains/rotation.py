"""DKIM key rotation: a new selector is generated and published, signs only once its record
verifies, and the old selector stays published for a grace period before it is retired."""

from __future__ import annotations

import string
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.db import lock_row
from app.core.encryption import encrypt
from app.delivery.signing import generate_ed25519_key, generate_rsa_key, public_key_record
from app.domains.models import Domain, DomainKey, KeyState

DKIM_PURPOSE = "dkim-private-key"  # the same purpose app.domains.service encrypts keys with


class RotationInProgress(Exception):
    """The domain already has keys waiting for their DNS records."""


async def keys_of(session: AsyncSession, domain_id: str) -> list[DomainKey]:
    """The domain's keys outside the signing pair, oldest first."""
    query = (
        select(DomainKey)
        .where(DomainKey.domain_id == domain_id)
        .order_by(DomainKey.created_at, DomainKey.selector)
        .execution_options(populate_existing=True)  # as stored now, not as first loaded
    )
    return list((await session.execute(query)).scalars())


def new_selector(taken: set[str], now: datetime, suffix: str = "") -> str:
    """`cbYYYYMMDD` (plus a letter if that is taken): dated, so a rotated key gets a new name."""
    base: str = "cb" + now.strftime("%Y%m%d")
    for extra in ["", *string.ascii_lowercase]:
        candidate: str = base + extra + suffix
        if candidate not in taken:
            return candidate
    raise RuntimeError("no free DKIM selector today")


async def start_rotation(
    session: AsyncSession, *, domain: Domain, secret_key: bytes
) -> list[DomainKey]:
    """Generate the next key(s): RSA, and Ed25519 when the domain dual-signs. They are
    published beside the current ones and sign once their records verify."""
    # Under the domain's lock and from a fresh read of it: two rotations at once made two
    # pending sets, and a domain object read before another transaction promoted today's
    # selector let the new key take that live selector (its record would replace the key
    # mail is being signed with).
    await lock_row(session, Domain.id, domain.id, touch=Domain.created_at)
    await session.refresh(domain)
    keys = await keys_of(session, domain.id)
    if any(key.state == KeyState.PENDING for key in keys):
        raise RotationInProgress(domain.name)
    taken = {key.selector for key in keys} | {domain.dkim_selector, domain.ed25519_selector or ""}
    now = clock.now()
    selector = new_selector(taken, now)
    pending = [_pending(domain, selector, generate_rsa_key(), "rsa-sha256", secret_key)]
    if domain.ed25519_selector:
        # The Ed25519 selector is the RSA one plus "e", as `domains add --ed25519` names it.
        ed_pem = generate_ed25519_key()
        pending.append(_pending(domain, selector + "e", ed_pem, "ed25519-sha256", secret_key))
    session.add_all(pending)
    await session.flush()
    return pending


def _pending(
    domain: Domain, selector: str, pem: bytes, algorithm: str, secret_key: bytes
) -> DomainKey:
    """A generated key waiting for its DNS record."""
    return DomainKey(
        domain_id=domain.id,
        selector=selector,
        algorithm=algorithm,
        private_key=encrypt(secret_key, pem, purpose=DKIM_PURPOSE),
        public_record=public_key_record(pem),
        state=KeyState.PENDING,
        created_at=clock.now(),
    )


def promote(domain: Domain, keys: Sequence[DomainKey], *, grace: timedelta) -> list[DomainKey]:
    """Make the pending keys sign (the caller checked that all their records verify). Each
    pending row then holds the key it replaced, published for `grace` more (mail signed
    with it may still be in transit, or be verified late)."""
    now = clock.now()
    swapped = []
    for key in keys:
        if key.state != KeyState.PENDING:
            continue
        old = _current(domain, key.algorithm)
        _install(domain, key)
        key.selector, key.private_key, key.public_record = old
        key.state, key.retire_at, key.created_at = KeyState.RETIRING, now + grace, now
        swapped.append(key)
    if swapped:
        domain.dkim_activated_at = now
    return swapped


def _current(domain: Domain, algorithm: str) -> tuple[str, bytes | None, str]:
    """The domain's signing key of `algorithm`: selector, encrypted key, record."""
    if algorithm == "ed25519-sha256":
        return (
            domain.ed25519_selector or "",
            domain.ed25519_private_key,
            domain.ed25519_public_record or "",
        )
    return domain.dkim_selector, domain.dkim_private_key, domain.dkim_public_record


def _install(domain: Domain, key: DomainKey) -> None:
    """Make `key` the domain's signing key of its algorithm."""
    if key.algorithm == "ed25519-sha256":
        domain.ed25519_selector = key.selector
        domain.ed25519_private_key = key.private_key
        domain.ed25519_public_record = key.public_record
    else:
        domain.dkim_selector = key.selector
        domain.dkim_private_key = key.private_key or b""
        domain.dkim_public_record = key.public_record


def retire_due(keys: Sequence[DomainKey]) -> list[DomainKey]:
    """Retire replaced keys whose grace period is over: their records may go, and their
    private keys are erased (nothing signs with them any more)."""
    now = clock.now()
    retired = []
    for key in keys:
        if key.state == KeyState.RETIRING and key.retire_at is not None and key.retire_at <= now:
            key.state = KeyState.RETIRED
            key.private_key = None
            key.retired_at = now
            retired.append(key)
    return retired


def due_for_rotation(domain: Domain, *, rotate_after: timedelta) -> bool:
    """Whether the signing key is older than `rotate_after` (0 turns rotation by age off)."""
    if not rotate_after:
        return False
    since = domain.dkim_activated_at or domain.created_at
    return since + rotate_after <= clock.now()
