"""HTTP: SendGrid's `/v3/tracking_settings` (list) and its click, open, subscription and
google_analytics settings (GET and PATCH)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.scopes import Scope
from app.accounts.service import Principal
from app.core import signals
from app.core.queue import Queue
from app.deps import QueueDep, SessionDep, require
from app.openapi import errors
from app.routing import StrictJsonRoute
from app.tracking import settings
from app.tracking.schemas import (
    ClickPatch,
    ClickTracking,
    GoogleAnalytics,
    GoogleAnalyticsPatch,
    OpenPatch,
    OpenTracking,
    SubscriptionPatch,
    SubscriptionTracking,
    TrackingSetting,
    TrackingSettingsList,
)
from app.tracking.settings import TrackingSettingsView

router = APIRouter(tags=["tracking settings"], route_class=StrictJsonRoute)

Reader = Annotated[Principal, Depends(require(Scope.TRACKING_READ))]
ClickReader = Annotated[Principal, Depends(require(Scope.TRACKING_CLICK_READ))]
ClickUpdater = Annotated[Principal, Depends(require(Scope.TRACKING_CLICK_UPDATE))]
OpenReader = Annotated[Principal, Depends(require(Scope.TRACKING_OPEN_READ))]
OpenUpdater = Annotated[Principal, Depends(require(Scope.TRACKING_OPEN_UPDATE))]
SubscriptionReader = Annotated[Principal, Depends(require(Scope.TRACKING_SUBSCRIPTION_READ))]
SubscriptionUpdater = Annotated[Principal, Depends(require(Scope.TRACKING_SUBSCRIPTION_UPDATE))]
GoogleReader = Annotated[Principal, Depends(require(Scope.TRACKING_GA_READ))]
GoogleUpdater = Annotated[Principal, Depends(require(Scope.TRACKING_GA_UPDATE))]

READ_ERRORS = errors(401, 403, 429)
WRITE_ERRORS = errors(400, 401, 403, 429)
# The titles and descriptions SendGrid's list shows.
_LIST = (
    ("click", "Click Tracking", "Rewrites links to count clicks.", "click_enabled"),
    ("google_analytics", "Google Analytics", "Adds utm_* parameters to links.", "ga_enabled"),
    ("open", "Open Tracking", "Adds an invisible image to count opens.", "open_enabled"),
    (
        "subscription",
        "Subscription Tracking",
        "Adds unsubscribe links to the mail.",
        "subscription_enabled",
    ),
)


async def _save(
    session: AsyncSession, queue: Queue, principal: Principal, changes: dict[str, Any]
) -> TrackingSettingsView:
    """Apply the changes, commit, and tell every process to read the settings again (the
    send path caches them, app/tracking/defaults.py)."""
    view = await settings.update(session, account_id=principal.account.id, changes=changes)
    await session.commit()
    await signals.announce_via(queue.pool, signals.TRACKING, principal.account.id)
    return view


def _click(view: TrackingSettingsView) -> ClickTracking:
    return ClickTracking(enabled=view.click_enabled, enable_text=view.click_enable_text)


def _google(view: TrackingSettingsView) -> GoogleAnalytics:
    return GoogleAnalytics(
        enabled=view.ga_enabled,
        utm_campaign=view.utm_campaign,
        utm_content=view.utm_content,
        utm_medium=view.utm_medium,
        utm_source=view.utm_source,
        utm_term=view.utm_term,
    )


def _subscription(view: TrackingSettingsView) -> SubscriptionTracking:
    return SubscriptionTracking(
        enabled=view.subscription_enabled,
        html_content=view.subscription_html_content,
        landing=view.subscription_landing,
        plain_content=view.subscription_plain_content,
        replace=view.subscription_replace,
        url=view.subscription_url,
        list_unsubscribe=view.list_unsubscribe,
    )


def _changes(body: Any, prefix: str, renamed: dict[str, str] | None = None) -> dict[str, Any]:
    """The columns a PATCH body sets: its fields that were given, named as stored."""
    given = body.model_dump(exclude_unset=True, exclude_none=True)
    names = renamed or {}
    return {names.get(name, prefix + name): value for name, value in given.items()}


@router.get("/v3/tracking_settings", response_model=TrackingSettingsList, responses=READ_ERRORS)
async def list_settings(principal: Reader, session: SessionDep) -> TrackingSettingsList:
    """Every tracking setting and whether it is on."""
    view = await settings.effective_settings(session, principal.account.id)
    return TrackingSettingsList(
        result=[
            TrackingSetting(name=n, title=t, description=d, enabled=getattr(view, f))
            for n, t, d, f in _LIST
        ]
    )


@router.get("/v3/tracking_settings/click", response_model=ClickTracking, responses=READ_ERRORS)
async def get_click(principal: ClickReader, session: SessionDep) -> ClickTracking:
    """Click tracking."""
    return _click(await settings.effective_settings(session, principal.account.id))


@router.patch("/v3/tracking_settings/click", response_model=ClickTracking, responses=WRITE_ERRORS)
async def patch_click(
    body: ClickPatch, principal: ClickUpdater, session: SessionDep, queue: QueueDep
) -> ClickTracking:
    """Turn click tracking on or off."""
    return _click(await _save(session, queue, principal, _changes(body, "click_")))


@router.get("/v3/tracking_settings/open", response_model=OpenTracking, responses=READ_ERRORS)
async def get_open(principal: OpenReader, session: SessionDep) -> OpenTracking:
    """Open tracking."""
    view = await settings.effective_settings(session, principal.account.id)
    return OpenTracking(enabled=view.open_enabled)


@router.patch("/v3/tracking_settings/open", response_model=OpenTracking, responses=WRITE_ERRORS)
async def patch_open(
    body: OpenPatch, principal: OpenUpdater, session: SessionDep, queue: QueueDep
) -> OpenTracking:
    """Turn open tracking on or off."""
    view = await _save(session, queue, principal, _changes(body, "open_"))
    return OpenTracking(enabled=view.open_enabled)


@router.get(
    "/v3/tracking_settings/subscription",
    response_model=SubscriptionTracking,
    responses=READ_ERRORS,
)
async def get_subscription(
    principal: SubscriptionReader, session: SessionDep
) -> SubscriptionTracking:
    """Subscription tracking, and Columba's `list_unsubscribe` default."""
    return _subscription(await settings.effective_settings(session, principal.account.id))


@router.patch(
    "/v3/tracking_settings/subscription",
    response_model=SubscriptionTracking,
    responses=WRITE_ERRORS,
)
async def patch_subscription(
    body: SubscriptionPatch, principal: SubscriptionUpdater, session: SessionDep, queue: QueueDep
) -> SubscriptionTracking:
    """Change subscription tracking (and `list_unsubscribe`)."""
    changes = _changes(body, "subscription_", {"list_unsubscribe": "list_unsubscribe"})
    return _subscription(await _save(session, queue, principal, changes))


@router.get(
    "/v3/tracking_settings/google_analytics",
    response_model=GoogleAnalytics,
    responses=READ_ERRORS,
)
async def get_google_analytics(principal: GoogleReader, session: SessionDep) -> GoogleAnalytics:
    """Google Analytics parameters."""
    return _google(await settings.effective_settings(session, principal.account.id))


@router.patch(
    "/v3/tracking_settings/google_analytics",
    response_model=GoogleAnalytics,
    responses=WRITE_ERRORS,
)
async def patch_google_analytics(
    body: GoogleAnalyticsPatch, principal: GoogleUpdater, session: SessionDep, queue: QueueDep
) -> GoogleAnalytics:
    """Change the Google Analytics parameters."""
    changes = _changes(body, "", {"enabled": "ga_enabled"})
    return _google(await _save(session, queue, principal, changes))
