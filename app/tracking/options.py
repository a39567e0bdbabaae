"""What tracking one message gets: its own `tracking_settings` over the account's defaults.

A send-level setting overrides the account default field by field (`{"open_tracking":
{"enable": false}}` turns the pixel off and keeps nothing else of the account's), as
SendGrid's per-message settings do. Stored settings are read defensively: messages accepted
before a field existed, or with a field of another type, get the field's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.tracking.defaults import SNAPSHOT_KEY

UTM_FIELDS = ("utm_source", "utm_medium", "utm_term", "utm_content", "utm_campaign")
# SendGrid's defaults when subscription tracking is on without text or html of its own.
DEFAULT_SUBSCRIPTION_TEXT = (
    "If you would like to unsubscribe and stop receiving these emails click here: <% %>."
)
DEFAULT_SUBSCRIPTION_HTML = (
    '<p style="font-size:12px;text-align:center">If you would like to unsubscribe and stop '
    "receiving these emails <% click here %>.</p>"
)


@dataclass(frozen=True, slots=True)
class Subscription:
    """The unsubscribe footer, or the tag its bare URL replaces."""

    text: str
    html: str
    substitution_tag: str | None


@dataclass(frozen=True, slots=True)
class TrackingOptions:
    """Everything that decides the tracked parts of a message's copies."""

    open: bool = False
    open_tag: str | None = None
    click: bool = False
    click_text: bool = False
    subscription: Subscription | None = None
    utm: tuple[tuple[str, str], ...] = ()  # Google Analytics parameters, in a fixed order
    list_unsubscribe: bool = False

    @property
    def rewrites_html(self) -> bool:
        """True when the html part needs parsing (links, pixel or footer)."""
        return self.open or self.click or self.subscription is not None


NONE = TrackingOptions()


def resolve(settings: Mapping[str, Any] | None, *, asm_group_id: int | None) -> TrackingOptions:
    """The options of a message with these stored settings and unsubscribe group."""
    settings = settings or {}
    account = _mapping(settings.get(SNAPSHOT_KEY))
    given = _mapping(settings.get("tracking_settings"))

    def merged(name: str) -> Mapping[str, Any]:
        return {**_mapping(account.get(name)), **_mapping(given.get(name))}

    opened, click = merged("open_tracking"), merged("click_tracking")
    subscription = _subscription(merged("subscription_tracking"))
    return TrackingOptions(
        open=_on(opened),
        open_tag=_text(opened.get("substitution_tag")) or None,
        click=_on(click),
        click_text=_on(click) and click.get("enable_text") is True,
        subscription=subscription,
        utm=_utm(merged("ganalytics")),
        list_unsubscribe=asm_group_id is not None
        or subscription is not None
        or _bulk(settings, account),
    )


def _bulk(settings: Mapping[str, Any], account: Mapping[str, Any]) -> bool:
    """Marked bulk: `mail_settings.list_unsubscribe` of the send (Columba's own setting;
    SendGrid has none), else the account's default."""
    mail = _mapping(_mapping(settings.get("mail_settings")).get("list_unsubscribe"))
    if isinstance(mail.get("enable"), bool):
        return bool(mail["enable"])
    return account.get("list_unsubscribe") is True


def _subscription(setting: Mapping[str, Any]) -> Subscription | None:
    """The footer when subscription tracking is on; SendGrid's texts when none are given."""
    if not _on(setting):
        return None
    return Subscription(
        text=_text(setting.get("text")) or DEFAULT_SUBSCRIPTION_TEXT,
        html=_text(setting.get("html")) or DEFAULT_SUBSCRIPTION_HTML,
        substitution_tag=_text(setting.get("substitution_tag")) or None,
    )


def _utm(setting: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The non-empty utm_* parameters when Google Analytics tracking is on."""
    if not _on(setting):
        return ()
    return tuple((name, value) for name in UTM_FIELDS if (value := _text(setting.get(name))))


def _on(setting: Mapping[str, Any]) -> bool:
    return setting.get("enable") is True


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
