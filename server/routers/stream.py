"""WS /v1/stream: live depth streams (the protocol is server/stream.py's). It authenticates
inside the protocol (header or hello), so it is mounted without the REST token check."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from server import stream
from server.dependencies import ServiceDep

router = APIRouter()


@router.websocket("/stream")
async def stream_endpoint(ws: WebSocket, service: ServiceDep) -> None:
    await stream.serve(ws, service)
