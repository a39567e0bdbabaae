"""Counters beside categories: per mailbox provider, and per bounce classification.

They are kept in the stats_counters rows, under category keys that start with a control
character no category can hold (categories must be header-safe: app.common.fields), so every
event still costs one upsert: a provider adds one row per (provider, hour) to it, however many
recipients share them, and a bounce two more. Readers of categories skip these keys."""

from __future__ import annotations

from app.delivery.classify import Bucket
from app.events.models import EventType
from app.events.recorded import RecordedEvent

MARK = "\x1f"  # ASCII unit separator: refused in categories, so no category starts with it
PROVIDER = MARK + "mbp:"
CLASSIFICATION = MARK + "bc:"
CLASSIFICATION_DOMAIN = MARK + "bcd:"
KEY_LENGTH = 255  # the column's length

OTHER = "Other"
# Mailbox providers by the recipient address's domain. Mail to a company's own domain hosted
# by one of them (Google Workspace, Microsoft 365) counts as Other: the event has the address,
# not the MX host, and resolving it here would slow the write path.
_PROVIDERS = {
    "Gmail": ("gmail.com", "googlemail.com"),
    "Yahoo": ("yahoo.com", "ymail.com", "rocketmail.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de"),
    "Outlook.com": ("outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk"),
    "AOL": ("aol.com", "aim.com"),
    "iCloud": ("icloud.com", "me.com", "mac.com"),
    "Yandex": ("yandex.ru", "yandex.com", "ya.ru"),
    "Mail.ru": ("mail.ru", "bk.ru", "inbox.ru", "list.ru"),
    "GMX": ("gmx.com", "gmx.de", "gmx.net", "web.de"),
    "Zoho": ("zoho.com", "zohomail.com"),
    "Proton Mail": ("proton.me", "protonmail.com", "pm.me"),
    "Comcast": ("comcast.net",),
    "QQ Mail": ("qq.com",),
}
_PROVIDER_OF = {domain: name for name, domains in _PROVIDERS.items() for domain in domains}
PROVIDERS = (*_PROVIDERS, OTHER)
_BUCKETS = frozenset(bucket.value for bucket in Bucket)


def is_category(key: str) -> bool:
    """True for a category's key (or the all-mail ''), false for the keys kept here."""
    return not key.startswith(MARK)


def provider_key(provider: str) -> str:
    """The counter key of one mailbox provider."""
    return PROVIDER + provider


def classification_key(bucket: str) -> str:
    """The counter key of one bounce classification."""
    return CLASSIFICATION + bucket


def classification_domain_prefix(bucket: str) -> str:
    """What the keys of one classification's recipient domains start with."""
    return f"{CLASSIFICATION_DOMAIN}{bucket}:"


_PROVIDER_KEY = {domain: PROVIDER + name for domain, name in _PROVIDER_OF.items()}
_OTHER_KEY = PROVIDER + OTHER


def keys_of(event: RecordedEvent) -> tuple[str, ...]:
    """The keys, besides categories, that an event counts under."""
    email = event.data.get("email")
    if not isinstance(email, str):
        return ()
    provider = _PROVIDER_KEY.get(email.rpartition("@")[2].lower().rstrip("."), _OTHER_KEY)
    if event.type != EventType.BOUNCED:
        return (provider,)
    bucket = event.data.get("bounce_classification")
    if bucket not in _BUCKETS:
        return (provider,)
    by_domain = classification_domain_prefix(str(bucket)) + email.rpartition("@")[2].lower()
    if len(by_domain) > KEY_LENGTH:  # only for domains near DNS's 253-character limit
        return (provider, classification_key(str(bucket)))
    return (provider, classification_key(str(bucket)), by_domain)
