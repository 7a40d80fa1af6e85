"""What routes get through FastAPI's `Depends`: the service (model, engine, executors,
metrics), its settings, and the bearer-token checks (API tokens, admin tokens)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from server.auth import bearer_token
from server.errors import ApiError
from server.service import Service
from server.settings import Settings, is_loopback


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


def require_admin(request: Request, service: ServiceDep) -> None:
    """An admin token. Without one: 401; with an API token (or any token while no admin token
    is configured): 403. Without admin tokens the admin routes are off, except on a server
    without auth (--no-auth, bound to loopback), where they are as open as the rest, and only
    to loopback clients."""
    token = bearer_token(request.headers.get("authorization"))
    if service.admin.enabled and service.admin.accepts(token):
        return
    client = request.client.host if request.client else ""
    if not (service.admin.enabled or service.auth.enabled) and is_loopback(client):
        return
    if not service.admin.enabled and token is not None:
        raise ApiError(
            403,
            "admin_disabled",
            "no admin tokens are configured (--admin-tokens-file or GD_ADMIN_TOKENS); to "
            "reload the configured model without one, send gd-serve SIGHUP",
        )
    if token is not None and service.auth.enabled and service.auth.accepts(token):
        raise ApiError(403, "forbidden", "this needs an admin token, not an API token")
    raise ApiError(401, "unauthorized", "a valid admin bearer token is required")
