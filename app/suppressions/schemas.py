"""Bodies of the suppressions APIs (native and SendGrid's /v3/suppression)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.common.fields import EmailText, HeaderText
from app.suppressions.models import Suppression, SuppressionType

MAX_ADD = 1000


class SuppressionIn(BaseModel):
    """An address to suppress."""

    model_config = ConfigDict(extra="forbid")

    email: EmailText
    type: SuppressionType = SuppressionType.MANUAL
    reason: HeaderText = Field(default="", max_length=1000)


class AddSuppressions(BaseModel):
    """`POST /v1/suppressions`: one or many addresses."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"suppressions": [{"email": "gone@example.com", "reason": "asked"}]}]
        },
    )

    suppressions: list[SuppressionIn] = Field(min_length=1, max_length=MAX_ADD)


class SuppressionView(BaseModel):
    """One suppression."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    type: str
    reason: str
    status: str = Field(description="The enhanced status code behind a bounce, if any.")
    created_at: datetime

    @classmethod
    def of(cls, row: Suppression) -> SuppressionView:
        """The view of a row."""
        return cls.model_validate(row)


class SuppressionList(BaseModel):
    """A page of suppressions."""

    suppressions: list[SuppressionView]
    next_cursor: str | None = Field(description="Pass as `after` for the next page; null at end.")


class SendGridDeleteMany(BaseModel):
    """SendGrid's DELETE body: `delete_all` or `emails`, never both."""

    delete_all: bool = False
    emails: list[str] = Field(default_factory=list, max_length=MAX_ADD)

    @model_validator(mode="after")
    def _one_of(self) -> SendGridDeleteMany:
        """Exactly one of the two ways to delete."""
        if self.delete_all and self.emails:
            raise ValueError("You can not have both `emails` and `delete_all` set")
        if not self.delete_all and not self.emails:
            raise ValueError("give `emails` or set `delete_all` to true")
        return self


class SendGridSuppression(BaseModel):
    """One entry of a /v3/suppression list; which fields appear depends on the list."""

    created: int
    email: str
    reason: str | None = None
    status: str | None = None
    ip: str | None = None
