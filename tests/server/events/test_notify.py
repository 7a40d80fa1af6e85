"""The feed relay between two event services on one real PostgreSQL (LISTEN/NOTIFY): each
one's committed changes reach the other's feed, read from the store, never echoed back; a
notice it cannot read is skipped, not fatal. The two-server end to end: test_multi_server.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import psycopg

from core.wire import Hello
from server.events.feed import Subscription
from server.events.notify import CHANNEL
from server.events.service import EventService
from server.events.store import CameraRecord, Change
from server.events.types import EventRecord
from tests.helpers.relayed import WAIT_S, two_services

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MODEL = {"name": "tiny", "version": "1"}


def record(event_id: str) -> EventRecord:
    return EventRecord(event_id, "door", "fall", 1, 0.8, T0, None, "tiny", "1")


async def next_item(sub: Subscription):
    return await asyncio.wait_for(sub.next(), WAIT_S)


def queued(sub: Subscription) -> list:
    return [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]


def test_changes_reach_the_other_servers_feed_and_are_not_echoed(postgres):
    async def body(a: EventService, b: EventService, url: str) -> None:
        with a.feed.subscribe() as fed_a, b.feed.subscribe() as fed_b:
            await a.recorder.connected("door", Hello("door", 64, 48, 30.0), MODEL)
            started = await a.call(a.store.add_event, record("e1"), T0)
            camera = await next_item(fed_b)
            assert isinstance(camera, CameraRecord)
            assert camera == a.store.camera("door") and camera.connected
            assert await next_item(fed_b) == started

            reviewed = await b.call(b.store.review, "e1", T0, "nurse", "acknowledged")
            assert reviewed.event.review == "acknowledged"
            assert await next_item(fed_b) == reviewed  # b's own, published at once
            # a's feed: its own two changes once each, then b's, read from the store as
            # committed. Notices reach a listener in commit order, and b reviewed after a's
            # notices were committed: an echo of a's own would have come before b's.
            assert [await next_item(fed_a) for _ in range(3)] == [camera, started, reviewed]
            assert queued(fed_a) == [] and queued(fed_b) == []

    two_services(postgres, body, clock=lambda: lambda: T0)


BOGUS = (
    "not json",
    "[1]",
    '{"from": "x", "event": "e9", "change": "exploded"}',
    '{"from": "x", "event": "no-such-event", "change": "ended"}',  # deleted since, say
)


def test_a_notice_it_cannot_read_is_skipped(postgres):
    async def body(a: EventService, b: EventService, url: str) -> None:
        conninfo = url.replace("postgresql+psycopg://", "postgresql://")
        with b.feed.subscribe() as fed_b:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as c:
                for bogus in BOGUS:
                    await c.execute("SELECT pg_notify(%s, %s)", (CHANNEL, bogus))
            started = await a.call(a.store.add_event, record("e2"), T0)
            assert await next_item(fed_b) == started  # the listener lived on
            assert isinstance(started, Change)

    two_services(postgres, body, clock=lambda: lambda: T0)
