"""The event API: stored events, their review, a live feed of changes, the cameras
(docs/events.md) and the delivery log of the alerts (docs/alerts.md). Mounted under /v1 with
the bearer-token check, when the store is on."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import HTTPConnection

from server.auth import bearer_token
from server.errors import ApiError
from server.events.delivery import message_id
from server.events.references import Reference
from server.events.service import EventService
from server.events.store import (
    CameraRecord,
    Change,
    ChangeKind,
    CursorError,
    EventFilter,
    EventState,
)
from server.events.types import Delivery, DeliveryState, EventRecord, Review
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
    alerted: bool = Field(
        description="the alert rules owed it an alert (`?alerted=true`: the alert queue)"
    )

    @classmethod
    def of(cls, r: EventRecord, alerted: bool) -> EventOut:
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
            alerted=alerted,
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


# A server killed mid-stream never stores its cameras' disconnection; a camera scored nothing
# this long (a clip a second while streaming, the idle timeout closes a silent one in 30 s) is
# reported disconnected all the same.
STALE_AFTER = timedelta(minutes=2)


class ReferenceInfo(BaseModel):
    """A camera's empty-room reference (its PNG: GET /v1/cameras/{id}/reference)."""

    height: int
    width: int
    updated_at: datetime


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
    reference: ReferenceInfo | None = Field(
        description="its empty-room reference, for person-crop models; null: none"
    )

    @classmethod
    def of(cls, r: CameraRecord, reference: Reference | None) -> CameraOut:
        info = None
        if reference is not None:
            h, w = reference.image.shape
            info = ReferenceInfo(height=h, width=w, updated_at=reference.updated_at)
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
            reference=info,
        )


class EventChange(BaseModel):
    """One message of the live feed."""

    change: ChangeKind
    event: EventOut


class CamerasResponse(BaseModel):
    cameras: list[CameraOut]


class DeliveryOut(BaseModel):
    """One alert owed to one destination, and how its delivery went."""

    id: int
    event_id: str
    destination: str = Field(description="a destination's name in the alert rules file")
    kind: str = Field(description="alert.started, alert.ended or alert.repeated")
    webhook_id: str = Field(description="the `webhook-id` header of every attempt")
    state: DeliveryState = Field(description="pending until delivered or dead (dead letter)")
    attempts: int = Field(description="attempts made so far")
    created_at: datetime
    next_attempt_at: datetime | None = Field(
        description="pending: when it is tried next; null once delivered or dead"
    )
    last_status: int | None = Field(description="the receiver's last HTTP status; null: none")
    last_error: str | None = Field(description="why the last failed attempt failed")
    delivered_at: datetime | None
    payload: dict[str, Any] = Field(description="the JSON body sent")

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        return cls(
            id=d.id,
            event_id=d.event_id,
            destination=d.destination,
            kind=d.kind,
            webhook_id=message_id(d),
            state=d.state,
            attempts=d.attempts,
            created_at=d.created_at,
            next_attempt_at=d.next_attempt_at if d.state == "pending" else None,
            last_status=d.last_status,
            last_error=d.last_error,
            delivered_at=d.delivered_at,
            payload=d.payload,
        )


class DeliveriesPage(BaseModel):
    deliveries: list[DeliveryOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: done")


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
    alerted: Annotated[
        bool | None, Query(description="true: those the alert rules alerted about")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> EventsPage:
    """Stored events, newest first (by start, then id), filtered; `next_cursor` pages on."""
    where = EventFilter(camera, label, state, review, since, until, min_confidence, alerted)
    try:
        page = events.store.list_events(where, limit, cursor)
    except CursorError as e:
        raise ApiError(400, "bad_cursor", str(e)) from None
    listed = [EventOut.of(r, r.id in page.alerted) for r in page.events]
    return EventsPage(events=listed, next_cursor=page.next_cursor)


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
                        out = EventOut.of(item.event, item.alerted)
                        body = EventChange(change=item.change, event=out)
                        yield ServerSentEvent(body.model_dump_json(), event="event")
                elif camera is None or item.id == camera:
                    camera_out = CameraOut.of(item, events.references.get(item.id))
                    yield ServerSentEvent(camera_out.model_dump_json(), event="camera")

    return EventSourceResponse(stream(), ping=FEED_PING_S)


@router.get("/events/{event_id}", responses=NOT_FOUND)
def get_event(event_id: str, events: EventsDep) -> EventOut:
    """One event."""
    found = events.store.get_alerted(event_id)
    if found is None:
        raise ApiError(404, "not_found", f"no event {event_id!r}")
    return EventOut.of(*found)


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
    return EventOut.of(change.event, change.alerted)


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
    now, references = events.clock(), events.references
    return CamerasResponse(
        cameras=[CameraOut.of(stale(r, now), references.get(r.id)) for r in events.store.cameras()]
    )


def stale(r: CameraRecord, now: datetime) -> CameraRecord:
    """`r`, disconnected if its server stopped without saying so (see STALE_AFTER)."""
    if r.connected and now - r.last_seen > STALE_AFTER:
        return dataclasses.replace(r, connected=False)
    return r


# --- the delivery log ----------------------------------------------------------------------

CURSOR_PREFIX = "delivery:"
BAD_CURSOR = "not a cursor of this listing (use next_cursor as given)"


def delivery_cursor(delivery_id: int) -> str:
    """Opaque, like /v1/events' cursors: clients pass it back as given."""
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{delivery_id}".encode()).decode().rstrip("=")


def cursor_id(cursor: str) -> int:
    """The id a cursor continues after; a 400 `bad_cursor` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_cursor", BAD_CURSOR) from None
    number = raw.removeprefix(CURSOR_PREFIX)
    # a database integer: larger ones were never an id (and would overflow the driver)
    if not raw.startswith(CURSOR_PREFIX) or not number.isascii() or not number.isdigit():
        raise ApiError(400, "bad_cursor", BAD_CURSOR)
    if len(number) > 19 or int(number) >= 2**63:
        raise ApiError(400, "bad_cursor", BAD_CURSOR)
    return int(number)


def deliveries_page(
    events: EventService,
    limit: int,
    cursor: str | None,
    event_id: str | None,
    destination: str | None,
    state: DeliveryState | None,
) -> DeliveriesPage:
    before = None if cursor is None else cursor_id(cursor)
    rows = events.store.delivery_log(limit + 1, before, event_id, destination, state)
    more = len(rows) > limit
    rows = rows[:limit]
    return DeliveriesPage(
        deliveries=[DeliveryOut.of(d) for d in rows],
        next_cursor=delivery_cursor(rows[-1].id) if more else None,
    )


@router.get("/deliveries")
def list_deliveries(
    events: EventsDep,
    event: Annotated[str | None, Query(max_length=200, description="one event's")] = None,
    destination: Annotated[str | None, Query(max_length=200)] = None,
    state: DeliveryState | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> DeliveriesPage:
    """The delivery log: every alert owed to a destination and how its delivery went
    (attempts, last status, last error), newest first, filtered; `next_cursor` pages on."""
    return deliveries_page(events, limit, cursor, event, destination, state)


@router.get("/events/{event_id}/deliveries", responses=NOT_FOUND)
def event_deliveries(
    event_id: str,
    events: EventsDep,
    destination: Annotated[str | None, Query(max_length=200)] = None,
    state: DeliveryState | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> DeliveriesPage:
    """One event's deliveries, as `GET /v1/deliveries?event=` lists them; 404 for an
    unknown event."""
    if events.store.get(event_id) is None:
        raise ApiError(404, "not_found", f"no event {event_id!r}")
    return deliveries_page(events, limit, cursor, event_id, destination, state)
