"""Bodies of `/v1/templates`."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# SendGrid's limits for template versions (tsg_templates_v3.yaml).
MAX_SUBJECT = 255
MAX_CONTENT = 1_048_576


class VersionIn(BaseModel):
    """A version's content; `active` makes it the one that is sent."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    subject: str = Field(min_length=1, max_length=MAX_SUBJECT)
    html: str | None = Field(default=None, max_length=MAX_CONTENT)
    text: str | None = Field(default=None, max_length=MAX_CONTENT)
    active: bool | None = None


class VersionPatch(BaseModel):
    """Changes to a version."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    subject: str | None = Field(default=None, min_length=1, max_length=MAX_SUBJECT)
    html: str | None = Field(default=None, max_length=MAX_CONTENT)
    text: str | None = Field(default=None, max_length=MAX_CONTENT)
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

    name: str = Field(min_length=1, max_length=100)
    engine: Literal["jinja", "handlebars"] = Field(
        default="jinja",
        description="jinja: Jinja2 (sandboxed, html autoescaped); handlebars: SendGrid's "
        "dynamic template language, so templates copied from SendGrid work unchanged.",
    )
    version: VersionIn | None = None


class TemplatePatch(BaseModel):
    """A new name."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)


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
