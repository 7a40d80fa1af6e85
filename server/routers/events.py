"""The event API: stored events, their review, a live feed of changes, and the cameras
(docs/events.md). Mounted under /v1 with the bearer-token check, when the store is on."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import HTTPConnection

from server.auth import bearer_token
from server.errors import ApiError
from server.events.service import EventService
from server.events.store import (
    CameraRecord,
    Change,
    ChangeKind,
    CursorError,
    EventFilter,
    EventState,
)
from server.events.types import EventRecord, Review
from server.schemas import ErrorResponse, ModelRef

router = APIRouter()
MAX_PAGE = 500
FEED_PING_S = 15.0  # a comment this often keeps proxies from closing an idle feed


def get_events(connection: HTTPConnection) -> EventService:
    return connection.app.state.events


EventsDep = Annotated[EventService, Depends(get_events)]


class EventOut(BaseModel):
    id: str
    camera_id: str
    label: str
    class_id: int
    confidence: float = Field(description="running while the action lasts, then final")
    start: datetime
    end: datetime | None = Field(description="null while the action lasts")
    state: EventState
    model: ModelRef
    review: Review
    reviewed_by: str | None
    reviewed_at: datetime | None
    note: str | None
    keep: bool = Field(description="retention never deletes it")

    @classmethod
    def of(cls, r: EventRecord) -> EventOut:
        return cls(
            id=r.id,
            camera_id=r.camera_id,
            label=r.label,
            class_id=r.class_id,
            confidence=r.confidence,
            start=r.start,
            end=r.end,
            state="open" if r.end is None else "ended",
            model=ModelRef(name=r.model_name, version=r.model_version),
            review=r.review,
            reviewed_by=r.reviewed_by,
            reviewed_at=r.reviewed_at,
            note=r.note,
            keep=r.keep,
        )


class EventsPage(BaseModel):
    events: list[EventOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: done")


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["acknowledge", "false_positive", "note"]
    note: str | None = Field(None, max_length=2000)
    by: str | None = Field(
        None, min_length=1, max_length=200, description="default: the caller's token, named"
    )
    keep: bool | None = Field(None, description="true: retention never deletes the event")


class TopAction(BaseModel):
    label: str
    score: float


class CameraOut(BaseModel):
    id: str
    connected: bool
    first_seen: datetime
    last_seen: datetime
    fps: float = Field(description="the rate its frames arrive at, in its own clock")
    frames: int = Field(description="received in the current (or last) connection")
    drops: int = Field(description="of those, dropped under load")
    last_frame_at: datetime | None
    top: TopAction | None = Field(description="the newest clip's most probable action")

    @classmethod
    def of(cls, r: CameraRecord) -> CameraOut:
        top = None
        if r.top_label is not None and r.top_score is not None:
            top = TopAction(label=r.top_label, score=r.top_score)
        return cls(
            id=r.id,
            connected=r.connected,
            first_seen=r.first_seen,
            last_seen=r.last_seen,
            fps=r.fps,
            frames=r.frames,
            drops=r.drops,
            last_frame_at=r.last_frame_at,
            top=top,
        )


class EventChange(BaseModel):
    """One message of the live feed."""

    change: ChangeKind
    event: EventOut


class CamerasResponse(BaseModel):
    cameras: list[CameraOut]


REVIEWS: dict[str, Review] = {"acknowledge": "acknowledged", "false_positive": "false_positive"}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "no such event"}
}


# Plain `def` routes run in FastAPI's thread pool: a database read never blocks the loop.
@router.get("/events")
def list_events(
    events: EventsDep,
    camera: Annotated[str | None, Query(max_length=200)] = None,
    label: Annotated[str | None, Query(max_length=200)] = None,
    state: EventState | None = None,
    review: Review | None = None,
    since: Annotated[AwareDatetime | None, Query(description="start >= since")] = None,
    until: Annotated[AwareDatetime | None, Query(description="start < until")] = None,
    min_confidence: Annotated[float | None, Query(ge=0, le=1)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> EventsPage:
    """Stored events, newest first (by start, then id), filtered; `next_cursor` pages on."""
    where = EventFilter(camera, label, state, review, since, until, min_confidence)
    try:
        page = events.store.list_events(where, limit, cursor)
    except CursorError as e:
        raise ApiError(400, "bad_cursor", str(e)) from None
    return EventsPage(events=[EventOut.of(r) for r in page.events], next_cursor=page.next_cursor)


@router.get(
    "/events/feed",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def feed(
    events: EventsDep, camera: Annotated[str | None, Query(max_length=200)] = None
) -> EventSourceResponse:
    """Server-Sent Events: `event` (data: {change, event}) as events start, update, end and
    are reviewed; `camera` (data: the camera) as camera states are stored. One comment
    (`: subscribed`) first. A client that falls far behind is disconnected."""

    async def stream() -> AsyncIterator[ServerSentEvent]:
        with events.feed.subscribe() as sub:
            yield ServerSentEvent(comment="subscribed")
            while (item := await sub.next()) is not None:
                if isinstance(item, Change):
                    if camera is None or item.event.camera_id == camera:
                        body = EventChange(change=item.change, event=EventOut.of(item.event))
                        yield ServerSentEvent(body.model_dump_json(), event="event")
                elif camera is None or item.id == camera:
                    yield ServerSentEvent(CameraOut.of(item).model_dump_json(), event="camera")

    return EventSourceResponse(stream(), ping=FEED_PING_S)


@router.get("/events/{event_id}", responses=NOT_FOUND)
def get_event(event_id: str, events: EventsDep) -> EventOut:
    """One event."""
    record = events.store.get(event_id)
    if record is None:
        raise ApiError(404, "not_found", f"no event {event_id!r}")
    return EventOut.of(record)


@router.post("/events/{event_id}/review", responses=NOT_FOUND)
async def review_event(
    event_id: str, body: ReviewRequest, request: Request, events: EventsDep
) -> EventOut:
    """Acknowledge an event, mark it a false positive, or add a note; who (`by`, else the
    caller's token, named) and when are recorded."""
    if body.action == "note" and body.note is None:
        raise ApiError(400, "bad_request", "action 'note' needs a note")
    decision = REVIEWS.get(body.action)
    by = body.by or reviewer(request)
    change = await events.call(
        lambda: events.store.review(event_id, events.clock(), by, decision, body.note, body.keep)
    )
    if change is None:
        raise ApiError(404, "not_found", f"no event {event_id!r}")
    return EventOut.of(change.event)


def reviewer(request: Request) -> str:
    """Who reviews when the body does not say: the token's name, a hash that tells tokens
    apart without revealing them ("token:" and 8 hex digits); "anonymous" without a token."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        return "anonymous"
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:8]


@router.get("/cameras")
def list_cameras(events: EventsDep) -> CamerasResponse:
    """Every camera the server has seen, connected or not (states stored at most a second
    after they change)."""
    return CamerasResponse(cameras=[CameraOut.of(r) for r in events.store.cameras()])
