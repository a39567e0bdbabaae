"""API key scopes, named as SendGrid names them."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    """What a key may do; a key without scopes may do everything (as in SendGrid)."""

    MAIL_SEND = "mail.send"
    MESSAGES_READ = "messages.read"
    STATS_READ = "stats.read"
    SUPPRESSION_READ = "suppression.read"
    SUPPRESSION_CREATE = "suppression.create"
    SUPPRESSION_DELETE = "suppression.delete"
    WEBHOOKS_READ = "user.webhooks.event.settings.read"
    WEBHOOKS_UPDATE = "user.webhooks.event.settings.update"
    MAIL_BATCH_CREATE = "mail.batch.create"
    MAIL_BATCH_READ = "mail.batch.read"
    MAIL_BATCH_UPDATE = "mail.batch.update"
    SCHEDULED_SENDS_CREATE = "user.scheduled_sends.create"
    SCHEDULED_SENDS_READ = "user.scheduled_sends.read"
    SCHEDULED_SENDS_UPDATE = "user.scheduled_sends.update"
    SCHEDULED_SENDS_DELETE = "user.scheduled_sends.delete"
    TEMPLATES_CREATE = "templates.create"
    TEMPLATES_READ = "templates.read"
    TEMPLATES_UPDATE = "templates.update"
    TEMPLATES_DELETE = "templates.delete"
    DOMAINS_READ = "whitelabel.read"
    DOMAINS_UPDATE = "whitelabel.update"


def parse_scopes(names: list[str] | tuple[str, ...]) -> list[str]:
    """Validate scope names given on the command line; unknown names raise ValueError."""
    known = {scope.value for scope in Scope}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"unknown scope(s): {', '.join(unknown)}; known scopes: {', '.join(sorted(known))}"
        )
    return sorted(set(names))
