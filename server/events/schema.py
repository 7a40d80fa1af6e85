"""The event store's tables (SQLAlchemy 2 Core), the same on SQLite and PostgreSQL.

The migrations in `migrations/versions/` create exactly these (tests/server/events compares
them); a change here needs a new migration. An empty database gets these tables directly
(`store.migrate`, without alembic), stamped with the newest migration's revision. Times are
stored as UTC (`UtcDateTime`); indexes serve `GET /v1/events`' filters, each ending in the
list's order (start, id).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)

ID_LEN = 36  # a UUID's text
NAME_LEN = 200  # camera ids, labels, model names, destinations, reviewers


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC out: SQLite keeps no zone (stored as naive UTC),
    PostgreSQL's timestamptz does."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the event store takes timezone-aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()
# The newest migration's revision: these tables are its schema. A new migration changes it
# (tests/server/events/test_store.py checks it is alembic's head).
REVISION = "0003"

events = Table(
    "events",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("camera_id", String(NAME_LEN), nullable=False),
    Column("label", String(NAME_LEN), nullable=False),
    Column("class_id", Integer, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("start_at", UtcDateTime, nullable=False),
    Column("end_at", UtcDateTime, nullable=True),
    Column("model_name", String(NAME_LEN), nullable=False),
    Column("model_version", String(NAME_LEN), nullable=False),
    Column("review", String(20), nullable=False, server_default="new"),
    Column("reviewed_by", String(NAME_LEN), nullable=True),
    Column("reviewed_at", UtcDateTime, nullable=True),
    Column("note", Text, nullable=True),
    Column("keep", Boolean, nullable=False, server_default=false()),
    # the rules owed it an alert (set with its first outbox row): the dashboard's alert queue
    Column("alerted", Boolean, nullable=False, server_default=false()),
    Index("ix_events_start", "start_at", "id"),
    Index("ix_events_camera", "camera_id", "start_at", "id"),
    Index("ix_events_label", "label", "start_at", "id"),
    Index("ix_events_review", "review", "start_at", "id"),
    Index("ix_events_end", "end_at"),  # open events (NULL), retention
    Index("ix_events_alerted", "alerted", "start_at", "id"),
)

cameras = Table(
    "cameras",
    metadata,
    Column("id", String(NAME_LEN), primary_key=True),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Column("connected", Boolean, nullable=False),
    Column("fps", Float, nullable=False),
    Column("frames", BigInteger, nullable=False),
    Column("drops", BigInteger, nullable=False),
    Column("last_frame_at", UtcDateTime, nullable=True),
    Column("top_label", String(NAME_LEN), nullable=True),
    Column("top_score", Float, nullable=True),
)

# Each camera's empty-room depth (docs/events.md, *Camera references*): a 16-bit PNG in mm.
camera_references = Table(
    "camera_references",
    metadata,
    Column("camera_id", String(NAME_LEN), primary_key=True),
    Column("png", LargeBinary, nullable=False),
    Column("height", Integer, nullable=False),
    Column("width", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    # SQLite autoincrements only an INTEGER primary key
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column(
        "event_id",
        String(ID_LEN),
        ForeignKey("events.id", ondelete="CASCADE", name="fk_deliveries_event"),
        nullable=False,
    ),
    Column("destination", String(NAME_LEN), nullable=False),
    Column("kind", String(NAME_LEN), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("delivered_at", UtcDateTime, nullable=True),
    Index("ix_deliveries_due", "state", "destination", "next_attempt_at"),
    Index("ix_deliveries_event", "event_id", "destination", "created_at"),
    # the rules' cooldown and repeat lookups: a destination's recent alerts
    Index("ix_deliveries_recent", "destination", "created_at"),
)
