"""An account's tracking defaults, as a send's `tracking_settings` would give them.

They are read when a message is accepted and kept on it (`settings["account_tracking"]`),
so that a retry renders the same bytes even if the account's settings change in between
(CHECKLIST 26), as a template's version is fixed at accept time.

Every send reads them, so they are cached per process like keys and sending domains
(AUTH_CACHE_TTL, ≤ 1 s; a change through the API is announced to every process at once):
the read was a pooled connection and a query on every request that otherwise needs none
before its group commit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import AccountCache
from app.core.signals import TRACKING
from app.tracking.settings import DEFAULTS, TrackingSettingsView, effective_settings

SNAPSHOT_KEY = "account_tracking"

# (account id,) → its settings, SendGrid's defaults included; one per process.
account_settings: AccountCache[tuple[str], TrackingSettingsView] = AccountCache(TRACKING)


async def account_defaults(session: AsyncSession, account_id: str) -> dict[str, Any] | None:
    """The account's defaults in the send's shape; None when they are SendGrid's (all off)."""
    view = await account_settings.lookup(
        (account_id,), lambda: effective_settings(session, account_id)
    )
    return None if view is None or view == DEFAULTS else as_send_settings(view)


def as_send_settings(row: TrackingSettingsView) -> dict[str, Any]:
    """An account's settings as a send's `tracking_settings`, plus `list_unsubscribe`."""
    utm = ("utm_source", "utm_medium", "utm_term", "utm_content", "utm_campaign")
    return {
        "click_tracking": {"enable": row.click_enabled, "enable_text": row.click_enable_text},
        "open_tracking": {"enable": row.open_enabled},
        "subscription_tracking": {
            "enable": row.subscription_enabled,
            "text": row.subscription_plain_content,
            "html": row.subscription_html_content,
            "substitution_tag": row.subscription_replace,
        },
        "ganalytics": {"enable": row.ga_enabled, **{name: getattr(row, name) for name in utm}},
        "list_unsubscribe": row.list_unsubscribe,
    }


async def with_account_defaults(
    session: AsyncSession, account_id: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """A message's stored settings with the account's defaults kept beside them."""
    defaults = await account_defaults(session, account_id)
    return settings if defaults is None else {**settings, SNAPSHOT_KEY: defaults}
