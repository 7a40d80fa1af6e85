"""GET /v1/model: the model card."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from server import stream
from server.dependencies import ServiceDep

router = APIRouter()


@router.get("/model")
def model_card(service: ServiceDep) -> dict[str, Any]:
    """The model card: name, version, classes, clip spec, metrics, engine, and what a live
    stream gets by default (score delay, latency)."""
    return {**service.model_card(), "streaming": stream.streaming_card(service)}
