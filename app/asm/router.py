"""HTTP: SendGrid's unsubscribe groups, their suppressions and the global list (`/v3/asm`)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import Field

from app.asm import service
from app.asm.schemas import (
    AddressGroup,
    AddressGroups,
    GlobalSuppression,
    GroupCreated,
    GroupIn,
    GroupPatch,
    GroupSuppressionEntry,
    RecipientEmails,
    SuppressionGroup,
)
from app.common.fields import MAX_INT64
from app.core.errors import NotFound
from app.deps import (
    AsmGroupCreator,
    AsmGroupDeleter,
    AsmGroupReader,
    AsmGroupUpdater,
    GroupSuppressionCreator,
    GroupSuppressionDeleter,
    GroupSuppressionReader,
    SessionDep,
    SuppressionCreator,
    SuppressionDeleter,
    SuppressionReader,
)
from app.openapi import errors
from app.routing import StrictJsonRoute

router = APIRouter(route_class=StrictJsonRoute)
GROUPS: list[str | Enum] = ["sendgrid: unsubscribe groups"]
SUPPRESSIONS: list[str | Enum] = ["sendgrid: unsubscribe group suppressions"]
GLOBAL: list[str | Enum] = ["sendgrid: global suppressions"]
NOT_SUPPRESSED = "Email does not exist"  # as DELETE /v3/suppression/unsubscribes/{email}

GroupIds = Annotated[
    list[Annotated[int, Field(ge=0, le=MAX_INT64)]] | None,
    Query(description="Only these groups (`?id=1&id=2`)."),
]


@router.post(
    "/v3/asm/groups",
    status_code=201,
    response_model=GroupCreated,
    tags=GROUPS,
    responses=errors(400, 401, 403, 429),
)
async def create_group(
    body: GroupIn, principal: AsmGroupCreator, session: SessionDep
) -> GroupCreated:
    """A new unsubscribe group; `is_default` makes it the account's only default group."""
    group = await service.create_group(
        session,
        account_id=principal.account.id,
        name=body.name,
        description=body.description,
        is_default=body.is_default,
    )
    await session.commit()
    return GroupCreated.of(group)


@router.get(
    "/v3/asm/groups",
    response_model=list[SuppressionGroup],
    tags=GROUPS,
    responses=errors(400, 401, 403, 429),
)
async def list_groups(
    principal: AsmGroupReader, session: SessionDep, id: GroupIds = None
) -> list[SuppressionGroup]:
    """The account's groups (only those of `id` when given), with their unsubscribe counts."""
    found = await service.list_groups(session, account_id=principal.account.id, ids=id or ())
    return [SuppressionGroup.counted(group, count) for group, count in found]


@router.get(
    "/v3/asm/groups/{group_id}",
    response_model=SuppressionGroup,
    tags=GROUPS,
    responses=errors(401, 403, 404, 429),
)
async def get_group(
    group_id: str, principal: AsmGroupReader, session: SessionDep
) -> SuppressionGroup:
    """One group with its unsubscribe count."""
    group = await service.get_group(session, account_id=principal.account.id, group_id=group_id)
    count = await service.unsubscribes_of(session, group_id=group.id)
    return SuppressionGroup.counted(group, count)


@router.patch(
    "/v3/asm/groups/{group_id}",
    status_code=201,  # SendGrid answers a PATCH of a group with 201
    response_model=SuppressionGroup,
    tags=GROUPS,
    responses=errors(400, 401, 403, 404, 429),
)
async def update_group(
    group_id: str, body: GroupPatch, principal: AsmGroupUpdater, session: SessionDep
) -> SuppressionGroup:
    """Rename, describe, or make (or stop being) the default group."""
    group = await service.get_group(session, account_id=principal.account.id, group_id=group_id)
    await service.update_group(session, group=group, changes=body.changes())
    count = await service.unsubscribes_of(session, group_id=group.id)
    view = SuppressionGroup.counted(group, count)
    await session.commit()
    return view


@router.delete(
    "/v3/asm/groups/{group_id}",
    status_code=204,
    response_class=Response,
    tags=GROUPS,
    responses=errors(401, 403, 404, 429),
)
async def delete_group(group_id: str, principal: AsmGroupDeleter, session: SessionDep) -> Response:
    """Delete a group and its opt-outs: mail of the group reaches those addresses again."""
    group = await service.get_group(session, account_id=principal.account.id, group_id=group_id)
    await service.delete_group(session, group=group)
    await session.commit()
    return Response(status_code=204)


@router.post(
    "/v3/asm/groups/{group_id}/suppressions",
    status_code=201,
    response_model=RecipientEmails,
    tags=SUPPRESSIONS,
    responses=errors(400, 401, 403, 404, 429),
)
async def add_group_suppressions(
    group_id: str, body: RecipientEmails, principal: GroupSuppressionCreator, session: SessionDep
) -> RecipientEmails:
    """Opt addresses out of the group: later sends with the group drop them.

    An unknown group is 404 (SendGrid would add the addresses to the global list instead, so a
    mistyped id would silently stop all mail to them)."""
    group = await service.get_group(session, account_id=principal.account.id, group_id=group_id)
    added = await service.add_to_group(session, group=group, emails=body.recipient_emails)
    await session.commit()
    return RecipientEmails.model_construct(recipient_emails=added)


@router.get(
    "/v3/asm/groups/{group_id}/suppressions",
    response_model=list[str],
    tags=SUPPRESSIONS,
    responses=errors(401, 403, 404, 429),
)
async def list_group_suppressions(
    group_id: str, principal: GroupSuppressionReader, session: SessionDep
) -> list[str]:
    """Every address that opted out of the group."""
    group = await service.get_group(session, account_id=principal.account.id, group_id=group_id)
    return await service.members(session, group_id=group.id)


@router.post(
    "/v3/asm/groups/{group_id}/suppressions/search",
    response_model=list[str],
    tags=SUPPRESSIONS,
    responses=errors(400, 401, 403, 404, 429),
)
async def search_group_suppressions(
    group_id: str, body: RecipientEmails, principal: GroupSuppressionReader, session: SessionDep
) -> list[str]:
    """Which of the addresses opted out of the group (lower-cased, in the order given)."""
    group = await service.get_group(session, account_id=principal.account.id, group_id=group_id)
    found = await service.unsubscribed_from(
        session, group_id=group.id, emails=body.recipient_emails
    )
    keys = dict.fromkeys(email.lower() for email in body.recipient_emails)
    return [email for email in keys if email in found]


@router.delete(
    "/v3/asm/groups/{group_id}/suppressions/{email}",
    status_code=204,
    response_class=Response,
    tags=SUPPRESSIONS,
    responses=errors(401, 403, 404, 429),
)
async def delete_group_suppression(
    group_id: str, email: str, principal: GroupSuppressionDeleter, session: SessionDep
) -> Response:
    """Resubscribe an address to the group: its mail reaches the address again."""
    group = await service.get_group(session, account_id=principal.account.id, group_id=group_id)
    removed = await service.resubscribe(
        session, account_id=principal.account.id, email=email, group_id=group.id
    )
    if not removed:
        raise NotFound(NOT_SUPPRESSED, "email")
    await session.commit()
    return Response(status_code=204)


@router.get(
    "/v3/asm/suppressions",
    response_model=list[GroupSuppressionEntry],
    tags=SUPPRESSIONS,
    responses=errors(401, 403, 429),
)
async def list_all_group_suppressions(
    principal: GroupSuppressionReader, session: SessionDep
) -> list[GroupSuppressionEntry]:
    """Every opt-out of every group of the account."""
    found = await service.all_opt_outs(session, account_id=principal.account.id)
    return [
        GroupSuppressionEntry(
            email=row.email,
            group_id=row.group_id,
            group_name=name,
            created_at=int(row.created_at.timestamp()),
        )
        for row, name in found
    ]


@router.post(
    "/v3/asm/suppressions/global",
    status_code=201,
    response_model=RecipientEmails,
    tags=GLOBAL,
    responses=errors(400, 401, 403, 429),
)
async def add_global_suppressions(
    body: RecipientEmails, principal: SuppressionCreator, session: SessionDep
) -> RecipientEmails:
    """Unsubscribe addresses from every mail of the account (whatever its group)."""
    added = await service.unsubscribe_globally(
        session, account_id=principal.account.id, emails=body.recipient_emails
    )
    await session.commit()
    return RecipientEmails.model_construct(recipient_emails=added)


@router.get(
    "/v3/asm/suppressions/global/{email}",
    response_model=GlobalSuppression,
    response_model_exclude_none=True,
    tags=GLOBAL,
    responses=errors(401, 403, 429),
)
async def get_global_suppression(
    email: str, principal: SuppressionReader, session: SessionDep
) -> GlobalSuppression:
    """`{"recipient_email": …}` when the address is globally unsubscribed, `{}` otherwise."""
    if await service.globally_unsubscribed(session, account_id=principal.account.id, email=email):
        return GlobalSuppression(recipient_email=email.strip().lower())
    return GlobalSuppression()


@router.delete(
    "/v3/asm/suppressions/global/{email}",
    status_code=204,
    response_class=Response,
    tags=GLOBAL,
    responses=errors(401, 403, 404, 429),
)
async def delete_global_suppression(
    email: str, principal: SuppressionDeleter, session: SessionDep
) -> Response:
    """Take an address off the global unsubscribe list."""
    removed = await service.resubscribe(
        session, account_id=principal.account.id, email=email, group_id=None
    )
    if not removed:
        raise NotFound(NOT_SUPPRESSED, "email")
    await session.commit()
    return Response(status_code=204)


@router.get(
    "/v3/asm/suppressions/{email}",
    response_model=AddressGroups,
    tags=SUPPRESSIONS,
    responses=errors(401, 403, 429),
)
async def groups_of_address(
    email: str, principal: GroupSuppressionReader, session: SessionDep
) -> AddressGroups:
    """Every group of the account, and whether the address opted out of it."""
    found = await service.groups_of_address(session, account_id=principal.account.id, email=email)
    return AddressGroups(
        suppressions=[
            AddressGroup(
                description=group.description,
                id=group.id,
                is_default=group.is_default,
                name=group.name,
                suppressed=suppressed,
            )
            for group, suppressed in found
        ]
    )
