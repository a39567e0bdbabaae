"""The ceiling for the send benchmarks: a bare FastAPI endpoint that validates the same 1 KB
JSON body with pydantic and answers 202, touching no database, Redis or auth. For the
tracking benchmark (bench/tracking.py), the same for its endpoints' shapes: a GET with a
token in the path answered with a 43-byte GIF, and a form POST read and answered 200.

    uvicorn bench.bare_app:app --workers N --no-access-log
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
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


GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


@app.get("/pixel/{token}")
async def pixel(token: str) -> Response:
    """A GET with a path parameter, answered with an image."""
    return Response(GIF, media_type="image/gif", headers={"Cache-Control": "no-store"})


@app.post("/form/{token}")
async def form(token: str, request: Request) -> Response:
    """A small form POST, read and answered."""
    body = await request.body()
    return Response(b"ok" if body else b"", media_type="text/html")
