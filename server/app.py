"""The FastAPI app: REST uploads, the WebSocket stream, model card, health and metrics.

`create_app(settings)` loads and checks the model before returning, so a bad bundle, device
or token setup fails at start-up with its own message rather than on the first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.bundle import ModelBundle
from core.clip import TimestampError, clip_source_span
from server import offline, querytokens, stream, uploads
from server.service import Service
from server.settings import Settings

log = logging.getLogger("gd.server")
# Bytes of an oversized body read (and dropped) past the limit, so that a client that sends
# its whole body before reading the answer sees the 413 rather than a broken connection.
DRAIN_LIMIT = 64 << 20
MAX_BOUNDARY = 70  # RFC 2046


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# --- response models ---------------------------------------------------------------------


class Detection(BaseModel):
    label: str
    class_id: int
    start_frame: int  # in the upload's own frame numbering, inclusive
    end_frame: int
    start_s: float  # from the first frame
    end_s: float  # exclusive
    confidence: float


class ClipScores(BaseModel):
    clip: int
    start_s: float
    end_s: float
    activity: float  # 1 - p(background)
    probs: list[float]  # index 0 = background


class ModelRef(BaseModel):
    name: str
    version: str


class VideoInfo(BaseModel):
    format: str
    frames: int
    height: int
    width: int
    duration_s: float
    clips: int


class DetectionsResponse(BaseModel):
    detections: list[Detection]
    clip_scores: list[ClipScores] | None = None
    model: ModelRef
    video: VideoInfo
    timing_ms: dict[str, float]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 413, 415, 422)
}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


# --- dependencies ------------------------------------------------------------------------


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def require_token(request: Request, service: ServiceDep) -> None:
    if not service.auth.accepts_header(request.headers.get("authorization")):
        raise ApiError(401, "unauthorized", "a valid bearer token is required")


# --- routes ------------------------------------------------------------------------------

api = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], responses=ERRORS)
streams = APIRouter(prefix="/v1")  # authenticates inside the protocol (header or hello)
ops = APIRouter()


@api.get("/model")
def model_card(service: ServiceDep) -> dict[str, Any]:
    """The model card: name, version, classes, clip spec, metrics, engine, and what a live
    stream gets by default (score delay, latency)."""
    return {**service.model_card(), "streaming": stream.streaming_card(service)}


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@api.post(
    "/detections",
    openapi_extra=UPLOAD_BODY,
    responses={
        429: {"model": ErrorResponse, "description": "recording decoders busy"},
        503: {"model": ErrorResponse, "description": "the server is shutting down"},
    },
)
async def detections(
    request: Request,
    service: ServiceDep,
    fps: Annotated[
        float | None,
        Query(gt=0, le=1000, allow_inf_nan=False, description="for .npy / .npz / .zip"),
    ] = None,
    scores: Annotated[bool, Query(description="include per-clip scores")] = False,
) -> DetectionsResponse:
    """Detect actions in an uploaded depth video (multipart field `file`)."""
    start = time.perf_counter()
    status = 500
    try:
        response = await _detect(request, service, fps, scores, start)
        status = 200
        return response
    except (ApiError, uploads.UploadError) as e:
        status = e.status
        raise
    finally:
        service.metrics.uploads.labels(str(status)).inc()
        service.metrics.upload_seconds.observe(time.perf_counter() - start)
        # off the event loop; the upload's buffers are freed by now (and at shutdown the
        # executor refuses new work: nothing to release then)
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().run_in_executor(
                service.decode_executor, uploads.release_freed_memory
            )


async def _detect(
    request: Request, service: Service, fps: float | None, scores: bool, start: float
) -> DetectionsResponse:
    settings, bundle = service.settings, service.bundle
    data = await read_file_field(request, settings.max_upload_bytes)
    received = time.perf_counter()
    limits = uploads.Limits(
        settings.max_upload_frames, settings.max_decoded_bytes, service.recordings
    )
    loop = asyncio.get_running_loop()
    video = await loop.run_in_executor(service.decode_executor, uploads.decode, data, fps, limits)
    del data
    decoded = time.perf_counter()
    try:
        result = await offline.detect(
            service.engine,
            video.frames,
            video.timestamps_us,
            service.model_executor,
            service.decode_executor,
            chunk_clips=settings.max_batch,
            max_clips=settings.max_upload_clips,
            max_upsample=settings.max_upload_upsample,
        )
    except (offline.TooShort, TimestampError) as e:
        raise ApiError(422, "invalid_video", str(e)) from e
    except offline.TooSparse as e:
        raise ApiError(422, "too_sparse", str(e)) from e
    except offline.TooManyClips as e:
        raise ApiError(413, "too_many_clips", str(e)) from e
    timing = {"receive": received - start, "decode": decoded - received}
    return _response(bundle, video, result, scores, timing, start)


def _response(
    bundle: ModelBundle,
    video: uploads.Video,
    result: offline.OfflineResult,
    scores: bool,
    timing_s: dict[str, float],
    start: float,
) -> DetectionsResponse:
    spec, ts = bundle.clip, video.timestamps_us
    detections = []
    for seg in result.segments:
        det = seg.to_detection(spec, bundle.classes)
        det["start_frame"], det["end_frame"] = offline.frame_span(seg, spec, ts, result.kept)
        detections.append(Detection(**det))
    clip_scores = None
    if scores:
        spans = [clip_source_span(spec, c) for c in range(len(result.probs))]
        clip_scores = [
            ClipScores(
                clip=c,
                start_s=first / spec.source_fps,
                end_s=(last + 1) / spec.source_fps,
                activity=float(1.0 - row[0]),
                probs=row.tolist(),
            )
            for c, (row, (first, last)) in enumerate(zip(result.probs, spans, strict=True))
        ]
    t, h, w = video.frames.shape
    timing_ms = {k: 1000 * v for k, v in timing_s.items()}
    timing_ms.update(result.timings_ms, total=1000 * (time.perf_counter() - start))
    return DetectionsResponse(
        detections=detections,
        clip_scores=clip_scores,
        model=ModelRef(name=bundle.name, version=bundle.version),
        video=VideoInfo(
            format=video.format,
            frames=t,
            height=h,
            width=w,
            duration_s=(int(ts[-1]) - int(ts[0])) / 1e6,
            clips=len(result.probs),
        ),
        timing_ms={k: round(v, 3) for k, v in timing_ms.items()},
    )


async def read_file_field(request: Request, max_bytes: int) -> bytearray:
    """The `file` part of a multipart body, read into memory as it streams in.

    Starlette's form parser spools large files to disk; depth frames must never touch it.
    """
    mime, params = parse_options_header(request.headers.get("content-type", ""))
    if mime != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(
            415, "unsupported_media_type", "send multipart/form-data with the video in 'file'"
        )
    if not 1 <= len(params[b"boundary"]) <= MAX_BOUNDARY:
        raise ApiError(
            400, "bad_request", f"the multipart boundary must be 1 to {MAX_BOUNDARY} characters"
        )
    part: dict[str, Any] = {}
    found: list[bytearray] = []
    header: list[bytes] = [b"", b""]

    def on_part_begin() -> None:
        part.clear()
        part["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        part["headers"][header[0].lower()] = header[1]
        header[0] = header[1] = b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if disposition.get(b"name") == b"file":
            part["data"] = bytearray()
            found.append(part["data"])

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if "data" in part:
            part["data"] += data[start:end]

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    total = 0
    body_limit = max_bytes + (64 << 10)  # room for the multipart framing
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total <= body_limit:
                parser.write(chunk)
            elif total > DRAIN_LIMIT + body_limit:
                break  # read (and dropped) enough: answer now, the connection closes
        if total > body_limit:
            raise ApiError(413, "too_large", f"the upload exceeds the limit of {max_bytes} bytes")
        parser.finalize()
    except ValueError as e:  # the parser's errors, and anything raised on its callbacks' input
        raise ApiError(400, "bad_request", f"malformed multipart body: {e}") from e
    if len(found) != 1:
        raise ApiError(
            400, "bad_request", f"send exactly one multipart field 'file' (got {len(found)})"
        )
    return found[0]


@streams.websocket("/stream")
async def stream_endpoint(ws: WebSocket) -> None:
    await stream.serve(ws, ws.app.state.service)


# HEAD (load balancers' and orchestrators' probes) answers as GET does, without the body;
# it stays out of the OpenAPI schema, where it would repeat GET's operation.
@ops.get("/healthz")
@ops.head("/healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


@ops.get("/readyz", responses={503: {"description": "draining or at the stream limit"}})
@ops.head("/readyz", include_in_schema=False)
def readyz(service: ServiceDep) -> JSONResponse:
    """Readiness: the model is loaded and another stream would be accepted."""
    s = service.settings
    ready = not service.draining and service.active_streams < s.max_streams
    body = {
        "status": "ready" if ready else "busy",
        "streams": service.active_streams,
        "max_streams": s.max_streams,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@ops.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics."""
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)


# --- the app -----------------------------------------------------------------------------


async def start_demo(settings: Settings, service: Service) -> None:
    """The built-in demo stream, into this server's own WebSocket over loopback."""
    from server.demo import run_demo  # imports synth only when the demo runs

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "localhost") else settings.host
    token = next(iter(settings.all_tokens()), None) if service.auth.enabled else None
    await run_demo(f"ws://{host}:{settings.port}/v1/stream", token)


def create_app(settings: Settings, service: Service | None = None) -> FastAPI:
    service = service or Service.load(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        demo = asyncio.create_task(start_demo(settings, service)) if settings.demo else None
        yield
        if demo is not None:
            demo.cancel()
        await service.stop()

    app = FastAPI(
        title="gd-detect",
        summary="Depth-only action detection (graph distillation), REST and WebSocket",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(querytokens.RefuseQueryTokens)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.exception_handler(ApiError)
    @app.exception_handler(uploads.UploadError)
    async def known_error(request: Request, e: Any) -> JSONResponse:
        return error_response(e.status, e.code, e.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        return error_response(400, "bad_request", problems)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, e: Exception) -> JSONResponse:
        # Only the server's own faults get here (input errors are 4xx above). Starlette
        # re-raises the exception after this answer, so uvicorn logs it with its traceback.
        return error_response(500, "internal_error", "internal server error (see the server log)")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error_response(e.status_code, code, str(e.detail))

    app.include_router(api)
    app.include_router(streams)
    app.include_router(ops)
    return app
