"""Imports every table so that `Base.metadata` is complete (for Alembic and tests)."""

from app.accounts.models import Account, ApiKey
from app.db import Base
from app.domains.models import Domain
from app.events.models import Event
from app.messages.models import Attempt, Message, MessageAttachment, Recipient
from app.submission.models import Submission
from app.suppressions.models import Suppression

__all__ = [
    "Account",
    "ApiKey",
    "Attempt",
    "Base",
    "Domain",
    "Event",
    "Message",
    "MessageAttachment",
    "Recipient",
    "Submission",
    "Suppression",
]
