"""The bus listener with an injected clock: event times mapped from the sender's clock,
running confidence, camera states flushed, events left open, retention, the feed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from core.events import ActionEnd, ActionStart, Score, Scores
from core.wire import Hello
from server.events.rules import AlertRules, RulesFile
from server.events.service import EventService
from server.events.store import CameraRecord, Change, EventFilter, EventStore, database_url
from server.events.types import EventRecord
from server.events.webhooks import new_secret

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MODEL = {"name": "tiny", "version": "1"}
CLIP_US = 400_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def scores(clip: int, top: tuple[tuple[str, int, float], ...]) -> Scores:
    end_us = (clip + 1) * CLIP_US
    return Scores(
        clip=clip, start_frame=clip * 12, end_frame=clip * 12 + 11, start_s=clip * 0.4,
        end_s=(clip + 1) * 0.4, start_timestamp_us=clip * CLIP_US, end_timestamp_us=end_us,
        activity=0.9, top=tuple(Score(*t) for t in top), frame_index=(clip + 1) * 12 - 1,
        timestamp_us=end_us,
    )  # fmt: skip


def start(clip: int, confidence: float) -> ActionStart:
    return ActionStart("fall", 1, confidence, clip, clip * 12, clip * 0.4, clip * CLIP_US)


def end(first: int, last: int, confidence: float) -> ActionEnd:
    return ActionEnd(
        "fall", 1, first * 12, last * 12 + 11, first * 0.4, (last + 1) * 0.4, confidence,
        first * CLIP_US, (last + 1) * CLIP_US, first, last,
    )  # fmt: skip


def run(
    store_url, body, flush_every_s: float = 3600.0, policy=None, confidence_every_s: float = 0.0
) -> tuple[EventStore, list]:
    """`body(events, clock)` against a service on a fresh store; the store (reopened) and
    what the feed carried. Running confidences are written at every flush unless
    `confidence_every_s` says otherwise."""
    url = database_url(store_url)

    async def main() -> list:
        store = EventStore.open(url, policy)
        clock = Clock()
        service = EventService(store, 30, clock, flush_every_s=flush_every_s)
        service.recorder.confidence_every = timedelta(seconds=confidence_every_s)
        service.start()
        with service.feed.subscribe() as sub:
            await body(service, clock)
            await service.stop()
            return [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]

    fed = asyncio.run(main())
    return EventStore.open(url), fed


HELLO = Hello("door", 64, 48, 30.0)


def test_events_are_timed_in_the_servers_clock_with_a_running_confidence(store_url):
    async def body(service, clock):
        rec = service.recorder
        await rec.connected("door", HELLO, MODEL)
        clock.now = T0 + timedelta(seconds=10)  # the clip ending at 0.8 s arrives now
        await rec.event("door", scores(1, (("fall", 1, 0.8), ("sit", 2, 0.1))), MODEL)
        await rec.event("door", start(1, 0.8), MODEL)
        clock.now += timedelta(seconds=0.4)
        await rec.event("door", scores(2, (("sit", 2, 0.5), ("fall", 1, 0.4))), MODEL)
        rec.flush()
        await service.drain()
        (running,) = service.store.list_events(EventFilter(state="open"), 10).events
        assert running.confidence == (0.8 + 0.4) / 2
        clock.now += timedelta(seconds=0.4)
        await rec.event("door", scores(3, (("sit", 2, 0.1), ("fall", 1, 0.05))), MODEL)
        await rec.event("door", end(1, 2, 0.6), MODEL)
        await rec.disconnected("door", 48, 2)

    store, fed = run(store_url, body)
    (event,) = store.list_events(EventFilter(), 10).events
    # clip 1 started at 0.4 s, 0.4 s before the clip whose scores came at T0 + 10 s
    assert event.start == T0 + timedelta(seconds=10 - 0.4)
    # clips 1-2 ended at 1.2 s; clip 3 (ending at 1.6 s) came at T0 + 10.8 s
    assert event.end == T0 + timedelta(seconds=10.8 - 0.4)
    assert event.confidence == 0.6 and (event.label, event.model_name) == ("fall", "tiny")
    (camera,) = store.cameras()
    assert camera == CameraRecord(
        "door", T0, T0 + timedelta(seconds=10.8), False, 30.0, 48, 2,
        T0 + timedelta(seconds=10.8), "sit", 0.1,
    )  # fmt: skip
    changes = [(i.change, i.event.confidence) for i in fed if isinstance(i, Change)]
    assert changes == [("started", 0.8), ("updated", (0.8 + 0.4) / 2), ("ended", 0.6)]


def test_camera_states_wait_for_the_flush(store_url):
    async def body(service, clock):
        rec = service.recorder
        await rec.connected("door", HELLO, MODEL)
        await service.drain()
        for clip in range(5):
            clock.now += timedelta(seconds=0.4)
            await rec.event("door", scores(clip, (("sit", 2, 0.1 * clip),)), MODEL)
        await service.drain()
        stored = service.store.camera("door")
        assert stored.top_label is None and stored.frames == 0  # not yet flushed
        rec.flush()
        await service.drain()
        stored = service.store.camera("door")
        assert (stored.top_score, stored.frames, stored.connected) == (0.4, 60, True)

    run(store_url, body)


def test_the_flush_timer_stores_camera_states(store_url):
    async def body(service, clock):
        await service.recorder.connected("door", HELLO, MODEL)
        await service.recorder.event("door", scores(0, (("sit", 2, 0.3),)), MODEL)
        for _ in range(200):  # the timer runs every 10 ms; no assert on how long it took
            await asyncio.sleep(0.01)
            await service.drain()
            if service.store.camera("door").top_score == 0.3:
                return
        raise AssertionError("the flush timer never stored the camera")

    run(store_url, body, flush_every_s=0.01)


def test_an_event_left_open_by_a_killed_server_ends_when_its_camera_returns(store_url):
    async def killed(service, clock):
        rec = service.recorder
        await rec.connected("door", HELLO, MODEL)
        clock.now = T0 + timedelta(seconds=5)
        await rec.event("door", scores(1, (("fall", 1, 0.9),)), MODEL)
        await rec.event("door", start(1, 0.9), MODEL)
        rec.flush()  # ... and the server dies: no disconnect, no end

    store, _ = run(store_url, killed)
    (open_event,) = store.list_events(EventFilter(state="open"), 10).events
    store.close()

    async def returns(service, clock):
        clock.now = T0 + timedelta(hours=1)
        await service.recorder.connected("door", HELLO, MODEL)

    store, fed = run(store_url, returns)
    (event,) = store.list_events(EventFilter(), 10).events
    assert event.id == open_event.id and event.end == T0 + timedelta(seconds=5)
    assert [i.change for i in fed if isinstance(i, Change)] == ["ended"]


def test_retention_runs_on_a_timer(store_url):
    url = database_url(store_url)
    store = EventStore.open(url)
    clock = Clock()
    old = T0 - timedelta(days=31)
    for n, begun in enumerate((old, T0)):
        store.add_event(
            EventRecord(f"e{n}", "door", "fall", 1, 0.5, begun, begun, "tiny", "1"), begun
        )

    async def main() -> None:
        service = EventService(store, 30, clock, retention_every_s=0.01)
        service.start()
        for _ in range(200):  # no assert on how long it took
            await asyncio.sleep(0.01)
            await service.drain()
            if store.get("e0") is None:
                break
        await service.stop()

    asyncio.run(main())
    store = EventStore.open(url)
    assert [e.id for e in store.list_events(EventFilter(), 10).events] == ["e1"]


def test_a_running_confidence_is_written_every_few_seconds_or_as_it_crosses_a_threshold(
    store_url,
):
    rules = AlertRules(
        RulesFile.model_validate({
            "destinations": {"pager": {"url": "http://127.0.0.1:9/", "secrets": [new_secret()]}},
            "rules": [{"name": "falls", "labels": ["fall"], "min_confidence": 0.6,
                       "destinations": ["pager"]}],
        })
    )  # fmt: skip
    every = 5.0
    seen = [0.5, 0.55, 0.95, 0.7]  # the fall's score in four clips

    async def body(service, clock):
        rec = service.recorder
        await rec.connected("door", HELLO, MODEL)
        clock.now = T0 + timedelta(seconds=10)
        await rec.event("door", scores(1, (("fall", 1, seen[0]),)), MODEL)
        await rec.event("door", start(1, seen[0]), MODEL)
        for clip, score in enumerate(seen[1:], start=2):  # a flush after each clip, 1 s apart
            clock.now += timedelta(seconds=1)
            await rec.event("door", scores(clip, (("fall", 1, score),)), MODEL)
            rec.flush()
        clock.now = T0 + timedelta(seconds=12 + every)  # `every` after the last write
        rec.flush()
        rec.flush()  # nothing changed since
        await rec.disconnected("door", 48, 0)

    store, fed = run(store_url, body, policy=rules, confidence_every_s=every)
    clock_end = T0 + timedelta(seconds=12 + every)
    changes = [(i.change, i.event.confidence) for i in fed if isinstance(i, Change)]
    mean = [sum(seen[: n + 1]) / (n + 1) for n in range(len(seen))]
    assert mean[1] < 0.6 <= mean[2]  # the third clip's mean crosses the rule's threshold
    assert changes == [
        ("started", mean[0]),
        ("updated", mean[2]),  # at once: it crossed 0.6 (the second clip's waited)
        ("updated", mean[3]),  # `every` after the last write
        ("ended", mean[3]),  # gone mid-action: ended with its running confidence
    ]
    owed = [(d.kind, d.created_at) for d in reversed(store.deliveries())]
    assert owed == [("alert.started", T0 + timedelta(seconds=12)), ("alert.ended", clock_end)]
