"""An account's tracking settings as the send path reads them: the stored row, or SendGrid's
defaults (everything off) when the account never changed them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import update as sa_update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.db import conflict_insert
from app.tracking.models import TrackingSettings


@dataclass(frozen=True, slots=True)
class TrackingSettingsView:
    """Every tracking setting of one account (the `tracking_settings` columns)."""

    click_enabled: bool = False
    click_enable_text: bool = False
    open_enabled: bool = False
    subscription_enabled: bool = False
    subscription_html_content: str = ""
    subscription_plain_content: str = ""
    subscription_landing: str = ""
    subscription_url: str = ""
    subscription_replace: str = ""
    ga_enabled: bool = False
    utm_source: str = ""
    utm_medium: str = ""
    utm_term: str = ""
    utm_content: str = ""
    utm_campaign: str = ""
    list_unsubscribe: bool = False  # Columba's own: List-Unsubscribe on every copy

    @classmethod
    def of(cls, row: TrackingSettings | None) -> TrackingSettingsView:
        """The view of a stored row; the defaults without one."""
        if row is None:
            return DEFAULTS
        values = {field.name: getattr(row, field.name) for field in fields(cls)}
        defaults = {field.name: getattr(DEFAULTS, field.name) for field in fields(cls)}
        # A row made by an older writer may leave a column NULL: the default stands in.
        return cls(**{k: defaults[k] if v is None else v for k, v in values.items()})


DEFAULTS = TrackingSettingsView()


async def effective_settings(session: AsyncSession, account_id: str) -> TrackingSettingsView:
    """The account's tracking settings: one primary-key read."""
    return TrackingSettingsView.of(await session.get(TrackingSettings, account_id))


async def update(
    session: AsyncSession, *, account_id: str, changes: dict[str, Any]
) -> TrackingSettingsView:
    """Change some settings (column name → value); the row is made on first change."""
    insert = conflict_insert(session)
    # Two concurrent first PATCHes: one inserts, both update (no unique-key error).
    await session.execute(
        insert(TrackingSettings).values(account_id=account_id).on_conflict_do_nothing()
    )
    if changes:
        await session.execute(
            sa_update(TrackingSettings)
            .where(TrackingSettings.account_id == account_id)
            .values(**changes, updated_at=clock.now())
        )
    row = await session.get(TrackingSettings, account_id, populate_existing=True)
    return TrackingSettingsView.of(row)
