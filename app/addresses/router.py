"""HTTP: `DELETE /v1/addresses/{email}`, the erase of one address (GDPR Art. 17)."""

from __future__ import annotations

from fastapi import APIRouter

from app.addresses import service
from app.addresses.schemas import ErasureView
from app.common.fields import valid_email
from app.core.errors import BadRequest
from app.deps import AddressEraser, DatabaseDep, SettingsDep
from app.openapi import errors
from app.routing import StrictJsonRoute
from app.suppressions.tombstones import tombstone_key

router = APIRouter(tags=["addresses"], route_class=StrictJsonRoute)


@router.delete(
    "/v1/addresses/{email}", response_model=ErasureView, responses=errors(400, 401, 403, 429)
)
async def erase_address(
    email: str, principal: AddressEraser, database: DatabaseDep, settings: SettingsDep
) -> ErasureView:
    """Erase every trace of the address from this account's mail, events and lists; its
    suppressions stay as keyed hashes, so mail to it stays dropped. Idempotent: erasing
    again (or after an interruption) finishes what is left."""
    try:
        address = valid_email(email)
    except ValueError as exc:
        raise BadRequest(str(exc), "email") from exc
    erased = await service.erase(
        database,
        account_id=principal.account.id,
        email=address,
        actor=f"key:{principal.api_key.id}",
        tombstone_key=tombstone_key(settings.secret_key_bytes()),
    )
    return ErasureView(erasure_id=erased.id, counts=erased.counts)
