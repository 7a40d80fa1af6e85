"""Two event services on one real PostgreSQL with their feed relays listening: the relay's
tests and those of references kept in step between servers run their bodies between them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from server.events.service import EventService
from server.events.store import EventStore, database_url

WAIT_S = 10.0  # a ceiling for what the database passes on at once, never a window asserted


async def until(condition: Callable[[], bool], what: str) -> None:
    """Return once `condition()` holds; fail naming `what` after WAIT_S."""
    try:
        async with asyncio.timeout(WAIT_S):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(what) from None


def two_services(
    postgres,
    body: Callable[[EventService, EventService, str], Awaitable[None]],
    clock: Callable[[], Callable[[], datetime]],
    sync_every_s: float | None = None,
) -> None:
    """Run `body(a, b, url)` with two started services on one emptied database, each with a
    clock of its own from `clock()` and, if given, the references' safety net every
    `sync_every_s`."""
    url = database_url(postgres.empty_database())

    async def main() -> None:
        a, b = (EventService(EventStore.open(url), 30, clock()) for _ in range(2))
        for service in (a, b):
            assert service.relay is not None  # PostgreSQL: every service relays
            if sync_every_s is not None:
                service.relay.sync_every_s = sync_every_s  # before `start`, which uses it
            service.start()
        try:
            await until(lambda: a.relay.listening.is_set() and b.relay.listening.is_set(), "LISTEN")
            await body(a, b, url)
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(main())
