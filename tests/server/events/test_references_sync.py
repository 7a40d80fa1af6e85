"""Camera references kept in step between two event services on one real PostgreSQL: a PUT or
DELETE on one reaches the other's memory through a relay notice (the safety net held off), and
the safety net alone catches up with rows changed without a notice (written by a third store
handle, as a server that died between its commit and its NOTIFY would leave them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count

import numpy as np

from server.events.references import Reference
from server.events.service import EventService
from server.events.store import EventStore, ReferenceRecord
from tests.helpers.crop_bundle import empty_wall
from tests.helpers.live import png
from tests.helpers.relayed import two_services, until

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NEVER_S = 3600.0  # a safety net that does not run during a test
CAMERA = "ward/bed-1"


def ticking() -> Callable[[], datetime]:
    """A clock one second later at each call: each put gets its own `updated_at`."""
    seconds = count()
    return lambda: T0 + timedelta(seconds=next(seconds))


def same(reference: Reference | None, image: np.ndarray, updated_at: datetime) -> bool:
    return (
        reference is not None
        and reference.png == png(image)
        and np.array_equal(reference.image, image)
        and reference.updated_at == updated_at
    )


def relayed(postgres, body, sync_every_s: float) -> None:
    """Run `body(a, b, url)` with two started services, each with a ticking clock and the
    safety net every `sync_every_s`."""

    async def checked(a: EventService, b: EventService, url: str) -> None:
        for service in (a, b):
            assert service.relay.references is service.references  # the relay mirrors them
        await body(a, b, url)

    two_services(postgres, checked, clock=ticking, sync_every_s=sync_every_s)


def test_a_put_and_a_delete_reach_the_other_server_by_notice(postgres):
    async def body(a: EventService, b: EventService, url: str) -> None:
        wall, nearer = empty_wall(), empty_wall() - 100
        put = await a.references.put(CAMERA, png(wall), wall)
        await until(lambda: same(b.references.get(CAMERA), wall, put.updated_at), "put")

        replaced = await a.references.put(CAMERA, png(nearer), nearer)
        assert replaced.updated_at != put.updated_at
        await until(lambda: same(b.references.get(CAMERA), nearer, replaced.updated_at), "new")

        # b's own put reaches a, and is not undone on b by a re-read of its own notice
        own = await b.references.put("cam-b", png(wall), wall)
        await until(lambda: same(a.references.get("cam-b"), wall, own.updated_at), "b's put")
        assert same(b.references.get("cam-b"), wall, own.updated_at)

        assert await a.references.delete(CAMERA) is True
        await until(lambda: b.references.get(CAMERA) is None, "the delete")
        assert await b.references.delete(CAMERA) is False  # the store has none either
        assert same(b.references.get("cam-b"), wall, own.updated_at)  # the others stay

    relayed(postgres, body, sync_every_s=NEVER_S)


def test_the_safety_net_alone_catches_up_with_changes_no_notice_told(postgres):
    wall, nearer = empty_wall(), empty_wall() - 100

    async def body(a: EventService, b: EventService, url: str) -> None:
        # written behind both servers' backs: no notice
        elsewhere = EventStore.open(url)
        try:
            record = ReferenceRecord(CAMERA, png(wall), 48, 64, T0)
            await asyncio.to_thread(elsewhere.put_reference, record)
            for service in (a, b):
                await until(lambda s=service: same(s.references.get(CAMERA), wall, T0), "put")

            later = T0 + timedelta(hours=1)
            record = ReferenceRecord(CAMERA, png(nearer), 48, 64, later)
            await asyncio.to_thread(elsewhere.put_reference, record)
            await until(lambda: same(b.references.get(CAMERA), nearer, later), "replaced")

            # a row that is not a 16-bit PNG is ignored (and logged), not used
            broken = ReferenceRecord("cam-broken", b"not a png", 48, 64, T0)
            await asyncio.to_thread(elsewhere.put_reference, broken)
            await asyncio.to_thread(elsewhere.delete_reference, CAMERA)
            await until(lambda: b.references.get(CAMERA) is None, "the delete")
            assert b.references.get("cam-broken") is None
        finally:
            elsewhere.close()

    relayed(postgres, body, sync_every_s=0.05)
