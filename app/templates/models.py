"""Tables: templates and template_versions."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock
from app.core.db import Base, UTCDateTime


class TemplateEngine(StrEnum):
    """The language a template is written in."""

    JINJA = "jinja"
    HANDLEBARS = "handlebars"
    # SendGrid's legacy templates: no template language, only the request's subject and
    # content put into `<%subject%>` and `<%body%>`, then the substitutions.
    LEGACY = "legacy"


class Generation(StrEnum):
    """SendGrid's two kinds of template: `d-` ids (dynamic) or UUIDs (legacy)."""

    LEGACY = "legacy"
    DYNAMIC = "dynamic"


def generation_of(engine: str) -> Generation:
    """A legacy template has no language; every template in a language is a dynamic one."""
    return Generation.LEGACY if engine == TemplateEngine.LEGACY else Generation.DYNAMIC


def new_template_id() -> str:
    """`d-` and 32 hex digits: the shape of SendGrid's dynamic template ids."""
    return "d-" + uuid.uuid4().hex


def new_legacy_template_id() -> str:
    """A UUID: the shape of SendGrid's legacy template ids (never starting with `d-`)."""
    return str(uuid.uuid4())


def new_version_id() -> str:
    """A UUID, as SendGrid's version ids are."""
    return str(uuid.uuid4())


class Template(Base):
    """A named template; what is sent is its active version."""

    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_template_id)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    engine: Mapped[str] = mapped_column(String(16), default=TemplateEngine.JINJA)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class TemplateVersion(Base):
    """One version of a template's subject, html and text; at most one is active."""

    __tablename__ = "template_versions"
    __table_args__ = (
        # The database, not the code, guarantees "one active version" under concurrency.
        Index(
            "uq_template_versions_one_active",
            "template_id",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_version_id)
    template_id: Mapped[str] = mapped_column(
        ForeignKey("templates.id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text, default=None)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    # SendGrid's version fields: the text part made from the html when the version is saved,
    # the editor it was written in, and the mock data of its previews.
    generate_plain_content: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    editor: Mapped[str | None] = mapped_column(String(16), default=None)
    test_data: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
