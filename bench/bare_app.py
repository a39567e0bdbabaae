"""The ceiling for the send benchmarks: a bare FastAPI endpoint that validates the same 1 KB
JSON body with pydantic and answers 202, touching no database, Redis or auth.

    uvicorn bench.bare_app:app --workers N --no-access-log
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

app = FastAPI()


class Address(BaseModel):
    """An address."""

    email: str
    name: str | None = None


class BareSend(BaseModel):
    """The fields of the benchmark's POST /v1/send body, plainly typed."""

    model_config = ConfigDict(populate_by_name=True)

    from_: Address = Field(alias="from")
    to: list[str]
    subject: str
    text: str
    html: str
    categories: list[str] = []
    metadata: dict[str, Any] = {}


@app.post("/send", status_code=202)
async def send(body: BareSend) -> dict[str, int]:
    """Validate and answer."""
    return {"recipients": len(body.to)}
