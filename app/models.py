"""Imports every table so that `Base.metadata` is complete (for Alembic and tests)."""

from app.accounts.models import Account, ApiKey
from app.addresses.models import Erasure
from app.asm.models import GroupSuppression, UnsubscribeGroup
from app.batches.models import Batch
from app.bounces.models import InboundMessage, InboundReport
from app.core.db import Base
from app.domains.models import Domain, DomainKey
from app.events.models import Event
from app.idempotency.models import IdempotencyKey
from app.messages.models import Attempt, Message, MessageAttachment, MessageTag, Recipient
from app.stats.models import StatsCounter
from app.submission.models import SmtpSubmission
from app.suppressions.models import Suppression
from app.templates.models import Template, TemplateVersion
from app.tlspolicy.models import MtaStsPolicy, TlsReport, TlsReportCount
from app.tracking.models import Engagement, TrackingSettings
from app.webhooks.models import Webhook, WebhookAttempt, WebhookBatch, WebhookOutbox

__all__ = [
    "Account",
    "ApiKey",
    "Attempt",
    "Base",
    "Batch",
    "Domain",
    "DomainKey",
    "Engagement",
    "Erasure",
    "Event",
    "GroupSuppression",
    "IdempotencyKey",
    "InboundMessage",
    "InboundReport",
    "Message",
    "MessageAttachment",
    "MessageTag",
    "MtaStsPolicy",
    "Recipient",
    "SmtpSubmission",
    "StatsCounter",
    "Suppression",
    "Template",
    "TemplateVersion",
    "TlsReport",
    "TlsReportCount",
    "TrackingSettings",
    "UnsubscribeGroup",
    "Webhook",
    "WebhookAttempt",
    "WebhookBatch",
    "WebhookOutbox",
]
