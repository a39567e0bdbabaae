"""Bodies of SendGrid's `/v3/templates`, field for field (tsg_templates_v3.yaml)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.json_schema import SkipJsonSchema

from app.common.fields import NotNull
from app.templates.models import Template, TemplateVersion, generation_of
from app.templates.schemas import MAX_CONTENT, MAX_SUBJECT

Name = Annotated[str, Field(min_length=1, max_length=100)]
Subject = Annotated[str, Field(max_length=MAX_SUBJECT)]
Content = Annotated[str, Field(max_length=MAX_CONTENT)]
Active = Literal[0, 1]
Editor = Literal["code", "design"]


def sendgrid_time(moment: datetime) -> str:
    """SendGrid's `updated_at`: `2021-04-28 13:12:46`, UTC."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


class _Model(BaseModel):
    """SendGrid ignores fields it does not know (its examples send `template_id`); so do we."""

    model_config = ConfigDict(extra="ignore")


class TemplateCreate(_Model):
    """`POST /v3/templates`: SendGrid's default generation is legacy."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"name": "welcome", "generation": "dynamic"}]},
    )

    name: Name
    generation: Literal["legacy", "dynamic"] = "legacy"


class TemplateRename(_Model):
    """`PATCH /v3/templates/{template_id}` (and the name of a duplicate)."""

    name: Annotated[Name | SkipJsonSchema[None], NotNull] = None


class VersionCreate(_Model):
    """`POST /v3/templates/{template_id}/versions` (TransactionalTemplateVersionCreate)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "name": "v1",
                    "subject": "{{{subject}}}",
                    "html_content": "<p>Hello {{name}}</p>",
                    "generate_plain_content": True,
                    "active": 1,
                    "editor": "code",
                }
            ]
        },
    )

    name: Name
    subject: Subject
    html_content: Content | None = None
    plain_content: Content | None = None
    generate_plain_content: StrictBool = True
    active: Active | None = None
    editor: Editor | None = None
    test_data: str | None = None


class VersionUpdate(_Model):
    """`PATCH …/versions/{version_id}`: what is given changes."""

    name: Annotated[Name | SkipJsonSchema[None], NotNull] = None
    subject: Annotated[Subject | SkipJsonSchema[None], NotNull] = None
    html_content: Content | None = None
    plain_content: Content | None = None
    generate_plain_content: Annotated[StrictBool | SkipJsonSchema[None], NotNull] = None
    active: Active | None = None
    editor: Editor | None = None
    test_data: str | None = None


class VersionOut(BaseModel):
    """TransactionalTemplateVersionOutput."""

    id: str
    template_id: str
    active: Active
    name: str
    subject: str
    html_content: str | None = None  # left out when the version has none, as SendGrid does
    plain_content: str | None = None
    generate_plain_content: bool
    editor: Editor
    test_data: str | None = None
    updated_at: str

    @classmethod
    def of(cls, version: TemplateVersion) -> VersionOut:
        """A stored version as SendGrid shows one."""
        return cls(
            id=version.id,
            template_id=version.template_id,
            active=1 if version.active else 0,
            name=version.name,
            subject=version.subject,
            html_content=version.html,
            plain_content=version.text,
            generate_plain_content=version.generate_plain_content,
            editor="design" if version.editor == "design" else "code",
            test_data=version.test_data,
            updated_at=sendgrid_time(version.updated_at),
        )


class TemplateOut(BaseModel):
    """TransactionalTemplate: a template with its versions."""

    id: str
    name: str
    generation: Literal["legacy", "dynamic"]
    updated_at: str
    versions: list[VersionOut]

    @classmethod
    def of(cls, template: Template, versions: list[TemplateVersion]) -> TemplateOut:
        """A stored template as SendGrid shows one."""
        return cls(
            id=template.id,
            name=template.name,
            generation=generation_of(template.engine).value,
            updated_at=sendgrid_time(template.updated_at),
            versions=[VersionOut.of(version) for version in versions],
        )


class PageMetadata(BaseModel):
    """`_metadata` of a page: links to this page and its neighbours, and the total count."""

    model_config = ConfigDict(populate_by_name=True)

    prev: str | None = None
    self_: str = Field(alias="self")
    next: str | None = None
    count: int


class TemplatePage(BaseModel):
    """`GET /v3/templates?page_size=…`: a page of templates."""

    model_config = ConfigDict(populate_by_name=True)

    result: list[TemplateOut]
    metadata: PageMetadata = Field(alias="_metadata")


class TemplateList(BaseModel):
    """`GET /v3/templates` without `page_size`: SendGrid's older, unpaged answer."""

    templates: list[TemplateOut]
