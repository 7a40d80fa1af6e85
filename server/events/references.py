"""Each camera's empty-room reference in a running server (docs/api.md, *Camera references*):
kept in memory, so that a stream looks its camera's up for every clip without a database round
trip, and written through to the event store when there is one.

Several servers on one PostgreSQL (docs/deploy.md, *Several servers, one truth*) keep their
memories in step with the store's table: a server that puts or deletes a reference says so
through the feed relay (server/events/notify.py), and every other server re-reads that camera's
row (`refresh`). Notices are best effort (one sent while a listener is away is lost), so each
server also compares the table's `(camera_id, updated_at)` list with its memory every
`notify.SYNC_EVERY_S` and re-reads what differs (`sync`): one small query, whatever the number
of cameras or streams. Either way a change reaches the streams already running, from their next
clip on, as on the server that took the PUT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from server.events.notify import FeedRelay
from server.events.store import EventStore, ReferenceRecord, StoreUnavailable

log = logging.getLogger("gd.server")
T = TypeVar("T")
UTC_NOW = partial(datetime.now, UTC)  # the default clock


class Events(Protocol):
    """The event service (server/events/service.py), as the references use it."""

    store: EventStore
    relay: FeedRelay | None

    async def call(self, call: Callable[..., T], *args: Any) -> T:
        """Run `call` on the store's thread, after every call submitted before it."""
        ...


@dataclass(frozen=True)
class Reference:
    """A camera's empty-room depth: the PNG as uploaded and its pixels (uint16 mm, read-only)."""

    png: bytes
    image: np.ndarray
    updated_at: datetime


def decode_png(png: bytes) -> np.ndarray | None:
    """The pixels of a 16-bit single-channel PNG (uint16 [H, W], read-only); None for any
    other image or bytes that are not one."""
    import cv2  # the serve extra's

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint16 or image.ndim != 2:
        return None
    image.flags.writeable = False  # shared by every stream of the camera
    return image


def reference_problem(
    reference: Reference | None, camera_id: str | None, size: tuple[int, int]
) -> tuple[str, str] | None:
    """Why a person-crop model cannot use `reference` for frames of `size` (height, width):
    the warning's code and message; None when it can."""
    if reference is None:
        whose = "no camera_id given" if camera_id is None else f"camera {camera_id!r} has none"
        return "no_reference", (
            f"no empty-room reference ({whose}): this person-crop model gets whole frames, "
            "which it was not trained on (docs/api.md, Camera references)"
        )
    if reference.image.shape != size:
        (rh, rw), (h, w) = reference.image.shape, size
        return "reference_size_mismatch", (
            f"the reference of camera {camera_id!r} is {rw}x{rh}, the frames {w}x{h}: it is not "
            "used, clips are whole frames (capture one at the frames' size)"
        )
    return None


def decoded(record: ReferenceRecord) -> Reference | None:
    """The stored row as a `Reference`; None (logged) if its PNG is not what was checked at
    PUT (a row written by something else)."""
    image = decode_png(record.png)
    if image is None or image.shape != (record.height, record.width):
        log.error("camera %r: its stored reference is not a 16-bit PNG; ignored", record.camera_id)
        return None
    return Reference(record.png, image, record.updated_at)


class References:
    """Each camera's reference, in memory, written through to the event store when there is
    one and loaded from it at start. Without the store (`--events-db off`) they live in memory
    only: a restart forgets them. Used on the event loop only (no lock); the store is read on
    the event service's thread, in order with this server's own writes, so that a re-read never
    lands after (and undoes) a newer local PUT or DELETE."""

    def __init__(
        self, events: Events | None = None, clock: Callable[[], datetime] = UTC_NOW
    ) -> None:
        self.events, self.clock = events, clock
        self._cache: dict[str, Reference] = {}
        if events is not None and events.relay is not None:
            events.relay.references = self  # the other servers' changes, and the safety net

    @property
    def stored(self) -> bool:
        """Whether references survive a restart (the event store is on)."""
        return self.events is not None

    def load(self) -> None:
        """Read every stored reference (at start, before the event loop runs)."""
        if self.events is None:
            return
        for r in self.events.store.references():
            if (reference := decoded(r)) is not None:
                self._cache[r.camera_id] = reference

    def get(self, camera_id: str) -> Reference | None:
        return self._cache.get(camera_id)

    async def put(self, camera_id: str, png: bytes, image: np.ndarray) -> Reference:
        """Store (when the store is on: first there, so a failure changes nothing) and use
        from the next clip of the camera's streams on, here and on the other servers."""
        reference = Reference(png, image, self.clock())
        if self.events is not None:
            h, w = image.shape
            record = ReferenceRecord(camera_id, png, h, w, reference.updated_at)
            await self.events.call(self.events.store.put_reference, record)
            self._announce(camera_id)
        self._cache[camera_id] = reference
        return reference

    async def delete(self, camera_id: str) -> bool:
        """Whether the camera had one (it has none now, here and on the other servers)."""
        found = False
        if self.events is not None:
            found = await self.events.call(self.events.store.delete_reference, camera_id)
            if found:
                self._announce(camera_id)
        return self._cache.pop(camera_id, None) is not None or found

    def _announce(self, camera_id: str) -> None:
        if self.events is not None and self.events.relay is not None:
            self.events.relay.reference_changed(camera_id)

    # --- what the other servers of the database changed -------------------------------------

    async def refresh(self, camera_id: str) -> None:
        """Re-read the camera's row (another server changed it) and use what is stored."""
        if self.events is None:
            return
        try:
            reference = await self.events.call(self._read, camera_id)
        except (StoreUnavailable, SQLAlchemyError) as e:  # the next sync tries again
            log.warning("camera %r: cannot re-read its reference: %s", camera_id, e)
            return
        self._use(camera_id, reference)

    async def sync(self) -> None:
        """Re-read each reference whose `updated_at` differs from the one in memory, and forget
        those no longer stored: what notices missed."""
        if self.events is None:
            return
        cached = {camera_id: r.updated_at for camera_id, r in self._cache.items()}
        try:
            changed = await self.events.call(self._read_changed, cached)
        except (StoreUnavailable, SQLAlchemyError) as e:
            log.warning("camera references: cannot compare with the store: %s", e)
            return
        for camera_id, reference in changed.items():
            self._use(camera_id, reference)

    def _use(self, camera_id: str, reference: Reference | None) -> None:
        if reference is None:
            self._cache.pop(camera_id, None)
        else:
            self._cache[camera_id] = reference

    def _read(self, camera_id: str) -> Reference | None:
        """On the store's thread: the camera's stored reference, decoded."""
        assert self.events is not None
        record = self.events.store.reference(camera_id)
        return None if record is None else decoded(record)

    def _read_changed(self, cached: dict[str, datetime]) -> dict[str, Reference | None]:
        """On the store's thread: each camera whose stored reference is not the one `cached`
        (in memory), with what is stored (None: none)."""
        assert self.events is not None
        versions = self.events.store.reference_versions()
        gone = {camera_id: None for camera_id in cached.keys() - versions.keys()}
        stale = [c for c, at in versions.items() if cached.get(c) != at]
        return {**gone, **{camera_id: self._read(camera_id) for camera_id in stale}}
