"""Accounts and API keys: creation, lookup, and authentication of a presented key."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account, ApiKey
from app.core import cache, clock
from app.core.db import lock_row
from app.core.signals import KEY

DEFAULT_ACCOUNT = "default"
KEY_PREFIX = "SG."  # SendGrid's key format, so tools that check the prefix accept ours
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_KEYS = 100  # active keys per account, as SendGrid allows


class ScopeEscalation(Exception):
    """A key asked to grant scopes it does not hold itself."""


class Unset(Enum):
    """A field not given (distinct from None, which means full access for scopes)."""

    TOKEN = 0


UNSET = Unset.TOKEN


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: the plaintext exists only here, never in the database."""

    api_key: ApiKey
    plaintext: str


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key and the account it belongs to."""

    account: Account
    api_key: ApiKey

    def allows(self, scope: str) -> bool:
        """True when the key carries `scope` or has full access."""
        scopes = self.api_key.scopes
        return scopes is None or scope in scopes


def hash_secret(secret: str) -> str:
    """SHA-256 of the key's secret part (keys are random, so no slow hash is needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(plaintext: str) -> tuple[str, str] | None:
    """`SG.<prefix>.<secret>` → (prefix, secret); None when it is not of that form."""
    if not plaintext.startswith(KEY_PREFIX):
        return None
    prefix, dot, secret = plaintext[len(KEY_PREFIX) :].partition(".")
    return (prefix, secret) if dot and prefix and secret else None


async def lock_account(session: AsyncSession, *, account_id: str) -> None:
    """Serialise this transaction with every other that locks the account, for checks that
    read before they write (one endpoint per URL, at most N of a kind): app.core.db.lock_row."""
    await lock_row(session, Account.id, account_id, touch=Account.created_at)


async def get_account_by_name(session: AsyncSession, *, name: str) -> Account | None:
    """The account called `name`, if any."""
    result = await session.execute(select(Account).where(Account.name == name))
    return result.scalar_one_or_none()


async def get_or_create_account(session: AsyncSession, *, name: str = DEFAULT_ACCOUNT) -> Account:
    """The account called `name`, created if new."""
    account = await get_account_by_name(session, name=name)
    if account is None:
        account = Account(name=name)
        session.add(account)
        await session.flush()
    return account


async def create_key(
    session: AsyncSession, *, account: Account, name: str, scopes: list[str] | None
) -> IssuedKey:
    """A new key for `account`; `scopes` None gives full access."""
    prefix = secrets.token_urlsafe(16)
    secret = secrets.token_urlsafe(32)
    api_key = ApiKey(
        account_id=account.id,
        name=name,
        prefix=prefix,
        secret_hash=hash_secret(secret),
        scopes=scopes,
    )
    session.add(api_key)
    await session.flush()
    return IssuedKey(api_key=api_key, plaintext=f"{KEY_PREFIX}{prefix}.{secret}")


async def list_keys(session: AsyncSession, *, account: Account | None = None) -> list[ApiKey]:
    """Keys, oldest first, optionally of one account."""
    query = select(ApiKey).order_by(ApiKey.created_at)
    if account is not None:
        query = query.where(ApiKey.account_id == account.id)
    return list((await session.execute(query)).scalars())


def check_grant(granter: ApiKey, scopes: list[str] | None) -> None:
    """Raise ScopeEscalation unless `granter` holds every scope of `scopes` (None is full
    access, which only a full-access key may give): a key never makes a stronger one."""
    if granter.scopes is None:
        return
    if scopes is None:
        raise ScopeEscalation("full access")
    missing = sorted(set(scopes) - set(granter.scopes))
    if missing:
        raise ScopeEscalation(", ".join(missing))


async def active_key_count(session: AsyncSession, *, account_id: str) -> int:
    """How many keys of the account are not revoked."""
    query = select(func.count()).where(ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
    return int(await session.scalar(query) or 0)


async def get_active_key(session: AsyncSession, *, account_id: str, prefix: str) -> ApiKey | None:
    """The account's active key with this public prefix (another account's is not found)."""
    query = select(ApiKey).where(
        ApiKey.account_id == account_id, ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def list_active_keys(
    session: AsyncSession, *, account_id: str, limit: int | None = None
) -> list[ApiKey]:
    """The account's active keys, oldest first."""
    query = (
        select(ApiKey)
        .where(ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.created_at, ApiKey.id)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def change_key(
    session: AsyncSession,
    *,
    api_key: ApiKey,
    name: str,
    scopes: list[str] | Unset | None = UNSET,
) -> ApiKey:
    """Rename the key and, when given, replace its scopes (this process forgets the cached
    key at once; the caller announces it to the others after commit)."""
    api_key.name = name
    if not isinstance(scopes, Unset):
        api_key.scopes = scopes
    await session.flush()
    cache.invalidate(KEY, api_key.prefix)
    return api_key


async def revoke_key(session: AsyncSession, *, prefix: str) -> bool:
    """Revoke the key with this public prefix; False when there is none."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=clock.now())
    )
    cache.invalidate(KEY, prefix)  # this process at once; others hear it through signals
    return bool(getattr(result, "rowcount", 0))


async def authenticate(session: AsyncSession, *, plaintext: str) -> Principal | None:
    """The principal for a presented key, or None when it is unknown, wrong or revoked."""
    parts = split_key(plaintext)
    if parts is None:
        return None
    prefix, secret = parts
    found = await principal_by_prefix(session, prefix=prefix)
    if found is None or not hmac.compare_digest(found[0], hash_secret(secret)):
        return None
    return found[1]


async def principal_by_prefix(
    session: AsyncSession, *, prefix: str
) -> tuple[str, Principal] | None:
    """(secret hash, principal) of the active key with this prefix; None when there is none.

    The objects come back detached (the session expunges them), so a cache may keep them."""
    row = (
        await session.execute(
            select(ApiKey, Account)
            .join(Account)
            .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        )
    ).one_or_none()
    if row is None:
        return None
    api_key, account = row
    session.expunge(api_key)
    session.expunge(account)
    return api_key.secret_hash, Principal(account=account, api_key=api_key)


async def active_principal(session: AsyncSession, *, api_key_id: str) -> Principal | None:
    """The principal of a key that is still active, by id (None once it is revoked)."""
    row = (
        await session.execute(
            select(ApiKey, Account)
            .join(Account)
            .where(ApiKey.id == api_key_id, ApiKey.revoked_at.is_(None))
        )
    ).one_or_none()
    return None if row is None else Principal(account=row[1], api_key=row[0])


async def set_smtp_rate_limit(
    session: AsyncSession, *, prefix: str, per_minute: int | None
) -> bool:
    """Set a key's SMTP message rate (None: the default); False when there is no such key."""
    result = await session.execute(
        update(ApiKey).where(ApiKey.prefix == prefix).values(smtp_messages_per_minute=per_minute)
    )
    cache.invalidate(KEY, prefix)
    return bool(getattr(result, "rowcount", 0))


def needs_last_used_update(api_key: ApiKey) -> bool:
    """Record use at most once a minute per key, so reads stay reads."""
    last = api_key.last_used_at
    return last is None or clock.now() - last >= LAST_USED_RESOLUTION


async def touch_key(session: AsyncSession, *, api_key_id: str) -> None:
    """Set last_used_at to now."""
    await session.execute(
        update(ApiKey).where(ApiKey.id == api_key_id).values(last_used_at=clock.now())
    )
