"""Bodies of SendGrid's ASM API, field for field (tsg_suppressions_v3.yaml)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from app.asm.models import DESCRIPTION_MAX, NAME_MAX, UnsubscribeGroup
from app.common.fields import EmailText, HeaderText

MAX_EMAILS = 1000  # addresses per request, as /v1/suppressions takes
MAX_GROUPS = 200  # SendGrid: "You can create and retrieve up to 200 suppression groups"

GroupName = Annotated[HeaderText, Field(min_length=1, max_length=NAME_MAX)]
GroupDescription = Annotated[HeaderText, Field(max_length=DESCRIPTION_MAX)]


class _Model(BaseModel):
    """SendGrid ignores unknown fields (its PATCH example even sends `id`); so do we."""

    model_config = ConfigDict(extra="ignore")


class GroupIn(_Model):
    """`POST /v3/asm/groups`: name and description are required when creating."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "name": "Product Suggestions",
                    "description": "Suggestions for products our users might like.",
                    "is_default": False,
                }
            ]
        },
    )

    name: GroupName
    description: GroupDescription
    is_default: StrictBool = False


class GroupPatch(_Model):
    """`PATCH /v3/asm/groups/{group_id}`: what is given changes."""

    name: GroupName | None = None
    description: GroupDescription | None = None
    is_default: StrictBool | None = None

    def changes(self) -> dict[str, Any]:
        """The fields given with a value (null leaves a field as it is)."""
        return {key: value for key, value in self.model_dump().items() if value is not None}


class GroupCreated(BaseModel):
    """The 201 answer of `POST /v3/asm/groups`."""

    id: int
    name: str
    description: str
    is_default: bool

    @classmethod
    def of(cls, group: UnsubscribeGroup) -> GroupCreated:
        """The view of a row."""
        return cls(
            id=group.id, name=group.name, description=group.description, is_default=group.is_default
        )


class SuppressionGroup(GroupCreated):
    """A group with how many addresses opted out of it."""

    unsubscribes: int

    @classmethod
    def counted(cls, group: UnsubscribeGroup, unsubscribes: int) -> SuppressionGroup:
        """The view of a row and its count."""
        return cls(**GroupCreated.of(group).model_dump(), unsubscribes=unsubscribes)


class RecipientEmails(_Model):
    """SendGrid's SuppressionsRequest: the addresses to add or find."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"recipient_emails": ["test1@example.com"]}]},
    )

    recipient_emails: list[EmailText] = Field(min_length=1, max_length=MAX_EMAILS)


class GroupSuppressionEntry(BaseModel):
    """One address of one group (`GET /v3/asm/suppressions`)."""

    email: str
    group_id: int
    group_name: str
    created_at: int = Field(description="A Unix time.")


class AddressGroup(BaseModel):
    """A group, and whether one address opted out of it."""

    description: str
    id: int
    is_default: bool
    name: str
    suppressed: bool


class AddressGroups(BaseModel):
    """`GET /v3/asm/suppressions/{email}`: every group of the account."""

    suppressions: list[AddressGroup]


class GlobalSuppression(BaseModel):
    """`GET /v3/asm/suppressions/global/{email}`: `{}` when the address is not suppressed."""

    recipient_email: str | None = None
