"""Templates and their versions: create, edit, activate; a version that does not compile, or
cannot render within the limits whatever its data, is refused when it is saved, never
discovered at delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.errors import BadRequest, ErrorItem, NotFound
from app.templates.engines import LimitExceeded, RenderError, RenderLimits, check_syntax, render
from app.templates.models import (
    Template,
    TemplateEngine,
    TemplateVersion,
    new_legacy_template_id,
    new_template_id,
)
from app.templates.plaintext import plain_text
from app.templates.schemas import NO_CONTENT

# SendGrid: "Each user can create up to 300 different templates."
MAX_TEMPLATES = 300


async def get_template(session: AsyncSession, *, account_id: str, template_id: str) -> Template:
    """The account's template; 404 for anyone else's (or none)."""
    template = await session.get(Template, template_id)
    if template is None or template.account_id != account_id:
        raise NotFound("template not found", "template_id")
    return template


async def list_templates(session: AsyncSession, *, account_id: str) -> list[Template]:
    """The account's templates, oldest first."""
    query = select(Template).where(Template.account_id == account_id).order_by(Template.created_at)
    return list((await session.execute(query)).scalars())


async def page_of_templates(
    session: AsyncSession,
    *,
    account_id: str,
    engines: Collection[str] | None,
    offset: int = 0,
    limit: int | None = None,
) -> tuple[list[Template], int]:
    """A page of the account's templates (oldest first) of the given engines, and how many
    there are in all."""
    where = [Template.account_id == account_id]
    if engines is not None:
        where.append(Template.engine.in_(list(engines)))
    total = (await session.execute(select(func.count()).where(*where))).scalar_one()
    query = select(Template).where(*where).order_by(Template.created_at, Template.id)
    query = query.offset(offset).limit(limit)
    return list((await session.execute(query)).scalars()), total


async def count_templates(session: AsyncSession, *, account_id: str) -> int:
    """How many templates the account has."""
    query = select(func.count()).where(Template.account_id == account_id)
    return int((await session.execute(query)).scalar_one())


async def versions_of(session: AsyncSession, *, template_id: str) -> list[TemplateVersion]:
    """A template's versions, oldest first."""
    query = (
        select(TemplateVersion)
        .where(TemplateVersion.template_id == template_id)
        .order_by(TemplateVersion.created_at, TemplateVersion.id)
    )
    return list((await session.execute(query)).scalars())


async def get_version(
    session: AsyncSession, *, account_id: str, template_id: str, version_id: str
) -> TemplateVersion:
    """One version of the account's template; 404 otherwise."""
    version = await session.get(TemplateVersion, version_id)
    if version is None or version.account_id != account_id or version.template_id != template_id:
        raise NotFound("template version not found", "version_id")
    return version


async def active_version(
    session: AsyncSession, *, account_id: str, template_id: str
) -> tuple[Template, TemplateVersion | None]:
    """The template and its active version (None when no version is active)."""
    template = await get_template(session, account_id=account_id, template_id=template_id)
    query = select(TemplateVersion).where(
        TemplateVersion.template_id == template.id, TemplateVersion.active.is_(True)
    )
    return template, (await session.execute(query)).scalar_one_or_none()


def check_version(engine: str, *, subject: str, html: str | None, text: str | None) -> None:
    """400 naming every part that does not compile, with the line and the reason."""
    problems = []
    for field, source, is_html in (("subject", subject, False), ("html", html, True)):
        problems += _problems(engine, field, source, is_html)
    problems += _problems(engine, "text", text, False)
    if problems:
        raise BadRequest(problems[0].message, errors=problems)


def _problems(engine: str, field: str, source: str | None, html: bool) -> list[ErrorItem]:
    if source is None:
        return []
    try:
        check_syntax(engine, source, html=html)
    except RenderError as exc:
        return [ErrorItem(f"the {field} does not compile: {exc}", field)]
    return []


async def check_renders(
    engine: str, *, subject: str, html: str | None, text: str | None, limits: RenderLimits
) -> None:
    """400 naming every part that cannot render within the limits even with no data (a
    trial render with empty data: a part that fails otherwise, or whose size depends on
    the data, may well render with a send's data, so it is not refused). The trial runs
    in a thread, so that up to the render timeout of work does not stall the API."""
    parts = (("subject", subject, False), ("html", html, True), ("text", text, False))
    problems = []
    for field, source, is_html in parts:
        if source is not None:
            problems += await asyncio.to_thread(_trial, engine, field, source, is_html, limits)
    if problems:
        raise BadRequest(problems[0].message, errors=problems)


def _trial(
    engine: str, field: str, source: str, html: bool, limits: RenderLimits
) -> list[ErrorItem]:
    """A render of one part with empty data: its problem when a limit stops it."""
    try:
        render(engine, source, {}, html=html, limits=limits)
    except LimitExceeded as exc:
        message = f"the {field} cannot be rendered within the limits, even with no data: {exc}"
        return [ErrorItem(message, field)]
    except RenderError:
        pass  # an error that data may avoid (`{{ a / b }}`): found at delivery, per recipient
    return []


async def create_template(
    session: AsyncSession, *, account_id: str, name: str, engine: str
) -> Template:
    """A new template without versions; a legacy one gets a UUID, as in SendGrid."""
    legacy = engine == TemplateEngine.LEGACY
    template_id = new_legacy_template_id() if legacy else new_template_id()
    template = Template(id=template_id, account_id=account_id, name=name, engine=engine)
    session.add(template)
    await session.flush()
    return template


async def add_version(
    session: AsyncSession,
    *,
    template: Template,
    name: str,
    subject: str,
    html: str | None,
    text: str | None,
    active: bool | None,
    limits: RenderLimits,
    generate_plain_content: bool = False,
    editor: str | None = None,
    test_data: str | None = None,
) -> TemplateVersion:
    """A new version; the first one is active, as in SendGrid; `active` makes it so. With
    `generate_plain_content`, the text is made from the html."""
    if generate_plain_content and html:
        text = await asyncio.to_thread(plain_text, html)  # up to 1 MiB: off the loop
    check_version(template.engine, subject=subject, html=html, text=text)
    await check_renders(template.engine, subject=subject, html=html, text=text, limits=limits)
    first = not await versions_of(session, template_id=template.id)
    version = TemplateVersion(
        template_id=template.id,
        account_id=template.account_id,
        name=name,
        subject=subject,
        html=html,
        text=text,
        active=False,
        generate_plain_content=generate_plain_content,
        editor=editor,
        test_data=test_data,
    )
    session.add(version)
    await session.flush()
    if first or active:
        await activate(session, version=version)
    await _touch(session, template)
    return version


async def edit_version(
    session: AsyncSession,
    *,
    account_id: str,
    template_id: str,
    version_id: str,
    changes: dict[str, object],
    limits: RenderLimits,
) -> TemplateVersion:
    """Change a version's name, subject, html, text or SendGrid's fields (checked before
    anything changes); a version that generates its text gets it made from its html anew.
    404 for another account's template or version; 400 when no content would be left."""
    template = await get_template(session, account_id=account_id, template_id=template_id)
    version = await get_version(
        session, account_id=account_id, template_id=template_id, version_id=version_id
    )
    if not (changes.get("html", version.html) or changes.get("text", version.text)):
        raise BadRequest(NO_CONTENT, "html" if "html" in changes else "text")
    changes = dict(changes)
    html = changes.get("html", version.html)
    if changes.get("generate_plain_content", version.generate_plain_content) and html:
        changes["text"] = await asyncio.to_thread(plain_text, str(html))
    merged = {
        "subject": changes.get("subject", version.subject),
        "html": html,
        "text": changes.get("text", version.text),
    }
    check_version(template.engine, **merged)  # type: ignore[arg-type]
    await check_renders(template.engine, **merged, limits=limits)  # type: ignore[arg-type]
    for name, value in changes.items():
        if name in _EDITABLE:
            setattr(version, name, value)
    version.updated_at = clock.now()
    if changes.get("active"):
        await activate(session, version=version)
    await session.flush()
    await _touch(session, template)
    return version


_EDITABLE = frozenset(
    {"name", "subject", "html", "text", "generate_plain_content", "editor", "test_data"}
)


async def duplicate_template(
    session: AsyncSession, *, template: Template, name: str | None
) -> Template:
    """A copy of a template and its versions (the same one active), as SendGrid's duplicate."""
    copy = await create_template(
        session,
        account_id=template.account_id,
        name=name or f"Duplicate: {template.name}"[:100],
        engine=template.engine,
    )
    for version in await versions_of(session, template_id=template.id):
        session.add(
            TemplateVersion(
                template_id=copy.id,
                account_id=copy.account_id,
                **{key: getattr(version, key) for key in _COPIED},
            )
        )
    await session.flush()
    return copy


_COPIED = (
    "name",
    "subject",
    "html",
    "text",
    "active",
    "generate_plain_content",
    "editor",
    "test_data",
)


async def activate(session: AsyncSession, *, version: TemplateVersion) -> None:
    """Make `version` the only active one (the partial unique index enforces "only")."""
    await session.execute(
        update(TemplateVersion)
        .where(TemplateVersion.template_id == version.template_id, TemplateVersion.active)
        .values(active=False)
        .execution_options(synchronize_session=False)
    )
    await session.flush()
    await session.execute(
        update(TemplateVersion)
        .where(TemplateVersion.id == version.id)
        .values(active=True, updated_at=clock.now())
        .execution_options(synchronize_session=False)
    )
    await session.refresh(version)


async def _touch(session: AsyncSession, template: Template) -> None:
    template.updated_at = clock.now()
    await session.flush()


async def rename_template(session: AsyncSession, *, template: Template, name: str) -> None:
    """Give a template a new name."""
    template.name = name
    await _touch(session, template)
