"""GET /v1/cameras/{camera_id}/preview: a streaming camera's newest frame as a small colorized
depth PNG, on a server started with `--preview` (server/preview.py, docs/dashboard.md).
Mounted under /v1 with the bearer-token check, whether or not the event store is on."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from server.dependencies import ServiceDep
from server.errors import ApiError
from server.schemas import ErrorResponse

router = APIRouter()
PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "the newest frame, colorized"},
    404: {"model": ErrorResponse, "description": "preview off, or the camera not streaming"},
}


# `path`: a camera id may hold `/` (any printable characters). On the event loop, as the store
# is: making a preview of at most 160 px takes well under a millisecond, once a second at most.
@router.get("/cameras/{camera_id:path}/preview", response_class=Response, responses=PNG)
async def camera_preview(camera_id: str, service: ServiceDep) -> Response:
    """The camera's newest frame over the model's depth range on the Turbo colour map (near
    red, far blue, no depth black), at most 160 px wide; made at most once a second."""
    if service.previews is None:
        raise ApiError(404, "preview_off", "preview is off: start gd-serve with --preview")
    png = service.previews.png(camera_id)
    if png is None:
        raise ApiError(
            404, "not_streaming", "no camera of that id is streaming to this server (yet)"
        )
    # no-store: a picture of a room stays out of browser and proxy caches
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
