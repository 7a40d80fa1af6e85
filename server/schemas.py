"""The REST API's request and response bodies (their JSON Schemas are in the OpenAPI
document, /docs and docs/api.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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


class UploadWarning(BaseModel):
    """Something the caller should know about the result (codes as a stream's `warning`)."""

    code: str
    message: str


class DetectionsResponse(BaseModel):
    detections: list[Detection]
    clip_scores: list[ClipScores] | None = None
    model: ModelRef
    video: VideoInfo
    timing_ms: dict[str, float]
    # a person-crop model without a usable reference: no_reference, reference_size_mismatch
    warnings: list[UploadWarning] = Field(default_factory=list)


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


# The error answers every authenticated route may give, for the OpenAPI document.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 413, 415, 422)
}
