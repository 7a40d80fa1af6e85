"""What streams tell the rest of the server: a camera came, sent an event, went.

`StreamSession` publishes here and knows nothing of who listens; the event store, alert
delivery and the dashboard's live feed subscribe. Listeners are called in order on the event
loop, each with the camera's id; one that raises is logged and the others still run, so a
broken listener never ends a stream.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Protocol

from core.events import Event
from core.wire import Hello

log = logging.getLogger("gd.server")


class StreamListener(Protocol):
    async def connected(self, camera_id: str, hello: Hello, model: dict[str, str]) -> None: ...

    async def event(self, camera_id: str, event: Event, model: dict[str, str]) -> None: ...

    async def disconnected(self, camera_id: str, frames: int, dropped: int) -> None: ...


class EventBus:
    def __init__(self) -> None:
        self.listeners: list[StreamListener] = []

    def subscribe(self, listener: StreamListener) -> None:
        self.listeners.append(listener)

    async def connected(self, camera_id: str, hello: Hello, model: dict[str, str]) -> None:
        for listener in self.listeners:
            await _safely(listener.connected(camera_id, hello, model))

    async def event(self, camera_id: str, event: Event, model: dict[str, str]) -> None:
        for listener in self.listeners:
            await _safely(listener.event(camera_id, event, model))

    async def disconnected(self, camera_id: str, frames: int, dropped: int) -> None:
        for listener in self.listeners:
            await _safely(listener.disconnected(camera_id, frames, dropped))


async def _safely(call: Awaitable[None]) -> None:
    try:
        await call
    except Exception:
        log.exception("an event listener failed")
