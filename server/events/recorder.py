"""The bus listener that turns streams into stored events and camera states.

`ActionStart` creates an event (its confidence then runs: the mean probability of its label
over the clips so far), `ActionEnd` ends it with the final label and confidence. `Scores`
update the camera's top action and last frame time in memory only; they reach the store at
most every `flush_every_s` (and at once on disconnect). An open event's running confidence is
written less often: at most every `confidence_every_s`, but at the next flush when it crosses
a minimum confidence of the alert rules (an alert, or a repeat, never waits for it), and with
the end. Store calls go, in order, to the events service's single thread: the listener
never waits for the database, except on disconnect, which returns once everything the stream
made is stored (so whoever sees a stream closed sees its events), or, while the database is
away, kept in memory to be stored in order when it returns (server/events/service.py).

Times: an event's start and end are the server's UTC clock at the moment the camera's frames
showed them: the sender's timestamps, mapped through the newest clip's (its timestamp, the
time its scores came).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from core.events import ActionEnd, ActionStart, End, Event, FramesDropped, Scores
from core.wire import Hello
from server.events.rules import AlertRules
from server.events.store import CameraRecord, Change, EventStore
from server.events.types import EventRecord

# The running confidence's write rate: a write transaction per open event a second was the
# event path's largest cost (docs/results.md); the API and feed show it this late at most.
CONFIDENCE_EVERY_S = 5.0


@dataclass
class _Open:
    """An event that lasts, and its running confidence."""

    record: EventRecord
    total: float
    clips: int
    written_at: datetime  # when its confidence was last written
    changed: bool = False

    @property
    def confidence(self) -> float:
        return self.total / self.clips

    @property
    def written(self) -> float:
        return self.record.confidence  # the record keeps the value last written


@dataclass
class _Camera:
    record: CameraRecord
    open: _Open | None = None
    last_frame_us: int | None = None  # the newest clip's frame, in the sender's clock
    last_index: int | None = None
    dirty: bool = False

    def wall(self, timestamp_us: int, now: datetime) -> datetime:
        """The server time of a sender's timestamp (now, before any clip)."""
        at = self.record.last_frame_at
        if self.last_frame_us is None or at is None:
            return now
        return at - timedelta(microseconds=self.last_frame_us - timestamp_us)

    def update(self, **values: object) -> None:
        self.record = replace(self.record, **values)  # type: ignore[arg-type]
        self.dirty = True


class EventRecorder:
    """A `server.eventbus.StreamListener`. `submit` runs a store call in order, off the
    event loop (`EventService.submit`); `drain` returns once all submitted have run."""

    def __init__(
        self,
        store: EventStore,
        submit: Callable[..., Any],
        drain: Callable[[], Awaitable[None]],
        clock: Callable[[], datetime],
        confidence_every_s: float = CONFIDENCE_EVERY_S,
    ) -> None:
        self.store, self.submit, self.drain, self.clock = store, submit, drain, clock
        self.cameras: dict[str, _Camera] = {}
        self.confidence_every = timedelta(seconds=confidence_every_s)
        # the minimum confidences an alert or repeat depends on; None: a policy that does not
        # say (every change is written at the next flush)
        policy = store.policy
        self.thresholds: frozenset[float] | None = (
            policy.thresholds
            if isinstance(policy, AlertRules)
            else frozenset()
            if policy is None
            else None
        )

    async def connected(self, camera_id: str, hello: Hello, model: dict[str, str]) -> None:
        now = self.clock()
        record = CameraRecord(camera_id, now, now, True, hello.fps, 0, 0)
        self.cameras[camera_id] = _Camera(record, dirty=True)
        # events a previous connection left open (a server killed mid-action) end where the
        # camera was last seen
        self.submit(self._end_dangling, camera_id, now)
        self.flush(camera_id)

    def _end_dangling(self, camera_id: str, now: datetime) -> list[Change | None]:
        dangling = self.store.open_events(camera_id)
        if not dangling:  # the usual answer: the camera's stored state is not needed
            return []
        known = self.store.camera(camera_id)
        last = known.last_frame_at if known is not None else None
        return [
            self.store.update_event(e.id, now, end=max(e.start, last or e.start)) for e in dangling
        ]

    async def event(self, camera_id: str, event: Event, model: dict[str, str]) -> None:
        camera = self.cameras.get(camera_id)
        if camera is None:  # `ready` comes before `connected`
            return
        now = self.clock()
        if isinstance(event, Scores):
            self._scores(camera, event, now)
        elif isinstance(event, ActionStart):
            self._start(camera, event, model, now)
        elif isinstance(event, ActionEnd):
            self._end(camera, event, model, now)
        elif isinstance(event, FramesDropped):
            camera.update(drops=event.total_dropped, last_seen=now)
        elif isinstance(event, End):
            camera.update(frames=event.frames_received, drops=event.frames_dropped)

    def _scores(self, camera: _Camera, scores: Scores, now: datetime) -> None:
        values: dict[str, object] = {"last_frame_at": now, "last_seen": now}
        last_us, last_index = camera.last_frame_us, camera.last_index
        if last_us is not None and last_index is not None and scores.timestamp_us > last_us:
            # the sender's frame rate, in its own clock
            values["fps"] = (
                (scores.frame_index - last_index) * 1e6 / (scores.timestamp_us - last_us)
            )
        camera.last_frame_us, camera.last_index = scores.timestamp_us, scores.frame_index
        values["frames"] = max(camera.record.frames, scores.frame_index + 1)
        if scores.top:
            values["top_label"], values["top_score"] = scores.top[0].label, scores.top[0].score
        camera.update(**values)
        if (event := camera.open) is not None:
            score = next((s.score for s in scores.top if s.class_id == event.record.class_id), None)
            if score is not None:  # below the top k: not known, not counted
                event.total, event.clips, event.changed = event.total + score, event.clips + 1, True

    def _start(
        self, camera: _Camera, start: ActionStart, model: dict[str, str], now: datetime
    ) -> None:
        record = EventRecord(
            id=str(uuid.uuid4()),
            camera_id=camera.record.id,
            label=start.label,
            class_id=start.class_id,
            confidence=start.confidence,
            start=camera.wall(start.start_timestamp_us, now),
            end=None,
            model_name=model["name"],
            model_version=model["version"],
        )
        camera.open = _Open(record, start.confidence, 1, now)
        self.submit(self.store.add_event, record, now)

    def _end(self, camera: _Camera, end: ActionEnd, model: dict[str, str], now: datetime) -> None:
        at = camera.wall(end.end_timestamp_us, now)
        if camera.open is None:  # began before this listener knew the camera
            record = EventRecord(
                str(uuid.uuid4()), camera.record.id, end.label, end.class_id, end.confidence,
                camera.wall(end.start_timestamp_us, now), at, model["name"], model["version"],
            )  # fmt: skip
            self.submit(self.store.add_event, record, now)
            return
        started, camera.open = camera.open.record, None
        event_id = started.id
        at = max(at, started.start)  # mapped through a newer clip, it may come out earlier
        final = partial(
            self.store.update_event, event_id, now, end=at, label=end.label,
            class_id=end.class_id, confidence=end.confidence,
        )  # fmt: skip
        self.submit(final)

    async def disconnected(self, camera_id: str, frames: int, dropped: int) -> None:
        camera = self.cameras.get(camera_id)
        if camera is None:
            return
        now = self.clock()
        if (event := camera.open) is not None:  # gone mid-action: ended with the last frame
            camera.open = None
            end = camera.record.last_frame_at or now
            final = partial(
                self.store.update_event, event.record.id, now, end=end,
                confidence=event.confidence,
            )  # fmt: skip
            self.submit(final)
        camera.update(connected=False, frames=frames, drops=dropped, last_seen=now)
        self.flush(camera_id)
        await self.drain()

    def flush(self, camera_id: str | None = None) -> None:
        """Camera states and running confidences changed since the last flush, to the store
        (one camera's, or every camera's)."""
        now = self.clock()
        chosen = [self.cameras[camera_id]] if camera_id is not None else self.cameras.values()
        changed, confidences = [], {}
        for camera in chosen:
            if camera.dirty:
                changed.append(camera.record)
                camera.dirty = False
            if (event := camera.open) is not None and event.changed and self._due(event, now):
                event.changed, event.written_at = False, now
                event.record = replace(event.record, confidence=event.confidence)
                confidences[event.record.id] = event.confidence
        if confidences or changed:  # one transaction: a write costs about its commit
            self.submit(self.store.save_flush, changed, confidences, now)

    def _due(self, event: _Open, now: datetime) -> bool:
        """Whether the running confidence is written at this flush."""
        if self.thresholds is None or now - event.written_at >= self.confidence_every:
            return True
        was, is_ = event.written, event.confidence
        return any((was >= t) != (is_ >= t) for t in self.thresholds)
