"""A send's own `tracking_settings` (SendGrid's mail send schema, tsg_mail_v3.yaml), taken by
POST /v3/mail/send and, in the same shape, by POST /v1/send.

Every field is optional: a send names only what it overrides of the account's defaults
(app.tracking.options merges the two). Unknown fields are ignored, as SendGrid does.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr


class _Setting(BaseModel):
    """A tracking setting: on or off, and what else it takes."""

    model_config = ConfigDict(extra="ignore")

    enable: StrictBool | None = None


class ClickTracking(_Setting):
    """Links rewritten to count clicks; in the text part too with `enable_text`."""

    enable_text: StrictBool | None = None


class OpenTracking(_Setting):
    """A 1×1 pixel at the end of the html part, or where `substitution_tag` stands."""

    substitution_tag: StrictStr | None = None  # "" means none


class SubscriptionTracking(_Setting):
    """An unsubscribe footer: `text` and `html` with `<% %>` where the link goes, or the
    bare URL wherever `substitution_tag` stands."""

    text: StrictStr | None = None
    html: StrictStr | None = None
    substitution_tag: StrictStr | None = None  # "" means none


class GoogleAnalytics(_Setting):
    """utm_* parameters added to every tracked link."""

    utm_source: StrictStr | None = None
    utm_medium: StrictStr | None = None
    utm_term: StrictStr | None = None
    utm_content: StrictStr | None = None
    utm_campaign: StrictStr | None = None


class SendTracking(BaseModel):
    """`tracking_settings` of one send."""

    model_config = ConfigDict(extra="ignore")

    click_tracking: ClickTracking | None = None
    open_tracking: OpenTracking | None = None
    subscription_tracking: SubscriptionTracking | None = None
    ganalytics: GoogleAnalytics | None = None

    def stored(self) -> dict[str, Any]:
        """What the message keeps: only the fields the send gave."""
        return self.model_dump(exclude_none=True)
