"""HTTP: `POST /v1/send` and `GET /v1/messages/{id}`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.accounts.scopes import Scope
from app.core.config import Settings
from app.core.db import Database
from app.deps import MessagesReader, SessionDep, authorize
from app.idempotency import service as idempotency
from app.idempotency.service import Claim, StoredResponse
from app.messages import service
from app.messages.committer import SendCommitter
from app.messages.schemas import MessageView, SendAccepted, SendRequest
from app.openapi import IDEMPOTENCY_KEY, errors
from app.routing import StrictJsonRoute, json_body, validated

router = APIRouter(tags=["messages"], route_class=StrictJsonRoute)


SEND_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SendRequest"}},
        },
    },
    **IDEMPOTENCY_KEY,
}


@router.post(
    "/v1/send",
    status_code=202,
    response_model=SendAccepted,
    responses=errors(400, 401, 403, 409, 413, 422, 429),
    openapi_extra=SEND_BODY,
)
async def send(request: Request) -> Response:
    """Accept a message for delivery; 202 only once it and every recipient are committed.

    With `to`, every address gets one copy of one message. With `recipients` (up to 1,000),
    each recipient gets a copy of their own, rendered at delivery with their `template_data`,
    carrying their `metadata` into events, sent at their `send_at`. With an
    `Idempotency-Key`, a retried request returns the first answer and sends nothing again."""
    # The hot path takes only the request: FastAPI's dependency solving cost more CPU than
    # the rest of the route (bench/README.md, "API"). Same checks, same order: key, then body.
    principal = await authorize(request, Scope.MAIL_SEND)
    body = validated(SendRequest, await json_body(request))
    state = request.app.state
    settings: Settings = state.settings
    committer: SendCommitter = state.committer
    database: Database = state.db
    policy = service.policy_from(settings)

    async with database.lazy_session() as session:

        async def work(claim: Claim | None) -> StoredResponse:
            if claim is None:  # nothing else to commit with the message: share a transaction
                accepted = await committer.accept(
                    session, principal=principal, submission=body.submission(), policy=policy
                )
                return StoredResponse(202, accepted.view().model_dump(mode="json"))
            accepted = await service.accept(
                session, principal=principal, submission=body.submission(), policy=policy
            )
            stored = StoredResponse(202, accepted.view().model_dump(mode="json"))
            await idempotency.complete(session, claim=claim, response=stored)
            await session.commit()
            await committer.queue.wake_deliveries([accepted.message_id])
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
