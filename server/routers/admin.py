"""POST /v1/admin/reload: serve another model bundle without a restart (admin tokens only;
server/dependencies.py's `require_admin` says who may)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field

from server.dependencies import ServiceDep
from server.errors import ApiError
from server.schemas import ErrorResponse, ModelRef
from server.service import ReloadError

router = APIRouter()


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Path | None = Field(
        None,
        description="the bundle folder, on the server's file system; default: the configured "
        "model (--model), what a restart would serve",
    )


class ReloadResponse(BaseModel):
    model: ModelRef  # served now
    previous: ModelRef
    reloads: int  # successful reloads since the server started


@router.post(
    "/admin/reload",
    responses={
        403: {"model": ErrorResponse, "description": "not an admin token, or admin is off"},
        422: {"model": ErrorResponse, "description": "the bundle was refused; the old serves"},
    },
)
async def reload(
    service: ServiceDep, body: Annotated[ReloadRequest | None, Body()] = None
) -> ReloadResponse:
    """Load, check and warm up a bundle, then serve it: uploads in progress finish on the old
    model; open streams move to the new one at their next clip, or finish on the old one when
    its clip spec differs (docs/server.md, *Hot reload*)."""
    try:
        old, new = await service.reload(body.model if body else None)
    except ReloadError as e:
        raise ApiError(422, "invalid_bundle", str(e)) from e
    return ReloadResponse(
        model=ModelRef(name=new.name, version=new.version),
        previous=ModelRef(name=old.name, version=old.version),
        reloads=service.reloads,
    )
