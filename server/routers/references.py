"""PUT, GET and DELETE /v1/cameras/{camera_id}/reference: each camera's empty-room depth, which
person-crop models crop their clips against (core/foreground.py; docs/api.md, *Camera
references*). Mounted under /v1 with the bearer-token check, whether or not the event store is
on (without it, references are kept in memory only, `stored: false`)."""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from core.limits import MAX_SIDE
from server.errors import ApiError
from server.events.references import Reference, References, decode_png
from server.multipart import DRAIN_LIMIT
from server.schemas import ErrorResponse

router = APIRouter()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The largest frame's PNG even stored uncompressed: a filter byte and 2 bytes a pixel per row,
# plus room for the chunks' and zlib's framing.
MAX_PNG_BYTES = MAX_SIDE * (2 * MAX_SIDE + 1) + (1 << 20)
MAX_CAMERA_ID = 128  # as a stream's hello allows (core/wire.py)
# The body as OpenAPI should show it: the route reads it itself.
PNG_BODY = {
    "requestBody": {
        "required": True,
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    }
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "the camera has no reference"}
}


def get_references(connection: HTTPConnection) -> References:
    return connection.app.state.references


ReferencesDep = Annotated[References, Depends(get_references)]


class ReferenceOut(BaseModel):
    camera_id: str
    height: int
    width: int
    updated_at: datetime
    stored: bool = Field(
        description="true: in the event store; false: in memory only (the store is off), "
        "gone when the server restarts"
    )


def camera(camera_id: str) -> str:
    """The path's camera id, checked as a stream's hello checks it."""
    if not 0 < len(camera_id) <= MAX_CAMERA_ID or not camera_id.isprintable():
        raise ApiError(
            400, "bad_request", f"camera_id must be 1-{MAX_CAMERA_ID} printable characters"
        )
    return camera_id


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, at most `max_bytes` (413 beyond; the rest read and dropped up to
    `DRAIN_LIMIT`, so that a client sending it all before reading sees the answer)."""
    body, total = bytearray(), 0
    async for chunk in request.stream():
        total += len(chunk)
        if total <= max_bytes:
            body += chunk
        elif total > max_bytes + DRAIN_LIMIT:
            break
    if total > max_bytes:
        raise ApiError(413, "too_large", f"a reference PNG is at most {max_bytes} bytes")
    return bytes(body)


def check_png(data: bytes) -> np.ndarray:
    """The pixels of a 16-bit single-channel PNG of at most MAX_SIDE a side; its header is
    checked before anything is decoded (a small file may claim a huge image)."""
    not_png = ApiError(
        422, "invalid_reference", "not a 16-bit single-channel PNG (depth in mm, 0 = no reading)"
    )
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise not_png
    width, height, bit_depth, colour = struct.unpack(">IIBB", data[16:26])
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ApiError(
            413, "too_large", f"a {width}x{height} image exceeds {MAX_SIDE} pixels a side"
        )
    if bit_depth != 16 or colour != 0:  # 0: greyscale, no alpha
        raise not_png
    image = decode_png(data)
    if image is None:
        raise not_png
    return image


def out(camera_id: str, reference: Reference, references: References) -> ReferenceOut:
    h, w = reference.image.shape
    return ReferenceOut(
        camera_id=camera_id,
        height=h,
        width=w,
        updated_at=reference.updated_at,
        stored=references.stored,
    )


@router.put(
    "/cameras/{camera_id:path}/reference",
    openapi_extra=PNG_BODY,
    responses={
        413: {"model": ErrorResponse, "description": "over MAX_SIDE a side, or too many bytes"},
        415: {"model": ErrorResponse, "description": "not sent as image/png"},
        422: {"model": ErrorResponse, "description": "not a 16-bit single-channel PNG"},
        503: {"model": ErrorResponse, "description": "the event store's database is away"},
    },
)
async def put_reference(
    camera_id: str, request: Request, references: ReferencesDep
) -> ReferenceOut:
    """Set the camera's empty-room reference: the body is a 16-bit single-channel PNG
    (`Content-Type: image/png`) of the camera's full frame, depth in mm, 0 = no reading.
    Streams of the camera use it from their next clip on."""
    camera_id = camera(camera_id)
    mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mime != "image/png":
        raise ApiError(415, "unsupported_media_type", "send the PNG with Content-Type image/png")
    data = await read_body(request, MAX_PNG_BYTES)
    image = await run_in_threadpool(check_png, data)  # decoding a large PNG takes a while
    reference = await references.put(camera_id, data, image)
    return out(camera_id, reference, references)


@router.get(
    "/cameras/{camera_id:path}/reference",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the PNG as put"}, **NOT_FOUND},
)
async def get_reference(camera_id: str, references: ReferencesDep) -> Response:
    """The camera's reference, the PNG as it was put."""
    reference = references.get(camera(camera_id))
    if reference is None:
        raise ApiError(404, "not_found", f"camera {camera_id!r} has no reference")
    return Response(reference.png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.delete("/cameras/{camera_id:path}/reference", status_code=204, responses=NOT_FOUND)
async def delete_reference(camera_id: str, references: ReferencesDep) -> Response:
    """Remove the camera's reference: its streams use whole frames from their next clip on."""
    if not await references.delete(camera(camera_id)):
        raise ApiError(404, "not_found", f"camera {camera_id!r} has no reference")
    return Response(status_code=204)
