"""What both send APIs hand to the accept service: one message and its personalisations.

POST /v1/send and POST /v3/mail/send validate their own request shapes, then translate them
into a `Submission`; everything after that (sender domain, templates, batches, scheduling,
suppressions, the transaction) is one code path with one set of rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.common.fields import EmailAddress
from app.suppressions.models import SuppressionType


@dataclass(frozen=True, slots=True)
class FileData:
    """An attachment, decoded."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    disposition: str = "attachment"


@dataclass(frozen=True, slots=True)
class Personalization:
    """One copy of the message and the recipients it goes to (SendGrid's personalization)."""

    to: tuple[EmailAddress, ...]
    cc: tuple[EmailAddress, ...] = ()
    bcc: tuple[EmailAddress, ...] = ()
    sender: EmailAddress | None = None
    subject: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    substitutions: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    custom_args: dict[str, Any] = field(default_factory=dict)
    send_at: datetime | None = None
    field_path: str = ""  # where it came from in the request, for error messages

    @property
    def recipients(self) -> tuple[tuple[str, EmailAddress], ...]:
        """(kind, address) for everyone this copy goes to."""
        return (
            *(("to", a) for a in self.to),
            *(("cc", a) for a in self.cc),
            *(("bcc", a) for a in self.bcc),
        )


@dataclass(frozen=True, slots=True)
class Submission:
    """A validated send request, whichever API it came through."""

    sender: EmailAddress
    personalizations: tuple[Personalization, ...]
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    # Content types beside text/plain and text/html: (type, value), in the order given.
    alternatives: tuple[tuple[str, str], ...] = ()
    reply_to: tuple[EmailAddress, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    attachments: tuple[FileData, ...] = ()
    categories: tuple[str, ...] = ()
    custom_args: dict[str, Any] = field(default_factory=dict)
    template_id: str | None = None
    template_engine: str | None = None  # inline subject/text/html are templates in it
    template_data: dict[str, Any] | None = None  # defaults under each copy's own data
    sections: dict[str, str] = field(default_factory=dict)
    send_at: datetime | None = None
    batch_id: str | None = None
    asm_group_id: int | None = None  # the unsubscribe group (SendGrid's asm.group_id)
    # The groups the preference page offers; stored in the message's settings["asm"].
    groups_to_display: tuple[int, ...] = ()
    bypass: frozenset[SuppressionType] = frozenset()
    bypass_groups: bool = False  # group opt-outs too (SendGrid's bypass_list_management)
    settings: dict[str, Any] = field(default_factory=dict)
    sandbox: bool = False
    # The request's own names for fields, so errors point where the caller wrote them.
    field_names: dict[str, str] = field(default_factory=dict)

    def field_name(self, name: str) -> str:
        """The caller's name for a field (v3 and v1 name some fields differently)."""
        return self.field_names.get(name, name)
