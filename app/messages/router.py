"""HTTP: `POST /v1/send` and `GET /v1/messages/{id}`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.deps import (
    CommitterDep,
    MailSender,
    MessagesReader,
    QueueDep,
    SessionDep,
    SettingsDep,
)
from app.idempotency import service as idempotency
from app.idempotency.service import Claim, StoredResponse
from app.messages import service
from app.messages.schemas import MessageView, SendAccepted, SendRequest
from app.openapi import IDEMPOTENCY_KEY, errors
from app.routing import StrictJsonRoute

router = APIRouter(tags=["messages"], route_class=StrictJsonRoute)


@router.post(
    "/v1/send",
    status_code=202,
    response_model=SendAccepted,
    responses=errors(400, 401, 403, 409, 413, 422, 429),
    openapi_extra=IDEMPOTENCY_KEY,
)
async def send(
    body: SendRequest,
    request: Request,
    principal: MailSender,
    session: SessionDep,
    queue: QueueDep,
    settings: SettingsDep,
    committer: CommitterDep,
) -> Response:
    """Accept a message for delivery; 202 only once it and every recipient are committed.

    With `to`, every address gets one copy of one message. With `recipients` (up to 1,000),
    each recipient gets a copy of their own, rendered at delivery with their `template_data`,
    carrying their `metadata` into events, sent at their `send_at`. With an
    `Idempotency-Key`, a retried request returns the first answer and sends nothing again."""

    async def work(claim: Claim | None) -> StoredResponse:
        if claim is None:  # nothing else to commit with the message: share a transaction
            accepted = await committer.accept(
                session,
                principal=principal,
                submission=body.submission(),
                policy=service.policy_from(settings),
            )
            return StoredResponse(202, accepted.view().model_dump(mode="json"))
        accepted = await service.accept(
            session,
            principal=principal,
            submission=body.submission(),
            policy=service.policy_from(settings),
        )
        stored = StoredResponse(202, accepted.view().model_dump(mode="json"))
        if claim is not None:
            await idempotency.complete(session, claim=claim, response=stored)
        await session.commit()
        await queue.wake_deliveries([accepted.message_id])
        return stored

    return await idempotency.run(
        request, session=session, principal=principal, settings=settings, work=work
    )


@router.get(
    "/v1/messages/{message_id}", response_model=MessageView, responses=errors(401, 403, 404)
)
async def get_message(
    message_id: str, principal: MessagesReader, session: SessionDep
) -> MessageView:
    """A message with each recipient's status, attempts and events."""
    return await service.get_message_view(
        session, account_id=principal.account.id, message_id=message_id
    )
