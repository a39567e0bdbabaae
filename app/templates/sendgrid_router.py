"""HTTP: SendGrid's `/v3/templates` and their versions, over the store of `/v1/templates`.

Dynamic templates (`d-` ids) are Handlebars templates; legacy ones (UUIDs) have no language:
a send puts its subject and content into their `<%subject%>` and `<%body%>` tags.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.core.errors import ApiError, BadRequest, ErrorItem
from app.deps import (
    SessionDep,
    SettingsDep,
    TemplateCreator,
    TemplateDeleter,
    TemplateReader,
    TemplateUpdater,
    VersionActivator,
    VersionCreator,
    VersionDeleter,
    VersionReader,
    VersionUpdater,
)
from app.openapi import errors
from app.routing import StrictJsonRoute
from app.templates import service
from app.templates.budget import render_limits
from app.templates.models import Generation, Template, TemplateEngine
from app.templates.schemas import NO_CONTENT
from app.templates.sendgrid_schemas import (
    PageMetadata,
    TemplateCreate,
    TemplateList,
    TemplateOut,
    TemplatePage,
    TemplateRename,
    VersionCreate,
    VersionOut,
    VersionUpdate,
)

router = APIRouter(tags=["templates (SendGrid v3)"], route_class=StrictJsonRoute)

_ENGINES = {Generation.DYNAMIC: TemplateEngine.HANDLEBARS, Generation.LEGACY: TemplateEngine.LEGACY}
# Our names of a version's parts, and SendGrid's.
_FIELDS = {"html": "html_content", "text": "plain_content"}
_SENDGRID_MESSAGES = {
    NO_CONTENT: NO_CONTENT.replace("html or text", "html_content or plain_content")
}
_TEMPLATE = "/v3/templates/{template_id}"
_VERSION = _TEMPLATE + "/versions/{version_id}"


async def _out(session: AsyncSession, template: Template) -> TemplateOut:
    return TemplateOut.of(template, await service.versions_of(session, template_id=template.id))


def _in_sendgrid_words(exc: ApiError) -> ApiError:
    """The same error, naming the fields as SendGrid does (`html_content`, not `html`)."""
    items = [
        ErrorItem(_SENDGRID_MESSAGES.get(e.message, e.message), _FIELDS.get(e.field or "", e.field))
        for e in exc.errors
    ]
    return type(exc)(items[0].message, errors=items)


def _generations(value: str) -> list[str]:
    """`legacy`, `dynamic` or `legacy,dynamic` (in either order), as engines."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names or any(name not in _ENGINES for name in names):
        raise BadRequest("generations must be legacy, dynamic or legacy,dynamic", "generations")
    engines = {_ENGINES[Generation(name)] for name in names}
    if TemplateEngine.HANDLEBARS in engines:
        engines.add(TemplateEngine.JINJA)  # /v1's Jinja templates have `d-` ids too
    return sorted(engines)


def _offset(token: str | None) -> int:
    """The page a `page_token` names (an opaque token, as SendGrid's are)."""
    if token is None:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(token.encode() + b"==").decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("page_token is not valid", "page_token") from None
    if offset < 0:
        raise BadRequest("page_token is not valid", "page_token")
    return offset


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def _page_url(request: Request, page_size: int, offset: int | None) -> str:
    params: dict[str, Any] = {"page_size": page_size}
    if "generations" in request.query_params:
        params["generations"] = request.query_params["generations"]
    if offset:
        params["page_token"] = _token(offset)
    return str(request.url.replace_query_params(**params))


@router.post(
    "/v3/templates",
    status_code=201,
    response_model=TemplateOut,
    response_model_exclude_none=True,
    responses=errors(400, 401, 403, 429),
)
async def create_template(
    body: TemplateCreate, principal: TemplateCreator, session: SessionDep
) -> TemplateOut:
    """A template without versions (`generation`: legacy by default, as in SendGrid)."""
    account_id = principal.account.id
    await accounts.lock_account(session, account_id=account_id)  # concurrent creates count in turn
    if await service.count_templates(session, account_id=account_id) >= service.MAX_TEMPLATES:
        raise BadRequest(f"You can create up to {service.MAX_TEMPLATES} templates.", "name")
    engine = _ENGINES[Generation(body.generation)]
    template = await service.create_template(
        session, account_id=account_id, name=body.name, engine=engine
    )
    await session.commit()
    return await _out(session, template)


@router.get(
    "/v3/templates",
    response_model=TemplatePage | TemplateList,
    response_model_exclude_none=True,
    responses=errors(400, 401, 403, 429),
)
async def list_templates(
    request: Request,
    principal: TemplateReader,
    session: SessionDep,
    generations: str = "legacy",
    page_size: Annotated[int | None, Query(ge=1, le=200)] = None,
    page_token: str | None = None,
) -> TemplatePage | TemplateList:
    """The account's templates of the given generations (legacy by default), a page of
    `page_size` at a time; without `page_size`, all of them as `{"templates": […]}`, as
    SendGrid answers that older form of the call."""
    engines = _generations(generations)
    account_id = principal.account.id
    if page_size is None:
        found, _ = await service.page_of_templates(session, account_id=account_id, engines=engines)
        return TemplateList(templates=[await _out(session, t) for t in found])
    offset = _offset(page_token)
    found, total = await service.page_of_templates(
        session, account_id=account_id, engines=engines, offset=offset, limit=page_size
    )
    metadata = PageMetadata(
        prev=_page_url(request, page_size, max(offset - page_size, 0)) if offset else None,
        self_=_page_url(request, page_size, offset),
        next=_page_url(request, page_size, offset + page_size)
        if offset + page_size < total
        else None,
        count=total,
    )
    return TemplatePage(result=[await _out(session, t) for t in found], metadata=metadata)


@router.get(
    _TEMPLATE,
    response_model=TemplateOut,
    response_model_exclude_none=True,
    responses=errors(401, 403, 404, 429),
)
async def get_template(
    template_id: str, principal: TemplateReader, session: SessionDep
) -> TemplateOut:
    """One template with its versions."""
    template = await service.get_template(
        session, account_id=principal.account.id, template_id=template_id
    )
    return await _out(session, template)


@router.post(
    _TEMPLATE,
    status_code=201,
    response_model=TemplateOut,
    response_model_exclude_none=True,
    responses=errors(400, 401, 403, 404, 429),
)
async def duplicate_template(
    template_id: str, body: TemplateRename, principal: TemplateCreator, session: SessionDep
) -> TemplateOut:
    """A copy of the template and its versions, under a new id."""
    template = await service.get_template(
        session, account_id=principal.account.id, template_id=template_id
    )
    copy = await service.duplicate_template(session, template=template, name=body.name)
    await session.commit()
    return await _out(session, copy)


@router.patch(
    _TEMPLATE,
    response_model=TemplateOut,
    response_model_exclude_none=True,
    responses=errors(400, 401, 403, 404, 429),
)
async def rename_template(
    template_id: str, body: TemplateRename, principal: TemplateUpdater, session: SessionDep
) -> TemplateOut:
    """Rename a template (its content changes through its versions)."""
    template = await service.get_template(
        session, account_id=principal.account.id, template_id=template_id
    )
    if body.name is not None:
        await service.rename_template(session, template=template, name=body.name)
        await session.commit()
    return await _out(session, template)


@router.delete(
    _TEMPLATE, status_code=204, response_class=Response, responses=errors(401, 403, 404, 429)
)
async def delete_template(
    template_id: str, principal: TemplateDeleter, session: SessionDep
) -> Response:
    """Delete a template and its versions (sends already accepted keep their copy)."""
    template = await service.get_template(
        session, account_id=principal.account.id, template_id=template_id
    )
    await session.delete(template)
    await session.commit()
    return Response(status_code=204)


@router.post(
    _TEMPLATE + "/versions",
    status_code=201,
    response_model=VersionOut,
    response_model_exclude_none=True,
    responses=errors(400, 401, 403, 404, 429),
)
async def create_version(
    template_id: str,
    body: VersionCreate,
    principal: VersionCreator,
    session: SessionDep,
    settings: SettingsDep,
) -> VersionOut:
    """A new version; the first is active, `active: 1` switches to it; a version that does
    not compile, or calls a helper SendGrid does not have, is refused."""
    template = await service.get_template(
        session, account_id=principal.account.id, template_id=template_id
    )
    if not (body.html_content or body.plain_content):
        raise BadRequest(_SENDGRID_MESSAGES[NO_CONTENT])
    try:
        version = await service.add_version(
            session,
            template=template,
            name=body.name,
            subject=body.subject,
            html=body.html_content,
            text=body.plain_content,
            active=body.active == 1,
            limits=render_limits(settings),
            generate_plain_content=body.generate_plain_content,
            editor=body.editor,
            test_data=body.test_data,
        )
    except BadRequest as exc:
        raise _in_sendgrid_words(exc) from None
    await session.commit()
    return VersionOut.of(version)


@router.get(
    _VERSION,
    response_model=VersionOut,
    response_model_exclude_none=True,
    responses=errors(401, 403, 404, 429),
)
async def get_version(
    template_id: str, version_id: str, principal: VersionReader, session: SessionDep
) -> VersionOut:
    """One version."""
    version = await service.get_version(
        session, account_id=principal.account.id, template_id=template_id, version_id=version_id
    )
    return VersionOut.of(version)


def _changes(body: VersionUpdate) -> dict[str, object]:
    """The body's changes, in the store's names (`active: 0` changes nothing: a template
    keeps its active version until another is activated)."""
    given = body.model_dump(exclude_unset=True)
    renamed = {"html_content": "html", "plain_content": "text"}
    changes = {renamed.get(key, key): value for key, value in given.items()}
    changes["active"] = changes.get("active") == 1
    return changes


@router.patch(
    _VERSION,
    response_model=VersionOut,
    response_model_exclude_none=True,
    responses=errors(400, 401, 403, 404, 429),
)
async def edit_version(
    template_id: str,
    version_id: str,
    body: VersionUpdate,
    principal: VersionUpdater,
    session: SessionDep,
    settings: SettingsDep,
) -> VersionOut:
    """Edit a version; sends already accepted keep the content they were accepted with."""
    try:
        version = await service.edit_version(
            session,
            account_id=principal.account.id,
            template_id=template_id,
            version_id=version_id,
            changes=_changes(body),
            limits=render_limits(settings),
        )
    except BadRequest as exc:
        raise _in_sendgrid_words(exc) from None
    await session.commit()
    return VersionOut.of(version)


@router.delete(
    _VERSION, status_code=204, response_class=Response, responses=errors(401, 403, 404, 429)
)
async def delete_version(
    template_id: str, version_id: str, principal: VersionDeleter, session: SessionDep
) -> Response:
    """Delete a version (sends already accepted keep their copy)."""
    version = await service.get_version(
        session, account_id=principal.account.id, template_id=template_id, version_id=version_id
    )
    await session.delete(version)
    await session.commit()
    return Response(status_code=204)


@router.post(
    _VERSION + "/activate",
    response_model=VersionOut,
    response_model_exclude_none=True,
    responses=errors(401, 403, 404, 429),
)
async def activate_version(
    template_id: str, version_id: str, principal: VersionActivator, session: SessionDep
) -> VersionOut:
    """Make this version the one that is sent."""
    version = await service.get_version(
        session, account_id=principal.account.id, template_id=template_id, version_id=version_id
    )
    await service.activate(session, version=version)
    await session.commit()
    return VersionOut.of(version)
