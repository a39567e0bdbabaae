"""HTTP: native batches, `/v1/batches` (SendGrid's are under /v3/mail/batch)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from app.batches import service
from app.batches.models import Batch
from app.batches.schemas import BatchChangeView, BatchView
from app.deps import BatchCreator, BatchReader, BatchUpdater, SessionDep
from app.openapi import errors
from app.routing import StrictJsonRoute

router = APIRouter(tags=["batches"], route_class=StrictJsonRoute)


async def _view(session: AsyncSession, batch: Batch) -> BatchView:
    counts = await service.recipient_counts(session, batch_id=batch.id)
    return BatchView(
        id=batch.id,
        status=batch.status,
        created_at=batch.created_at,
        updated_at=batch.updated_at,
        recipients=counts,
    )


@router.post(
    "/v1/batches", status_code=201, response_model=BatchView, responses=errors(401, 403, 429)
)
async def create_batch(principal: BatchCreator, session: SessionDep) -> BatchView:
    """A new batch; give its id as `batch_id` to sends that should be controlled together."""
    batch = await service.create_batch(session, account_id=principal.account.id)
    await session.commit()
    return await _view(session, batch)


@router.get(
    "/v1/batches/{batch_id}", response_model=BatchView, responses=errors(401, 403, 404, 429)
)
async def get_batch(batch_id: str, principal: BatchReader, session: SessionDep) -> BatchView:
    """The batch and its recipients by status."""
    batch = await service.get_batch(session, account_id=principal.account.id, batch_id=batch_id)
    return await _view(session, batch)


async def _change(
    session: AsyncSession,
    account_id: str,
    batch_id: str,
    action: Callable[..., Awaitable[service.BatchChange]],
) -> BatchChangeView:
    batch = await service.get_batch(session, account_id=account_id, batch_id=batch_id)
    change = await action(session, batch=batch)
    await session.commit()
    view = await _view(session, change.batch)
    return BatchChangeView(**view.model_dump(), changed=change.recipients)


@router.post(
    "/v1/batches/{batch_id}/pause",
    response_model=BatchChangeView,
    responses=errors(400, 401, 403, 404, 429),
)
async def pause_batch(
    batch_id: str, principal: BatchUpdater, session: SessionDep
) -> BatchChangeView:
    """Hold every recipient of the batch that no worker has claimed yet."""
    return await _change(session, principal.account.id, batch_id, service.pause)


@router.post(
    "/v1/batches/{batch_id}/resume",
    response_model=BatchChangeView,
    responses=errors(400, 401, 403, 404, 429),
)
async def resume_batch(
    batch_id: str, principal: BatchUpdater, session: SessionDep
) -> BatchChangeView:
    """Send the held recipients: now if their time has come, else at their send_at."""
    return await _change(session, principal.account.id, batch_id, service.resume)


@router.post(
    "/v1/batches/{batch_id}/cancel",
    response_model=BatchChangeView,
    responses=errors(401, 403, 404, 429),
)
async def cancel_batch(
    batch_id: str, principal: BatchUpdater, session: SessionDep
) -> BatchChangeView:
    """Cancel every recipient not claimed for sending yet; each gets a `cancelled` event."""
    return await _change(session, principal.account.id, batch_id, service.cancel)
