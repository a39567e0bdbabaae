"""Bodies of the erase endpoint."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErasureView(BaseModel):
    """What an erase did: the audit record's id and the rows touched, per table and action.
    The address is named nowhere, not even here."""

    erasure_id: str
    counts: dict[str, int] = Field(
        description="Rows per table and action, e.g. `recipients_deleted`, "
        "`messages_scrubbed`, `suppressions_tombstoned`; absent ones were none."
    )
