"""HTTP: API keys, natively (`/v1/keys`) and as SendGrid serves them (`/v3/api_keys`,
`/v3/scopes`), over the service the CLI uses (`columba keys …`).

A key can only give what it holds: creating or changing a key with a scope the calling key
lacks (or with full access, from a scoped key) is refused. A revoked key stops working in
every API process at once: this one forgets it, the others hear it over app/core/signals.py
once the revocation is committed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.accounts.models import ApiKey
from app.accounts.schemas import (
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyUpdate,
    KeyView,
    SgKey,
    SgKeyCreate,
    SgKeyCreated,
    SgKeyDetail,
    SgKeyList,
    SgKeyRename,
    SgKeyReplace,
    SgKeyWithScopes,
    SgScopes,
    effective_scopes,
)
from app.accounts.scopes import Scope, unknown_scopes
from app.accounts.service import Principal
from app.core import signals
from app.core.errors import BadRequest, Forbidden, NotFound
from app.core.queue import Queue
from app.deps import QueueDep, SessionDep, get_principal, require
from app.openapi import errors
from app.routing import StrictJsonRoute

router = APIRouter(tags=["keys"], route_class=StrictJsonRoute)

KeysCreator = Annotated[Principal, Depends(require(Scope.API_KEYS_CREATE))]
KeysReader = Annotated[Principal, Depends(require(Scope.API_KEYS_READ))]
KeysUpdater = Annotated[Principal, Depends(require(Scope.API_KEYS_UPDATE))]
KeysDeleter = Annotated[Principal, Depends(require(Scope.API_KEYS_DELETE))]
AnyKey = Annotated[Principal, Depends(get_principal)]


def _grantable(principal: Principal, scopes: list[str] | None) -> list[str] | None:
    """The scopes, sorted, once known and held by the calling key; 400 or 403 otherwise."""
    if scopes is None:
        names = None
    else:
        unknown = unknown_scopes(scopes)
        if unknown:
            raise BadRequest(f"invalid scope: {unknown[0]}", "scopes")
        names = sorted(set(scopes))
    try:
        accounts.check_grant(principal.api_key, names)
    except accounts.ScopeEscalation as exc:
        raise Forbidden(
            f"a key can only grant scopes it holds itself; this key lacks: {exc}", "scopes"
        ) from exc
    return names


async def _issue(
    session: AsyncSession, principal: Principal, name: str, scopes: list[str] | None
) -> accounts.IssuedKey:
    """A new key of the caller's account, within SendGrid's limit of keys per account."""
    granted = _grantable(principal, scopes)
    await accounts.lock_account(session, account_id=principal.account.id)  # creates count in turn
    count = await accounts.active_key_count(session, account_id=principal.account.id)
    if count >= accounts.MAX_KEYS:
        raise Forbidden(
            f"the maximum number of API keys ({accounts.MAX_KEYS}) is reached; delete one first",
            "name",
        )
    issued = await accounts.create_key(
        session, account=principal.account, name=name, scopes=granted
    )
    await session.commit()
    return issued


async def _key(session: AsyncSession, principal: Principal, key_id: str) -> ApiKey:
    """The account's active key by its public id; 404 otherwise."""
    found = await accounts.get_active_key(session, account_id=principal.account.id, prefix=key_id)
    if found is None:
        raise NotFound("unable to find API key", "api_key_id")
    return found


async def _changed(session: AsyncSession, queue: Queue, api_key: ApiKey) -> None:
    """Commit a key's change, then make every process read it again."""
    await session.commit()
    await signals.announce_via(queue.pool, signals.KEY, api_key.prefix)


async def _revoke(session: AsyncSession, queue: Queue, principal: Principal, key_id: str) -> None:
    """Revoke the account's key, effective in every process once this returns."""
    api_key = await _key(session, principal, key_id)
    await accounts.revoke_key(session, prefix=api_key.prefix)
    await _changed(session, queue, api_key)


@router.post(
    "/v3/api_keys",
    status_code=201,
    response_model=SgKeyCreated,
    responses=errors(400, 401, 403),
)
async def sg_create_key(
    body: SgKeyCreate, principal: KeysCreator, session: SessionDep
) -> SgKeyCreated:
    """Create a key; without `scopes` it has full access. The secret is in this answer and
    never again."""
    issued = await _issue(session, principal, body.name, body.scopes)
    return SgKeyCreated(
        api_key=issued.plaintext,
        api_key_id=issued.api_key.prefix,
        name=issued.api_key.name,
        scopes=effective_scopes(issued.api_key),
    )


@router.get("/v3/api_keys", response_model=SgKeyList, responses=errors(400, 401, 403))
async def sg_list_keys(
    principal: KeysReader,
    session: SessionDep,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> SgKeyList:
    """The account's active keys, by id and name."""
    found = await accounts.list_active_keys(session, account_id=principal.account.id, limit=limit)
    return SgKeyList(result=[SgKey.of(api_key) for api_key in found])


@router.get(
    "/v3/api_keys/{api_key_id}", response_model=SgKeyDetail, responses=errors(401, 403, 404)
)
async def sg_get_key(api_key_id: str, principal: KeysReader, session: SessionDep) -> SgKeyDetail:
    """One key with its scopes."""
    return SgKeyDetail(result=[SgKeyWithScopes.of(await _key(session, principal, api_key_id))])


@router.patch(
    "/v3/api_keys/{api_key_id}", response_model=SgKey, responses=errors(400, 401, 403, 404)
)
async def sg_rename_key(
    api_key_id: str,
    body: SgKeyRename,
    principal: KeysUpdater,
    session: SessionDep,
    queue: QueueDep,
) -> SgKey:
    """Rename a key."""
    api_key = await _key(session, principal, api_key_id)
    await accounts.change_key(session, api_key=api_key, name=body.name)
    await _changed(session, queue, api_key)
    return SgKey.of(api_key)


@router.put(
    "/v3/api_keys/{api_key_id}",
    response_model=SgKeyWithScopes,
    responses=errors(400, 401, 403, 404),
)
async def sg_replace_key(
    api_key_id: str,
    body: SgKeyReplace,
    principal: KeysUpdater,
    session: SessionDep,
    queue: QueueDep,
) -> SgKeyWithScopes:
    """Set a key's name and scopes (at least one scope)."""
    if not body.scopes:
        raise BadRequest("scopes must contain at least one scope", "scopes")
    api_key = await _key(session, principal, api_key_id)
    scopes = _grantable(principal, body.scopes)
    await accounts.change_key(session, api_key=api_key, name=body.name, scopes=scopes)
    await _changed(session, queue, api_key)
    return SgKeyWithScopes.of(api_key)


@router.delete("/v3/api_keys/{api_key_id}", status_code=204, responses=errors(401, 403, 404))
async def sg_delete_key(
    api_key_id: str, principal: KeysDeleter, session: SessionDep, queue: QueueDep
) -> Response:
    """Revoke a key: it stops authenticating at once."""
    await _revoke(session, queue, principal, api_key_id)
    return Response(status_code=204)


@router.get("/v3/scopes", response_model=SgScopes, responses=errors(401))
async def sg_scopes(principal: AnyKey) -> SgScopes:
    """The scopes of the key making the call (every scope for a full-access key)."""
    return SgScopes(scopes=effective_scopes(principal.api_key))


@router.post(
    "/v1/keys", status_code=201, response_model=KeyCreated, responses=errors(400, 401, 403)
)
async def create_key(body: KeyCreate, principal: KeysCreator, session: SessionDep) -> KeyCreated:
    """Create a key (`scopes` null: full access); its secret is in this answer only."""
    issued = await _issue(session, principal, body.name, body.scopes)
    return KeyCreated(**KeyView.of(issued.api_key).model_dump(), key=issued.plaintext)


@router.get("/v1/keys", response_model=KeyList, responses=errors(401, 403))
async def list_keys(principal: KeysReader, session: SessionDep) -> KeyList:
    """The account's active keys, oldest first."""
    found = await accounts.list_active_keys(session, account_id=principal.account.id)
    return KeyList(keys=[KeyView.of(api_key) for api_key in found])


@router.get("/v1/keys/{key_id}", response_model=KeyView, responses=errors(401, 403, 404))
async def get_key(key_id: str, principal: KeysReader, session: SessionDep) -> KeyView:
    """One active key."""
    return KeyView.of(await _key(session, principal, key_id))


@router.patch("/v1/keys/{key_id}", response_model=KeyView, responses=errors(400, 401, 403, 404))
async def update_key(
    key_id: str, body: KeyUpdate, principal: KeysUpdater, session: SessionDep, queue: QueueDep
) -> KeyView:
    """Rename a key or change its scopes; a key grants only scopes it holds."""
    api_key = await _key(session, principal, key_id)
    name = body.name if body.name is not None else api_key.name
    if "scopes" in body.model_fields_set:
        scopes = _grantable(principal, body.scopes)
        await accounts.change_key(session, api_key=api_key, name=name, scopes=scopes)
    else:
        await accounts.change_key(session, api_key=api_key, name=name)
    await _changed(session, queue, api_key)
    return KeyView.of(api_key)


@router.delete("/v1/keys/{key_id}", status_code=204, responses=errors(401, 403, 404))
async def revoke_key(
    key_id: str, principal: KeysDeleter, session: SessionDep, queue: QueueDep
) -> Response:
    """Revoke a key: it stops authenticating at once, in every API process."""
    await _revoke(session, queue, principal, key_id)
    return Response(status_code=204)
