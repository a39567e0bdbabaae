"""An event as written: what the stats counters and the webhook outbox are given."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event with its id and the categories of its message."""

    id: int
    account_id: str
    type: str
    message_id: str | None
    recipient_id: str | None
    data: dict[str, Any]
    created_at: datetime
    categories: tuple[str, ...] = ()
