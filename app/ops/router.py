"""Operations endpoints: liveness, readiness, metrics (outside /api/v1)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from app.core.errors import problem_response
from app.core.metrics import render
from app.core.openapi import problems
from app.deps import AppSettings
from app.ops.access import check_metrics_reader
from app.ops.readiness import database_answers

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


@router.get("/healthz", operation_id="ops_healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="ops_readyz",
    response_model=Health,
    responses={503: {"description": "The database is unreachable"}},
)
async def readyz(request: Request) -> Response | Health:
    """The database answers; 503 while it does not (checked on every call, no caching)."""
    if not await database_answers(request.app.state.engine):
        return problem_response("service_unavailable", 503, headers={"Retry-After": "5"})
    return Health(status="ok")


@router.get(
    "/metrics",
    operation_id="ops_metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus exposition"},
        **problems(401, 404),
    },
)
async def metrics(request: Request, settings: AppSettings) -> Response:
    """Prometheus metrics.  With `QUYU_METRICS_TOKEN` set, only for
    `Authorization: Bearer <token>` (401 otherwise); without it, served outside production
    and not at all (404) in production."""
    check_metrics_reader(settings, request.headers.get("authorization"))
    body, content_type = render()
    return Response(body, media_type=content_type)
