"""What routes get through FastAPI's `Depends`: the service (model, engine, executors,
metrics), its settings, and the bearer-token check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from server.errors import ApiError
from server.service import Service
from server.settings import Settings


def get_service(connection: HTTPConnection) -> Service:
    """The app's service, for HTTP routes and WebSockets alike."""
    return connection.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def get_settings(service: ServiceDep) -> Settings:
    return service.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def require_token(request: Request, service: ServiceDep) -> None:
    if not service.auth.accepts_header(request.headers.get("authorization")):
        raise ApiError(401, "unauthorized", "a valid bearer token is required")
