"""HTTP: SendGrid's v3 mail send, mail batch and scheduled sends endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.scopes import Scope
from app.accounts.service import Principal
from app.batches import service as batches
from app.batches.models import Batch, BatchStatus
from app.core.config import Settings
from app.core.db import Database
from app.core.errors import BadRequest, ErrorItem, Forbidden, NotFound
from app.deps import (
    BatchCreator,
    BatchReader,
    ScheduledSendCreator,
    ScheduledSendDeleter,
    ScheduledSendReader,
    ScheduledSendUpdater,
    SessionDep,
    authorize,
)
from app.idempotency import service as idempotency
from app.idempotency.service import Claim, StoredResponse
from app.messages import service as messages
from app.messages.committer import SendCommitter
from app.messages.submission import Submission
from app.openapi import IDEMPOTENCY_KEY, errors
from app.routing import StrictJsonRoute
from app.sendgrid import schemas, translate
from app.sendgrid.schemas import MailBatch, ScheduledSendStatus

router = APIRouter(tags=["SendGrid v3"], route_class=StrictJsonRoute)

MAIL_SEND_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/MailSend"}},
        },
    },
    **IDEMPOTENCY_KEY,
}


@router.post(
    "/v3/mail/send",
    status_code=202,
    response_class=Response,
    responses={
        202: {
            "description": "Accepted: empty body, the message id in X-Message-Id",
            "headers": {"X-Message-Id": {"schema": {"type": "string"}}},
        },
        200: {"description": "Sandbox mode: valid, not sent"},
        **errors(400, 401, 403, 409, 413, 422, 429),
    },
    openapi_extra=MAIL_SEND_BODY,
)
async def mail_send(request: Request) -> Response:
    """SendGrid's mail send: the same body, limits and errors; 202 with `X-Message-Id`.

    Each recipient's events carry `sg_message_id` = `<X-Message-Id>.<recipient id>`."""
    # Takes only the request, like POST /v1/send: no per-request dependency solving.
    principal = await authorize(request, Scope.MAIL_SEND)
    mail = translate.parse(await request.body())
    submission = translate.to_submission(mail)
    state = request.app.state
    settings: Settings = state.settings
    committer: SendCommitter = state.committer
    database: Database = state.db
    async with database.lazy_session() as session:
        return await _mail_send(request, principal, session, settings, committer, submission)


async def _mail_send(
    request: Request,
    principal: Principal,
    session: AsyncSession,
    settings: Settings,
    committer: SendCommitter,
    submission: Submission,
) -> Response:
    """mail_send once the key and the body are checked."""

    async def work(claim: Claim | None) -> StoredResponse:
        policy = messages.policy_from(settings)
        try:
            if claim is None:  # nothing else to commit with the message: share a transaction
                accepted = await committer.accept(
                    session, principal=principal, submission=submission, policy=policy
                )
            else:
                accepted = await messages.accept(
                    session, principal=principal, submission=submission, policy=policy
                )
        except Forbidden as exc:
            raise _sender_identity(exc) from exc
        if submission.sandbox:
            return StoredResponse(200)
        stored = StoredResponse(202, None, {"X-Message-Id": accepted.message_id})
        if claim is None:
            return stored  # committed and woken by the committer
        await idempotency.complete(session, claim=claim, response=stored)
        await session.commit()
        await committer.queue.wake_deliveries([accepted.message_id])
        return stored

    return await idempotency.run(
        request, session=session, principal=principal, settings=settings, work=work
    )


def _sender_identity(exc: Forbidden) -> Forbidden:
    """SendGrid's words for an unverified sender, followed by how to fix it here."""
    items = [ErrorItem(f"{translate.SENDER_IDENTITY} {e.message}", e.field) for e in exc.errors]
    return Forbidden(items[0].message, errors=items)


@router.post(
    "/v3/mail/batch", status_code=201, response_model=MailBatch, responses=errors(401, 403, 429)
)
async def create_batch(principal: BatchCreator, session: SessionDep) -> MailBatch:
    """A new batch id to give sends, so that they can be paused or cancelled together."""
    batch = await batches.create_batch(session, account_id=principal.account.id)
    await session.commit()
    return MailBatch(batch_id=batch.id)


@router.get(
    "/v3/mail/batch/{batch_id}", response_model=MailBatch, responses=errors(401, 403, 404, 429)
)
async def validate_batch(batch_id: str, principal: BatchReader, session: SessionDep) -> MailBatch:
    """200 with the id when it is one of this account's batches."""
    batch = await batches.get_batch(session, account_id=principal.account.id, batch_id=batch_id)
    return MailBatch(batch_id=batch.id)


@router.post(
    "/v3/user/scheduled_sends",
    status_code=201,
    response_model=ScheduledSendStatus,
    responses=errors(400, 401, 403, 404, 429),
)
async def create_scheduled_send(
    body: schemas.ScheduledSendRequest, principal: ScheduledSendCreator, session: SessionDep
) -> ScheduledSendStatus:
    """Pause or cancel a batch; a batch that already has a status is 400 (use PATCH)."""
    batch = await batches.get_batch(
        session, account_id=principal.account.id, batch_id=body.batch_id
    )
    if batch.status != BatchStatus.ACTIVE:
        raise BadRequest(
            f"The batch already has the status {batch.status}; update it with PATCH.", "batch_id"
        )
    await _apply(session, batch, body.status)
    await session.commit()
    return ScheduledSendStatus(batch_id=batch.id, status=body.status)


@router.get(
    "/v3/user/scheduled_sends",
    response_model=list[ScheduledSendStatus],
    responses=errors(401, 403, 429),
)
async def list_scheduled_sends(
    principal: ScheduledSendReader, session: SessionDep
) -> list[ScheduledSendStatus]:
    """Every batch that is paused or cancelled."""
    found = await batches.scheduled_batches(session, account_id=principal.account.id)
    return [ScheduledSendStatus(batch_id=b.id, status=b.status) for b in found]


@router.get(
    "/v3/user/scheduled_sends/{batch_id}",
    response_model=list[ScheduledSendStatus],
    responses=errors(401, 403, 404, 429),
)
async def get_scheduled_send(
    batch_id: str, principal: ScheduledSendReader, session: SessionDep
) -> list[ScheduledSendStatus]:
    """The batch's pause or cancel status (404 when it has none)."""
    batch = await batches.get_batch(session, account_id=principal.account.id, batch_id=batch_id)
    if batch.status == BatchStatus.ACTIVE:
        raise NotFound("batch id not found", "batch_id")
    return [ScheduledSendStatus(batch_id=batch.id, status=batch.status)]


@router.patch(
    "/v3/user/scheduled_sends/{batch_id}",
    status_code=204,
    response_class=Response,
    responses=errors(400, 401, 403, 404, 429),
)
async def update_scheduled_send(
    batch_id: str,
    body: schemas.ScheduledSendUpdate,
    principal: ScheduledSendUpdater,
    session: SessionDep,
) -> Response:
    """Change a paused batch to cancelled (a cancelled batch cannot go back)."""
    batch = await batches.get_batch(session, account_id=principal.account.id, batch_id=batch_id)
    if batch.status == BatchStatus.ACTIVE:
        raise NotFound("batch id not found", "batch_id")
    await _apply(session, batch, body.status)
    await session.commit()
    return Response(status_code=204)


@router.delete(
    "/v3/user/scheduled_sends/{batch_id}",
    status_code=204,
    response_class=Response,
    responses=errors(400, 401, 403, 404, 429),
)
async def delete_scheduled_send(
    batch_id: str, principal: ScheduledSendDeleter, session: SessionDep
) -> Response:
    """Remove a pause: the batch's recipients are sent (a cancel cannot be undone)."""
    batch = await batches.get_batch(session, account_id=principal.account.id, batch_id=batch_id)
    if batch.status == BatchStatus.ACTIVE:
        raise NotFound("batch id not found", "batch_id")
    await batches.resume(session, batch=batch)
    await session.commit()
    return Response(status_code=204)


async def _apply(session: SessionDep, batch: Batch, status: str) -> None:
    """Pause or cancel."""
    if status == "cancel":
        await batches.cancel(session, batch=batch)
    elif batch.status != BatchStatus.PAUSED:
        await batches.pause(session, batch=batch)
