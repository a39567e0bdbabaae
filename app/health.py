"""`GET /healthz`: the process is up and the database answers."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from app.deps import SessionDep
from app.routing import StrictJsonRoute

router = APIRouter(tags=["health"], route_class=StrictJsonRoute)


@router.get("/healthz")
async def healthz(session: SessionDep) -> dict[str, str]:
    """200 when the API can reach its database."""
    await session.execute(text("SELECT 1"))
    return {"status": "ok"}
