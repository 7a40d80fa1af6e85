"""The FastAPI app: its factory and lifespan, mounting the routers of `server/routers/`.

`create_app(settings)` loads and checks the model before returning, so a bad bundle, device
or token setup fails at start-up with its own message rather than on the first request.

    server/routers/   model.py (GET /v1/model), detections.py (POST /v1/detections),
                      stream.py (WS /v1/stream), ops.py (/healthz, /readyz, /metrics),
                      admin.py (POST /v1/admin/reload, admin tokens),
                      events.py (/v1/events, /v1/cameras: the event store, docs/events.md)
                      dashboard.py (GET /: the dashboard page, docs/dashboard.md)
                      preview.py (GET /v1/cameras/{id}/preview: --preview's depth image)
                      references.py (/v1/cameras/{id}/reference: empty-room depth)
    server/schemas.py       the REST bodies        server/errors.py    the JSON error answers
    server/dependencies.py  service, settings and the token check, for `Depends`
    server/multipart.py     the upload body, read into memory as it streams in
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from server import errors, querytokens
from server.dependencies import require_admin, require_token
from server.events.mqtt import publisher_from_settings
from server.events.references import References
from server.events.service import EventService
from server.routers import (
    admin,
    dashboard,
    detections,
    events,
    model,
    ops,
    preview,
    references,
    stream,
)
from server.schemas import ERRORS
from server.service import Service
from server.settings import Settings


async def start_demo(settings: Settings, service: Service) -> None:
    """The built-in demo stream, into this server's own WebSocket over loopback."""
    from server.demo import run_demo  # imports synth only when the demo runs

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "localhost") else settings.host
    token = next(iter(settings.all_tokens()), None) if service.auth.enabled else None
    await run_demo(f"ws://{host}:{settings.port}/v1/stream", token)


def create_app(settings: Settings, service: Service | None = None) -> FastAPI:
    service = service or Service.load(settings)
    # None: GD_EVENTS_DB=off; it reads the alert rules, delivers webhooks and repeats alerts
    events_service = EventService.open(settings, service.bus, service.bundle.classes[1:])
    mqtt = publisher_from_settings(settings)  # None without GD_MQTT_HOST
    if mqtt is not None:
        service.bus.subscribe(mqtt)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        if events_service is not None:
            events_service.start()
        if mqtt is not None:
            mqtt.start()
        demo = asyncio.create_task(start_demo(settings, service)) if settings.demo else None
        yield
        if demo is not None:
            demo.cancel()
        await service.stop()
        if events_service is not None:
            await events_service.stop()
        if mqtt is not None:
            await mqtt.stop()

    app = FastAPI(
        title="gd-detect",
        summary="Depth-only action detection (graph distillation), REST and WebSocket",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.events = events_service
    # each camera's empty-room reference: in the event store, else in memory only
    app.state.references = events_service.references if events_service else References()
    app.add_middleware(querytokens.RefuseQueryTokens)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    errors.add_handlers(app)
    routers = [model.router, detections.router, preview.router, references.router]
    if events_service is not None:
        routers.append(events.router)
    for router in routers:
        app.include_router(
            router, prefix="/v1", dependencies=[Depends(require_token)], responses=ERRORS
        )
    app.include_router(stream.router, prefix="/v1")  # authenticates inside the protocol
    app.include_router(
        admin.router, prefix="/v1", dependencies=[Depends(require_admin)], responses=ERRORS
    )
    app.include_router(ops.router)
    app.include_router(dashboard.router)  # GET /: the page asks for the token itself
    return app
