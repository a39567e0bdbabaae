"""Bodies of SendGrid's `/v3/tracking_settings` (tsg_tracking_settings_v3.yaml)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool
from pydantic.json_schema import SkipJsonSchema

from app.common.fields import NotNull

SHORT_MAX = 255  # the columns' width (utm_*, replace)
CONTENT_MAX = 65_536  # footers and the landing page: SendGrid names no limit; ours is generous

Short = Annotated[str, Field(max_length=SHORT_MAX)]
Content = Annotated[str, Field(max_length=CONTENT_MAX)]
Flag = Annotated[StrictBool | SkipJsonSchema[None], NotNull]  # "yes" or 1 are not booleans


def http_url(value: str) -> str:
    """An absolute http(s) URL, or "" (no custom unsubscribe URL)."""
    if value and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc):
        raise ValueError("must be an absolute http or https URL")
    return value


class _Patch(BaseModel):
    # SendGrid ignores fields it does not know; so do we (clients send whole objects back).
    model_config = ConfigDict(extra="ignore")


class ClickTracking(BaseModel):
    """Click tracking: links in html (and, with `enable_text`, in text) are rewritten."""

    enable_text: bool
    enabled: bool


class ClickPatch(_Patch):
    """SendGrid's body is `{"enabled"}`; Columba also takes `enable_text`."""

    enabled: Flag = None
    enable_text: Flag = None


class OpenTracking(BaseModel):
    """Open tracking: a 1×1 image at the end of the html part."""

    enabled: bool


class OpenPatch(_Patch):
    """`{"enabled"}`."""

    enabled: Flag = None


class GoogleAnalytics(BaseModel):
    """utm_* parameters added to the links of the html part."""

    enabled: bool
    utm_campaign: str
    utm_content: str
    utm_medium: str
    utm_source: str
    utm_term: str


class GoogleAnalyticsPatch(_Patch):
    """Any of GoogleAnalytics' fields."""

    enabled: Flag = None
    utm_campaign: Annotated[Short | SkipJsonSchema[None], NotNull] = None
    utm_content: Annotated[Short | SkipJsonSchema[None], NotNull] = None
    utm_medium: Annotated[Short | SkipJsonSchema[None], NotNull] = None
    utm_source: Annotated[Short | SkipJsonSchema[None], NotNull] = None
    utm_term: Annotated[Short | SkipJsonSchema[None], NotNull] = None


class SubscriptionTracking(BaseModel):
    """Subscription tracking: an unsubscribe footer; `list_unsubscribe` is Columba's own."""

    enabled: bool
    html_content: str
    landing: str
    plain_content: str
    replace: str
    url: str
    list_unsubscribe: bool = Field(
        description="Columba: every copy carries List-Unsubscribe and List-Unsubscribe-Post "
        "(RFC 8058), even without an unsubscribe group or a footer."
    )


class SubscriptionPatch(_Patch):
    """Any of SubscriptionTracking's fields."""

    enabled: Flag = None
    html_content: Annotated[Content | SkipJsonSchema[None], NotNull] = None
    landing: Annotated[Content | SkipJsonSchema[None], NotNull] = None
    plain_content: Annotated[Content | SkipJsonSchema[None], NotNull] = None
    replace: Annotated[Short | SkipJsonSchema[None], NotNull] = None
    url: Annotated[
        Content | SkipJsonSchema[None],
        AfterValidator(http_url),
        NotNull,
        Field(json_schema_extra={"format": "uri"}),
    ] = None
    list_unsubscribe: Flag = None


class TrackingSetting(BaseModel):
    """One line of the list."""

    name: str
    title: str
    description: str
    enabled: bool


class TrackingSettingsList(BaseModel):
    """`{"result": [...]}`."""

    result: list[TrackingSetting]
