"""For operators and orchestrators: liveness, readiness and Prometheus metrics (no token)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.dependencies import ServiceDep, SettingsDep

router = APIRouter()


# HEAD (load balancers' and orchestrators' probes) answers as GET does, without the body;
# it stays out of the OpenAPI schema, where it would repeat GET's operation.
@router.get("/healthz")
@router.head("/healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "draining or at the stream limit"}})
@router.head("/readyz", include_in_schema=False)
def readyz(service: ServiceDep, settings: SettingsDep, request: Request) -> JSONResponse:
    """Readiness: the model is loaded and another stream would be accepted. `degraded` (still
    200): the event store's database is unavailable; streams go on detecting and their
    events wait in memory (`events_kept`), so a load balancer keeps sending cameras here."""
    ready = not service.draining and service.active_streams < settings.max_streams
    events = request.app.state.events  # None: no event store
    health = events.health() if events is not None else {}
    degraded = health.get("events_db", "ok") != "ok"
    body = {
        "status": "busy" if not ready else "degraded" if degraded else "ready",
        "streams": service.active_streams,
        "max_streams": settings.max_streams,
        **health,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics."""
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
