"""effective_settings(): the stored row, or SendGrid's defaults without one."""

from __future__ import annotations

from app.core.db import Database
from app.tracking.models import TrackingSettings
from app.tracking.settings import DEFAULTS, effective_settings
from tests.support import Sender


async def test_an_account_without_a_row_has_everything_off(db: Database, sender: Sender) -> None:
    async with db.session() as session:
        view = await effective_settings(session, sender.account_id)
    assert view == DEFAULTS
    assert not view.open_enabled
    assert not view.list_unsubscribe


async def test_the_stored_row_is_what_the_send_path_sees(db: Database, sender: Sender) -> None:
    async with db.session() as session:
        session.add(
            TrackingSettings(
                account_id=sender.account_id,
                open_enabled=True,
                subscription_landing="<p>bye</p>",
                utm_source="columba",
            )
        )
        await session.commit()
    async with db.session() as session:
        view = await effective_settings(session, sender.account_id)
    assert view.open_enabled
    assert not view.click_enabled
    assert view.subscription_landing == "<p>bye</p>"
    assert view.utm_source == "columba"
