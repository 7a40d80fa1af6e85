"""The live feed: committed event changes and camera states, fanned out to subscribers
(`GET /v1/events/feed`). In memory; a subscriber that falls `MAX_QUEUED` items behind is
dropped (its stream ends; it reconnects and re-lists).

This server's own changes are `publish`ed: to the subscribers and to the relays, which pass
them on to the other servers of one PostgreSQL (server/events/notify.py). What another server
committed comes back through `deliver`: to the subscribers only, never relayed again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
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
        self.relays: list[Callable[[Item], None]] = []

    def publish(self, item: Item) -> None:
        """A change this server committed: to the subscribers and the relays. On the event
        loop; never waits."""
        self.deliver(item)
        for relay in self.relays:
            relay(item)

    def deliver(self, item: Item) -> None:
        """To the subscribers only (a change another server committed). On the event loop;
        never waits."""
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
