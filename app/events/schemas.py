"""Bodies of the event feed."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.common.fields import StoredJson, StoredText


class FeedEvent(BaseModel):
    """One event of the feed."""

    id: int = Field(description="The event's id (also shown in GET /v1/messages/{id}).")
    cursor: str = Field(description="Pass as `after` to read the events that follow this one.")
    type: str
    created_at: datetime
    message_id: str | None
    recipient_id: str | None
    email: StoredText | None = Field(description="The recipient's address, when the event has one.")
    data: StoredJson


class EventPage(BaseModel):
    """A page of the feed and where to continue."""

    events: list[FeedEvent]
    next_cursor: str = Field(
        description="Pass as `after` next time; it moves past every event this page covered, "
        "even those the filters left out."
    )
    has_more: bool = Field(description="True when more events are already available.")
