"""The shapes the event store, the alert rules and the deliverers agree on.

The store (`server/events/store.py`) keeps `EventRecord`s and an outbox of `Delivery` rows.
When an event is created or changes, the store asks the alert rules which `Alert`s it owes
(`AlertPolicy`) and writes them to the outbox **in the same transaction** as the event, so a
server killed at any moment still owes, after restart, exactly what it had not delivered.
Deliverers (webhooks, ...) take due rows from the `Outbox` and mark each delivered, to retry, or
dead (dead-letter, after the last try). All times are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

Review = Literal["new", "acknowledged", "false_positive"]
DeliveryState = Literal["pending", "delivered", "dead"]


@dataclass(frozen=True)
class EventRecord:
    """One action on one camera, as stored (never an image)."""

    id: str  # stable, e.g. a UUID string
    camera_id: str
    label: str
    class_id: int
    confidence: float  # running: the newest mean probability while it lasts, then the final one
    start: datetime
    end: datetime | None  # None while the action lasts
    model_name: str
    model_version: str
    review: Review = "new"
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    note: str | None = None
    keep: bool = False  # kept forever: retention never deletes it


@dataclass(frozen=True)
class Alert:
    """What a rule owes one destination for one event change."""

    destination: str  # a destination's name in the alert rules file
    kind: str  # e.g. "alert.started", "alert.repeated"
    payload: dict[str, Any]  # the JSON body to deliver


@dataclass(frozen=True)
class Delivery:
    """One outbox row: one alert to one destination, and how its delivery went."""

    id: int
    event_id: str
    destination: str
    kind: str
    payload: dict[str, Any]
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    last_status: int | None = None  # the destination's last HTTP status, if any
    last_error: str | None = None
    delivered_at: datetime | None = None


class AlertHistory(Protocol):
    """What alert rules may ask the store (inside the event's transaction)."""

    def last_alert_at(self, camera_id: str, label: str, destination: str) -> datetime | None: ...


class AlertPolicy(Protocol):
    """The alert rules, as the store calls them on every event change."""

    def alerts_for(
        self, event: EventRecord, change: str, history: AlertHistory, now: datetime
    ) -> list[Alert]: ...


class Outbox(Protocol):
    """The deliverers' side of the outbox."""

    def due(self, destinations: Collection[str], now: datetime, limit: int) -> list[Delivery]:
        """Pending rows for these destinations whose next attempt is due, oldest first."""
        ...

    def delivered(self, delivery_id: int, now: datetime, status: int | None) -> None: ...

    def retry(self, delivery_id: int, at: datetime, error: str, status: int | None) -> None: ...

    def dead(self, delivery_id: int, now: datetime, error: str, status: int | None) -> None: ...

    def release(self, delivery_ids: Collection[int], at: datetime) -> None:
        """Rows handed out by `due` but not attempted: due again at `at` (no attempt counted),
        rather than when their loan runs out."""
        ...
