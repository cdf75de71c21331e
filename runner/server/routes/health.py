"""`GET /health`: whether the server can do its work (no token needed)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from runner import api
from runner.server.routes.deps import ServiceDep
from runner.server.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Something is down, or the server stops."}},
)
def health(service: ServiceDep) -> JSONResponse:
    """`ok` when the database and the engine answer; 503 naming what is down, or
    `stopping` while the server drains (a load balancer should send no new work)."""
    found = api.check_health(service.store, service.backend)
    status = "ok" if found.ok else "unavailable"
    if service.stopping:
        status = "stopping"
    body = Health(status=status, database=found.database, engine=found.engine)
    return JSONResponse(body.model_dump(), status_code=200 if status == "ok" else 503)
