"""POST /v1/detections: actions in an uploaded depth video.

The body is read into memory (server/multipart.py), decoded off the event loop
(server/uploads.py), and run through the model in chunks (server/offline.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request

from core.bundle import ModelBundle
from core.clip import TimestampError, clips_span
from server import offline, uploads
from server.dependencies import ServiceDep
from server.errors import ApiError
from server.events.references import reference_problem
from server.multipart import read_file_field
from server.schemas import (
    ClipScores,
    Detection,
    DetectionsResponse,
    ErrorResponse,
    ModelRef,
    UploadWarning,
    VideoInfo,
)
from server.service import Service

router = APIRouter()

# The body as OpenAPI should show it: the route reads it itself, as a stream.
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


@router.post(
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
    camera_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            description="the camera the video comes from: a person-crop model uses its "
            "empty-room reference (PUT /v1/cameras/{camera_id}/reference)",
        ),
    ] = None,
) -> DetectionsResponse:
    """Detect actions in an uploaded depth video (multipart field `file`)."""
    start = time.perf_counter()
    status = 500
    try:
        response = await _detect(request, service, fps, scores, start, camera_id)
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
    request: Request,
    service: Service,
    fps: float | None,
    scores: bool,
    start: float,
    camera_id: str | None = None,
) -> DetectionsResponse:
    # one engine (and its bundle) for the whole upload, even if the model is reloaded meanwhile
    settings, engine = service.settings, service.engine
    bundle = engine.bundle
    data = await read_file_field(request, settings.max_upload_bytes)
    received = time.perf_counter()
    limits = uploads.Limits(
        settings.max_upload_frames, settings.max_decoded_bytes, service.recordings
    )
    loop = asyncio.get_running_loop()
    video = await loop.run_in_executor(service.decode_executor, uploads.decode, data, fps, limits)
    del data
    decoded = time.perf_counter()
    reference, warnings = None, []
    if bundle.clip.person_crop:  # each clip cropped against the camera's empty-room depth
        stored = None if camera_id is None else request.app.state.references.get(camera_id)
        problem = reference_problem(stored, camera_id, video.frames.shape[1:])
        if problem is not None:
            warnings.append(UploadWarning(code=problem[0], message=problem[1]))
        elif stored is not None:
            reference = stored.image
    try:
        result = await offline.detect(
            engine,
            video.frames,
            video.timestamps_us,
            service.model_executor,
            service.decode_executor,
            chunk_clips=settings.max_batch,
            max_clips=settings.max_upload_clips,
            max_upsample=settings.max_upload_upsample,
            reference=reference,
        )
    except (offline.TooShort, TimestampError) as e:
        raise ApiError(422, "invalid_video", str(e)) from e
    except offline.TooSparse as e:
        raise ApiError(422, "too_sparse", str(e)) from e
    except offline.TooManyClips as e:
        raise ApiError(413, "too_many_clips", str(e)) from e
    timing = {"receive": received - start, "decode": decoded - received}
    response = _response(bundle, video, result, scores, timing, start)
    response.warnings = warnings
    return response


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
        spans = [clips_span(spec, c, c) for c in range(len(result.probs))]
        clip_scores = [
            ClipScores(
                clip=c,
                start_s=span.start_s,
                end_s=span.end_s,
                activity=float(1.0 - row[0]),
                probs=row.tolist(),
            )
            for c, (row, span) in enumerate(zip(result.probs, spans, strict=True))
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
