"""Bodies of `/v1/templates`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from app.common.fields import NotNull

# SendGrid's limits for template versions (tsg_templates_v3.yaml).
MAX_SUBJECT = 255
MAX_CONTENT = 1_048_576


NO_CONTENT = "A version needs html or text content (or both)."

Name = Annotated[str, Field(min_length=1, max_length=100)]
Subject = Annotated[str, Field(min_length=1, max_length=MAX_SUBJECT)]
Content = Annotated[str, Field(max_length=MAX_CONTENT)]


class VersionIn(BaseModel):
    """A version's content (html, text or both); `active` makes it the one that is sent."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    subject: Subject
    html: Content | None = None
    text: Content | None = None
    active: bool | None = None

    @model_validator(mode="after")
    def _has_content(self) -> VersionIn:
        if not (self.html or self.text):
            raise ValueError(NO_CONTENT)
        return self


class VersionPatch(BaseModel):
    """Changes to a version: html or text may be removed (null), as long as one is left."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[Name | SkipJsonSchema[None], NotNull] = None
    subject: Annotated[Subject | SkipJsonSchema[None], NotNull] = None
    html: Content | None = None
    text: Content | None = None
    active: Literal[True] | None = None


class TemplateIn(BaseModel):
    """A new template, optionally with its first version."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "order-shipped",
                    "engine": "handlebars",
                    "version": {
                        "name": "v1",
                        "subject": "{{{order.number}}} has shipped",
                        "html": "<p>Hi {{name}},</p>{{#each items}}<p>{{this}}</p>{{/each}}",
                        "text": "Hi {{name}}, your order has shipped.",
                    },
                }
            ]
        },
    )

    name: Name
    engine: Literal["jinja", "handlebars"] = Field(
        default="jinja",
        description="jinja: Jinja2 (sandboxed, html autoescaped); handlebars: SendGrid's "
        "dynamic template language, so templates copied from SendGrid work unchanged.",
    )
    version: VersionIn | None = None


class TemplatePatch(BaseModel):
    """A new name."""

    model_config = ConfigDict(extra="forbid")

    name: Name


class VersionView(BaseModel):
    """A version."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    template_id: str
    name: str
    subject: str
    html: str | None
    text: str | None
    active: bool
    created_at: datetime
    updated_at: datetime


class TemplateView(BaseModel):
    """A template and its versions."""

    id: str
    name: str
    engine: str
    created_at: datetime
    updated_at: datetime
    versions: list[VersionView]
