"""HTTP: `POST /v1/send` and `GET /v1/messages/{id}`."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import MailSender, MessagesReader, QueueDep, SessionDep, SettingsDep
from app.messages import service
from app.messages.schemas import MessageView, SendAccepted, SendRequest
from app.openapi import errors

router = APIRouter(tags=["messages"])


@router.post(
    "/v1/send", status_code=202, response_model=SendAccepted, responses=errors(400, 401, 403, 413)
)
async def send(
    body: SendRequest,
    principal: MailSender,
    session: SessionDep,
    queue: QueueDep,
    settings: SettingsDep,
) -> SendAccepted:
    """Accept a message for delivery; 202 only once it and every recipient are committed."""
    accepted = await service.accept(
        session,
        principal=principal,
        submission=body.submission(),
        policy=service.policy_from(settings),
    )
    await session.commit()
    await queue.wake_deliveries([accepted.message_id])
    return accepted.view()


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
