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
    WEBHOOKS_TEST = "user.webhooks.event.test.create"
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
    TEMPLATE_VERSIONS_CREATE = "templates.versions.create"
    TEMPLATE_VERSIONS_READ = "templates.versions.read"
    TEMPLATE_VERSIONS_UPDATE = "templates.versions.update"
    TEMPLATE_VERSIONS_DELETE = "templates.versions.delete"
    TEMPLATE_VERSIONS_ACTIVATE = "templates.versions.activate.create"
    DOMAINS_CREATE = "whitelabel.create"
    DOMAINS_READ = "whitelabel.read"
    DOMAINS_UPDATE = "whitelabel.update"
    DOMAINS_DELETE = "whitelabel.delete"
    API_KEYS_CREATE = "api_keys.create"
    API_KEYS_READ = "api_keys.read"
    API_KEYS_UPDATE = "api_keys.update"
    API_KEYS_DELETE = "api_keys.delete"
    ASM_GROUPS_CREATE = "asm.groups.create"
    ASM_GROUPS_READ = "asm.groups.read"
    ASM_GROUPS_UPDATE = "asm.groups.update"
    ASM_GROUPS_DELETE = "asm.groups.delete"
    ASM_GROUP_SUPPRESSIONS_CREATE = "asm.groups.suppressions.create"
    ASM_GROUP_SUPPRESSIONS_READ = "asm.groups.suppressions.read"
    ASM_GROUP_SUPPRESSIONS_DELETE = "asm.groups.suppressions.delete"
    TRACKING_READ = "tracking_settings.read"
    TRACKING_CLICK_READ = "tracking_settings.click.read"
    TRACKING_CLICK_UPDATE = "tracking_settings.click.update"
    TRACKING_OPEN_READ = "tracking_settings.open.read"
    TRACKING_OPEN_UPDATE = "tracking_settings.open.update"
    TRACKING_SUBSCRIPTION_READ = "tracking_settings.subscription.read"
    TRACKING_SUBSCRIPTION_UPDATE = "tracking_settings.subscription.update"
    TRACKING_GA_READ = "tracking_settings.google_analytics.read"
    TRACKING_GA_UPDATE = "tracking_settings.google_analytics.update"
    METRICS_READ = "metrics.read"  # Columba's own: scrape /metrics (no SendGrid counterpart)
    # Columba's own: erase every trace of one address (DELETE /v1/addresses/{email}).
    ADDRESSES_ERASE = "addresses.erase"


def unknown_scopes(names: list[str] | tuple[str, ...]) -> list[str]:
    """The names that are not scopes Columba knows, in the order given."""
    known = {scope.value for scope in Scope}
    return [name for name in names if name not in known]


def parse_scopes(names: list[str] | tuple[str, ...]) -> list[str]:
    """Validate scope names given on the command line; unknown names raise ValueError."""
    unknown = unknown_scopes(names)
    if unknown:
        known = {scope.value for scope in Scope}
        raise ValueError(
            f"unknown scope(s): {', '.join(unknown)}; known scopes: {', '.join(sorted(known))}"
        )
    return sorted(set(names))
