"""HTTP: `/v1/templates` and their versions."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import (
    SessionDep,
    SettingsDep,
    TemplateCreator,
    TemplateDeleter,
    TemplateReader,
    TemplateUpdater,
)
from app.openapi import errors
from app.routing import StrictJsonRoute
from app.templates import service
from app.templates.budget import render_limits
from app.templates.models import Template
from app.templates.schemas import (
    TemplateIn,
    TemplatePatch,
    TemplateView,
    VersionIn,
    VersionPatch,
    VersionView,
)

router = APIRouter(tags=["templates"], route_class=StrictJsonRoute)


async def _view(session: AsyncSession, template: Template) -> TemplateView:
    versions = await service.versions_of(session, template_id=template.id)
    return TemplateView(
        id=template.id,
        name=template.name,
        engine=template.engine,
        created_at=template.created_at,
        updated_at=template.updated_at,
        versions=[VersionView.model_validate(v) for v in versions],
    )


@router.post(
    "/v1/templates",
    status_code=201,
    response_model=TemplateView,
    responses=errors(400, 401, 403, 429),
)
async def create_template(
    body: TemplateIn, principal: TemplateCreator, session: SessionDep, settings: SettingsDep
) -> TemplateView:
    """A template; a version that does not compile, or cannot render within the limits even
    with no data, is refused with the part and the reason."""
    template = await service.create_template(
        session, account_id=principal.account.id, name=body.name, engine=body.engine
    )
    if body.version is not None:
        version = body.version
        await service.add_version(
            session,
            template=template,
            name=version.name,
            subject=version.subject,
            html=version.html,
            text=version.text,
            active=version.active,
            limits=render_limits(settings),
        )
    await session.commit()
    return await _view(session, template)


@router.get("/v1/templates", response_model=list[TemplateView], responses=errors(401, 403, 429))
async def list_templates(principal: TemplateReader, session: SessionDep) -> list[TemplateView]:
    """The account's templates with their versions."""
    found = await service.list_templates(session, account_id=principal.account.id)
    return [await _view(session, template) for template in found]


@router.get(
    "/v1/templates/{template_id}", response_model=TemplateView, responses=errors(401, 403, 404, 429)
)
async def get_template(
    template_id: str, principal: TemplateReader, session: SessionDep
) -> TemplateView:
    """One template with its versions."""
    template = await service.get_template(
        session, account_id=principal.account.id, template_id=template_id
    )
    return await _view(session, template)


@router.patch(
    "/v1/templates/{template_id}",
    response_model=TemplateView,
    responses=errors(400, 401, 403, 404, 429),
)
async def rename_template(
    template_id: str, body: TemplatePatch, principal: TemplateUpdater, session: SessionDep
) -> TemplateView:
    """Rename a template."""
    template = await service.get_template(
        session, account_id=principal.account.id, template_id=template_id
    )
    await service.rename_template(session, template=template, name=body.name)
    await session.commit()
    return await _view(session, template)


@router.delete(
    "/v1/templates/{template_id}",
    status_code=204,
    response_class=Response,
    responses=errors(401, 403, 404, 429),
)
async def delete_template(
    template_id: str, principal: TemplateDeleter, session: SessionDep
) -> Response:
    """Delete a template and its versions (messages already accepted keep their copy)."""
    template = await service.get_template(
        session, account_id=principal.account.id, template_id=template_id
    )
    await session.delete(template)
    await session.commit()
    return Response(status_code=204)


@router.post(
    "/v1/templates/{template_id}/versions",
    status_code=201,
    response_model=VersionView,
    responses=errors(400, 401, 403, 404, 429),
)
async def add_version(
    template_id: str,
    body: VersionIn,
    principal: TemplateCreator,
    session: SessionDep,
    settings: SettingsDep,
) -> VersionView:
    """A new version; the first is active; `active: true` switches to it."""
    template = await service.get_template(
        session, account_id=principal.account.id, template_id=template_id
    )
    version = await service.add_version(
        session,
        template=template,
        name=body.name,
        subject=body.subject,
        html=body.html,
        text=body.text,
        active=body.active,
        limits=render_limits(settings),
    )
    await session.commit()
    return VersionView.model_validate(version)


@router.get(
    "/v1/templates/{template_id}/versions/{version_id}",
    response_model=VersionView,
    responses=errors(401, 403, 404, 429),
)
async def get_version(
    template_id: str, version_id: str, principal: TemplateReader, session: SessionDep
) -> VersionView:
    """One version."""
    version = await service.get_version(
        session, account_id=principal.account.id, template_id=template_id, version_id=version_id
    )
    return VersionView.model_validate(version)


@router.patch(
    "/v1/templates/{template_id}/versions/{version_id}",
    response_model=VersionView,
    responses=errors(400, 401, 403, 404, 429),
)
async def edit_version(
    template_id: str,
    version_id: str,
    body: VersionPatch,
    principal: TemplateUpdater,
    session: SessionDep,
    settings: SettingsDep,
) -> VersionView:
    """Edit a version; sends already accepted keep the content they were accepted with."""
    version = await service.edit_version(
        session,
        account_id=principal.account.id,
        template_id=template_id,
        version_id=version_id,
        changes=body.model_dump(exclude_unset=True),
        limits=render_limits(settings),
    )
    await session.commit()
    return VersionView.model_validate(version)


@router.post(
    "/v1/templates/{template_id}/versions/{version_id}/activate",
    response_model=VersionView,
    responses=errors(401, 403, 404, 429),
)
async def activate_version(
    template_id: str, version_id: str, principal: TemplateUpdater, session: SessionDep
) -> VersionView:
    """Make this version the one that is sent."""
    version = await service.get_version(
        session, account_id=principal.account.id, template_id=template_id, version_id=version_id
    )
    await service.activate(session, version=version)
    await session.commit()
    return VersionView.model_validate(version)


@router.delete(
    "/v1/templates/{template_id}/versions/{version_id}",
    status_code=204,
    response_class=Response,
    responses=errors(401, 403, 404, 429),
)
async def delete_version(
    template_id: str, version_id: str, principal: TemplateDeleter, session: SessionDep
) -> Response:
    """Delete a version (sends already accepted keep their copy)."""
    version = await service.get_version(
        session, account_id=principal.account.id, template_id=template_id, version_id=version_id
    )
    await session.delete(version)
    await session.commit()
    return Response(status_code=204)
