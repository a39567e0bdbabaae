"""Bodies of the native batch API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class BatchView(BaseModel):
    """A batch: its status and how many of its recipients are in each state."""

    id: str
    status: str = Field(description="active, pause or cancel")
    created_at: datetime
    updated_at: datetime
    recipients: dict[str, int] = Field(
        default_factory=dict, description="Recipient count by status."
    )


class BatchChangeView(BatchView):
    """A pause, resume or cancel: the batch and how many recipients it changed."""

    changed: int = Field(description="Recipients whose status this request changed.")
