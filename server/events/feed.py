"""The live feed: committed event changes and camera states, fanned out to subscribers
(`GET /v1/events/feed`). In memory, this server's own changes only; a subscriber that falls
`MAX_QUEUED` items behind is dropped (its stream ends; it reconnects and re-lists)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from server.events.store import CameraRecord, Change

MAX_QUEUED = 1000
Item = Change | CameraRecord


class Subscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Item | None] = asyncio.Queue(MAX_QUEUED + 1)
        self.dropped = False

    async def next(self) -> Item | None:
        """The next item; None once dropped for falling behind."""
        return await self.queue.get()


class Feed:
    def __init__(self) -> None:
        self.subscribers: set[Subscription] = set()

    def publish(self, item: Item) -> None:
        """On the event loop; never waits."""
        for sub in list(self.subscribers):
            if sub.queue.qsize() >= MAX_QUEUED:
                self.subscribers.discard(sub)
                sub.dropped = True
                sub.queue.put_nowait(None)
            else:
                sub.queue.put_nowait(item)

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        sub = Subscription()
        self.subscribers.add(sub)
        try:
            yield sub
        finally:
            self.subscribers.discard(sub)
