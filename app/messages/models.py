"""Tables: messages, message_attachments, recipients, attempts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core import clock
from app.core.db import Base, JSONType, UTCDateTime
from app.core.ids import new_id

AutoIncrement = BigInteger().with_variant(Integer(), "sqlite")  # SQLite rowid needs INTEGER
# Plain JSON even on PostgreSQL: JSONB would reorder object keys, and templates that iterate
# over an object (`{{#each}}`) must see them in the order the sender gave.
OrderedJSON = JSON()


class RecipientStatus(StrEnum):
    """Where one recipient's copy stands (ARCHITECTURE.md §3)."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    PAUSED = "paused"
    SENDING = "sending"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    EXPIRED = "expired"
    DROPPED = "dropped"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True once no further delivery attempt will be made."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {
        RecipientStatus.DELIVERED,
        RecipientStatus.BOUNCED,
        RecipientStatus.EXPIRED,
        RecipientStatus.DROPPED,
        RecipientStatus.CANCELLED,
    }
)
# Statuses a worker may claim once `next_attempt_at` has come (`paused` never is).
CLAIMABLE_STATUSES = (RecipientStatus.SCHEDULED, RecipientStatus.QUEUED, RecipientStatus.DEFERRED)


class RecipientKind(StrEnum):
    """Which header (if any) shows the recipient."""

    TO = "to"
    CC = "cc"
    BCC = "bcc"


class Message(Base):
    """One accepted send: the content every recipient's copy is rendered from."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_created_at", "created_at"),)  # retention's scan

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    # Indexed with id by ix_messages_search (below), which also serves the foreign key.
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    api_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), default=None
    )
    domain_id: Mapped[str] = mapped_column(ForeignKey("domains.id", ondelete="RESTRICT"))
    from_email: Mapped[str] = mapped_column(String(320))
    from_name: Mapped[str | None] = mapped_column(String(256), default=None)
    to_header: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    cc_header: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    reply_to: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    subject: Mapped[str] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    html: Mapped[str | None] = mapped_column(Text, default=None)
    # Other content types, [[type, value], …] in the request's order (after plain and html).
    alternatives: Mapped[list[list[str]] | None] = mapped_column(JSONType, default=None)
    headers: Mapped[list[list[str]]] = mapped_column(JSONType, default=list)
    categories: Mapped[list[str]] = mapped_column(JSONType, default=list)
    custom_args: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    message_id_header: Mapped[str] = mapped_column(String(255), unique=True)
    size: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    # Set when subject, text and html are template sources (a copy of the template version
    # active at accept time, so a later edit cannot change what a retry sends).
    template_id: Mapped[str | None] = mapped_column(String(64), default=None)
    template_engine: Mapped[str | None] = mapped_column(String(16), default=None)
    # Template data every recipient shares (top-level `template_data`), kept once here and
    # merged under each recipient's own data when its copy is rendered.
    template_data: Mapped[dict[str, Any] | None] = mapped_column(OrderedJSON, default=None)
    # SendGrid's legacy `sections`: tags replaced before the personal substitutions.
    sections: Mapped[dict[str, str]] = mapped_column(OrderedJSON, default=dict)
    batch_id: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    asm_group_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # mail_settings, tracking_settings, ip_pool_name, asm as given (footer is applied).
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # A message submitted over SMTP is kept as the bytes to sign and send, not as fields.
    raw_mime: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    # The HTTP request (X-Request-Id) or SMTP session that accepted it: its logs and events
    # name it, so one request can be followed through delivery.
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    # When COLUMBA_CONTENT_RETENTION removed the bodies, attachments, raw MIME, template data
    # and personalizations (app.retention); the row, statuses and history stay.
    content_purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    attachments: Mapped[list[MessageAttachment]] = relationship(
        lazy="raise", order_by="MessageAttachment.position", cascade="all, delete-orphan"
    )
    recipients: Mapped[list[Recipient]] = relationship(lazy="raise", back_populates="message")


class MessageAttachment(Base):
    """A file attached to a message, decoded (base64 is undone at accept time)."""

    __tablename__ = "message_attachments"

    id: Mapped[int] = mapped_column(AutoIncrement, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    content_id: Mapped[str | None] = mapped_column(String(255), default=None)
    disposition: Mapped[str] = mapped_column(String(16), default="attachment")
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Recipient(Base):
    """One delivered copy: an address and where its delivery stands."""

    __tablename__ = "recipients"
    __table_args__ = (Index("ix_recipients_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    # Indexed first by the search indexes (below), which also serve the foreign key.
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    domain: Mapped[str] = mapped_column(String(253))
    kind: Mapped[str] = mapped_column(String(3), default=RecipientKind.TO)
    status: Mapped[str] = mapped_column(String(16), default=RecipientStatus.QUEUED)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    lease_token: Mapped[str | None] = mapped_column(String(26), index=True, default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Times in a row its lease ran out without an outcome: its worker died while it had it.
    lease_expiries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_enhanced_code: Mapped[str | None] = mapped_column(String(16), default=None)
    last_response: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    # What this recipient's copy differs by: to/cc headers, from, subject, headers,
    # substitutions, template_data, custom_args, send_at (see app.messages.personalize).
    personalization: Mapped[dict[str, Any] | None] = mapped_column(OrderedJSON, default=None)

    message: Mapped[Message] = relationship(lazy="raise", back_populates="recipients")


class Attempt(Base):
    """One SMTP try for one recipient: where it went and what the server said."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(AutoIncrement, primary_key=True, autoincrement=True)
    recipient_id: Mapped[str] = mapped_column(
        ForeignKey("recipients.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str] = mapped_column(String(16))
    mx_host: Mapped[str | None] = mapped_column(String(253), default=None)
    ip: Mapped[str | None] = mapped_column(String(45), default=None)
    tls_version: Mapped[str | None] = mapped_column(String(16), default=None)
    tls_cipher: Mapped[str | None] = mapped_column(String(64), default=None)
    # Whether the MX certificate validated for its name (None: no TLS on this attempt).
    tls_verified: Mapped[bool | None] = mapped_column(Boolean, default=None)
    stage: Mapped[str | None] = mapped_column(String(16), default=None)
    code: Mapped[int | None] = mapped_column(Integer, default=None)
    enhanced_code: Mapped[str | None] = mapped_column(String(16), default=None)
    response: Mapped[str | None] = mapped_column(Text, default=None)


class MessageTag(Base):
    """A category or custom_args pair a message is found by (app.messages.search.tags_of)."""

    __tablename__ = "message_tags"
    __table_args__ = (Index("ix_message_tags_search", "account_id", "tag", "message_id"),)

    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))


# Activity search (app.messages.search): one index per filter, each ending in the message id so
# that a page of any single filter is an ordered range scan. Partial where the column is mostly
# NULL, so that messages without a template or batch cost no index entry.
SUBJECT_INDEXED = 200  # characters of the subject the prefix index holds (B-tree entry size)
_subject_head = func.lower(func.substr(Message.subject, 1, SUBJECT_INDEXED)).label("subject_head")
Index("ix_messages_search", Message.account_id, Message.id)
Index("ix_messages_search_from", Message.account_id, func.lower(Message.from_email), Message.id)
Index(
    "ix_messages_search_subject",
    Message.account_id,
    _subject_head,
    Message.id,
    # A constant-prefix LIKE uses a B-tree whatever the database's collation with this class.
    postgresql_ops={"subject_head": "text_pattern_ops"},
)
Index(
    "ix_messages_search_template",
    Message.account_id,
    Message.template_id,
    Message.id,
    postgresql_where=Message.template_id.is_not(None),
    sqlite_where=Message.template_id.is_not(None),
)
Index(
    "ix_messages_search_batch",
    Message.account_id,
    Message.batch_id,
    Message.id,
    postgresql_where=Message.batch_id.is_not(None),
    sqlite_where=Message.batch_id.is_not(None),
)
Index(
    "ix_recipients_search_email",
    Recipient.account_id,
    func.lower(Recipient.email),
    Recipient.message_id,
)
Index("ix_recipients_search_domain", Recipient.account_id, Recipient.domain, Recipient.message_id)
Index("ix_recipients_search_status", Recipient.account_id, Recipient.status, Recipient.message_id)
