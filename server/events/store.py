"""The event store: events, cameras and the alert outbox in SQLite (WAL) or PostgreSQL.

Synchronous SQLAlchemy 2 Core; callers on the event loop run its methods in a thread
(`server/events/service.py`). Opening migrates the database to the newest schema (Alembic,
`migrations/`), so a new file or an empty PostgreSQL database is ready on first start.

Every change of an event (`started`, `updated`, `ended`, `reviewed`) is handed to the
`AlertPolicy`, if any, in the same transaction that writes it; the `Alert`s it returns become
pending rows of the outbox (`deliveries`), so an event and what it owes commit together or
not at all. The store is also the rules' `AlertHistory` (inside that transaction) and the
deliverers' `Outbox` (server/events/types.py).
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib
import json
import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from server.events.rules import AlertRules
from server.events.schema import (
    REVISION,
    camera_references,
    cameras,
    deliveries,
    events,
    metadata,
)
from server.events.types import AlertPolicy, Delivery, EventRecord, Review

log = logging.getLogger("gd.server")
MIGRATIONS = Path(__file__).parent / "migrations"
# Two servers opening one PostgreSQL database at once migrate one after the other.
MIGRATION_LOCK = 0x6764_6576  # "gdev"
# Servers on one PostgreSQL database take due outbox rows one after the other: a camera's later
# row must not go out on one server while its earlier one is being sent by another.
OUTBOX_LOCK = 0x6764_6F62  # "gdob"
REPEAT_LOCK = 0x6764_7270  # "gdrp": two servers' repeat ticks one after the other
# How long `Outbox.due` holds the rows it hands out: no other deliverer (another server on the
# same database) takes them meanwhile; a deliverer that dies leaves them due again after it.
CLAIM = timedelta(seconds=60)
SQLITE_BUSY_TIMEOUT_S = 30.0
PG_CONNECT_TIMEOUT_S = 10  # an unreachable host fails in seconds, not the OS's minutes
# Store writes kept in memory while the database is away (`Backlog`); beyond, the oldest go.
BACKLOG_LIMIT = 10_000
T = TypeVar("T")

EventState = Literal["open", "ended"]
ChangeKind = Literal["started", "updated", "ended", "reviewed"]


class StoreError(Exception):
    """The store cannot be opened (a bad URL, an unreachable server, an unknown schema)."""


class StoreUnavailable(Exception):
    """The database did not answer or could not write just now; the call was not done."""


class CursorError(ValueError):
    """A pagination cursor this store did not make."""


@dataclass(frozen=True)
class CameraRecord:
    """A camera the server has seen, connected or not, as stored."""

    id: str
    first_seen: datetime
    last_seen: datetime
    connected: bool
    fps: float  # the rate its frames arrive at, in its own clock (hello's until measured)
    frames: int  # received in its current (or last) connection
    drops: int  # of those, dropped under load
    last_frame_at: datetime | None = None
    top_label: str | None = None  # the newest clip's most probable action
    top_score: float | None = None


@dataclass(frozen=True)
class ReferenceRecord:
    """A camera's empty-room depth as stored: a 16-bit single-channel PNG (mm) and its size."""

    camera_id: str
    png: bytes
    height: int
    width: int
    updated_at: datetime


@dataclass(frozen=True)
class EventFilter:
    """`GET /v1/events`' filters; None: any. `since` <= start < `until`."""

    camera_id: str | None = None
    label: str | None = None
    state: EventState | None = None
    review: Review | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_confidence: float | None = None
    alerted: bool | None = None  # the rules owed it an alert (the dashboard's alert queue)


@dataclass(frozen=True)
class Page:
    events: list[EventRecord]
    next_cursor: str | None  # None: this was the last page
    alerted: frozenset[str] = frozenset()  # the ids of those the rules owed an alert


@dataclass(frozen=True)
class Change:
    """One event change, as committed (what the live feed sends)."""

    change: ChangeKind
    event: EventRecord
    alerted: bool = False  # the rules owed the event an alert, by now


def database_url(value: str) -> str:
    """A SQLAlchemy URL from the setting: a URL as is (`postgresql://` uses psycopg 3), else
    a SQLite file path (its folder made)."""
    if "://" not in value:
        path = Path(value).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    try:
        url = make_url(value)
    except ArgumentError as e:
        raise StoreError(f"not a database URL: {e}") from None
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def make_engine(url: str) -> Engine:
    postgres = make_url(url).get_backend_name() == "postgresql"
    connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT_S} if postgres else {}
    # a ping before each transaction finds a PostgreSQL connection the server dropped; a
    # SQLite file's cannot drop, and the ping was a statement more per store call
    engine = create_engine(url, pool_pre_ping=postgres, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        _sqlite_setup(engine)
    return engine


def _sqlite_setup(engine: Engine) -> None:
    """WAL (readers never wait for the writer), foreign keys, and transactions begun by us:
    pysqlite's own BEGIN comes late, so a read-then-write transaction could fail at the write
    ("database is locked") instead of waiting its turn. Writers BEGIN IMMEDIATE (take the
    write lock first, waiting up to the busy timeout); readers a plain BEGIN."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # in WAL: durable across process kills
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        readonly = connection.get_execution_options().get("gd_readonly", False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema (from empty: create it), in one transaction.

    Alembic runs only when the database holds an older schema: its import is a fifth of the
    server's start-up, and nearly every start finds the schema current or the database empty.
    An empty one gets server/events/schema.py's tables and the newest revision, as alembic's
    migrations would make them (tests/server/events/test_store.py compares the two); anything
    else (older, newer than the code, tables without a revision) is alembic's to do or to
    refuse."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        revisions = _revisions(connection)
        if revisions == [REVISION]:
            return
        if not revisions and not _has_our_tables(connection):
            _create(connection, REVISION)
            return
        from alembic import command
        from alembic.config import Config

        # alembic logs each of its plugins at INFO; "Running upgrade ..." stays
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _revisions(connection: Connection) -> list[str]:
    """The revisions alembic recorded in the database (none in an empty one)."""
    if not inspect(connection).has_table("alembic_version"):
        return []
    return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


def _has_our_tables(connection: Connection) -> bool:
    return bool(set(inspect(connection).get_table_names()) & set(metadata.tables))


def _create(connection: Connection, revision: str) -> None:
    """The newest schema in an empty database, and its revision in alembic's table (alembic's
    own layout of it: a later migration finds what it expects)."""
    metadata.create_all(connection)
    version = Table(
        "alembic_version",
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
    )
    version.create(connection)
    connection.execute(version.insert().values(version_num=revision))


def unavailable(error: BaseException) -> bool:
    """Whether a store call failed because the database is away or cannot write (server
    stopped, connection lost, disk full or read-only, locked too long), not because of the
    call itself: the same call would succeed later."""
    if isinstance(error, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def cause(error: BaseException) -> str:
    """An error's first line, without SQLAlchemy's statement and background link."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        error = error.orig
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# The statements of the event path's hot calls, built once: building one (SQLAlchemy's
# coercions, its cache key) cost about as much as running it (docs/results.md).
_SET_CONFIDENCE = (  # many events' running confidences in one executemany (`save_flush`)
    update(events)
    .where(events.c.id == bindparam("b_id"))
    .values(confidence=bindparam("b_confidence"))
)
_EVENTS_BY_ID = select(events).where(events.c.id.in_(bindparam("b_ids", expanding=True)))
_INSERT_EVENT = insert(events)
_INSERT_DELIVERIES = insert(deliveries)
_SET_ALERTED = update(events).where(events.c.id == bindparam("b_id")).values(alerted=True)
_OPEN_EVENTS = (
    select(events)
    .where(events.c.camera_id == bindparam("b_camera"), events.c.end_at.is_(None))
    .order_by(events.c.start_at, events.c.id)
)


def _due_query() -> Any:
    """`EventStore.due`'s query: the pending rows due at `b_now` for `b_destinations`, but
    none whose camera has an earlier pending row to its destination that is not due."""
    d = deliveries.c
    earlier, earlier_event = deliveries.alias("earlier"), events.alias("earlier_event")
    now = bindparam("b_now", type_=d.next_attempt_at.type)
    waits = exists().where(
        earlier.c.state == "pending",
        earlier.c.destination == d.destination,
        earlier.c.id < d.id,
        earlier.c.next_attempt_at > now,
        earlier_event.c.id == earlier.c.event_id,
        earlier_event.c.camera_id == events.c.camera_id,
    )
    return (
        select(deliveries)
        .join(events, events.c.id == d.event_id)
        .where(
            d.state == "pending",
            d.destination.in_(bindparam("b_destinations", expanding=True)),
            d.next_attempt_at <= now,
            ~waits,
        )
        .order_by(d.id)
        .limit(bindparam("b_limit", type_=Integer))
    )


_DUE = _due_query()
_ANY_DUE = _DUE.with_only_columns(deliveries.c.id)


@functools.cache
def _update_statement(columns: tuple[str, ...]) -> Any:
    """An event's update of these columns (bound as `_bound` names them), returning its row;
    built once."""
    values: dict[str, Any] = {c: bindparam(f"b_{c}") for c in columns}
    where = events.c.id == bindparam("b_id")
    return update(events).where(where).values(**values).returning(*events.c)


@functools.cache
def _mark_statement(columns: tuple[str, ...]) -> Any:
    """`EventStore._mark`'s update of these columns (bound as `_bound` names them), built
    once."""
    d = deliveries.c
    return (
        update(deliveries)
        .where(d.id == bindparam("b_id"))
        .values(attempts=d.attempts + 1, **{c: bindparam(f"b_{c}") for c in columns})
    )


def _bound(values: Mapping[str, Any]) -> dict[str, Any]:
    """Column values as a built statement's parameters (a column's own name is SQLAlchemy's
    in a SET clause)."""
    return {f"b_{k}": v for k, v in values.items()}


# a destination's newest alert for a camera and label (`_History`), since a time, of an event
_CAMERA_ALERTS = (
    select(func.max(deliveries.c.created_at))
    .join(events, events.c.id == deliveries.c.event_id)
    .where(events.c.camera_id == bindparam("b_camera"), events.c.label == bindparam("b_label"))
    .where(deliveries.c.destination == bindparam("b_destination"))
)
_CAMERA_ALERTS_SINCE = _CAMERA_ALERTS.where(deliveries.c.created_at >= bindparam("b_since"))
_OWN_ALERTS = select(func.max(deliveries.c.created_at)).where(
    deliveries.c.event_id == bindparam("b_event"),
    deliveries.c.destination == bindparam("b_destination"),
)


class _History:
    """`AlertHistory` inside the transaction that writes `event`.

    With a `lookback` (the rules' longest cooldown or repeat interval: `AlertRules.lookback`),
    a camera's alerts are looked up only that far back, plus `event`'s own at any age: all
    that the rules' answer depends on (a cooldown or repeat interval measured from an alert
    older than the longest one has passed either way; whether this event alerted is its own
    rows), found through indexes whatever the length of the history. Without one: all. A
    `new` event (inserted in this transaction) has no alerts of its own yet, and a lookback of
    zero (no cooldown, no repeat) needs no other event's: neither is looked up."""

    def __init__(
        self,
        connection: Connection,
        event: EventRecord,
        now: datetime,
        lookback: timedelta | None,
        new: bool = False,
    ) -> None:
        self.connection, self.event, self.now, self.lookback = connection, event, now, lookback
        self.new = new

    def last_alert_at(self, camera_id: str, label: str, destination: str) -> datetime | None:
        keys = {"b_camera": camera_id, "b_label": label, "b_destination": destination}
        if self.lookback is None:
            return self.connection.execute(_CAMERA_ALERTS, keys).scalar()
        found = []
        if self.lookback > timedelta(0):
            since = {**keys, "b_since": self.now - self.lookback}
            found.append(self.connection.execute(_CAMERA_ALERTS_SINCE, since))
        if (camera_id, label) == (self.event.camera_id, self.event.label) and not self.new:
            own = {"b_event": self.event.id, "b_destination": destination}
            found.append(self.connection.execute(_OWN_ALERTS, own))
        return max((t for r in found if (t := r.scalar()) is not None), default=None)


class EventStore:
    """Thread-safe: every method takes its own connection from the engine's pool."""

    def __init__(self, engine: Engine, policy: AlertPolicy | None = None) -> None:
        self.engine, self.policy = engine, policy
        # Open events whose updates owe no alert until they end (they alerted every
        # destination a rule gives them, or no rule applies): their running confidence is
        # written without asking the rules. Only ever a shortcut: forgotten on a restart,
        # the rules are asked again (and answer from the database). `_checked`: open events
        # whose alerts were looked at once; they are looked at again only when they alert.
        # The writer's thread only, changed after a commit.
        self._quiet: set[str] = set()
        self._checked: set[str] = set()
        self._upsert: Any = None  # `_camera_upsert`'s statement

    @classmethod
    def open(cls, url: str, policy: AlertPolicy | None = None) -> EventStore:
        """Connect and migrate; a `StoreError` names the (password-less) URL and the cause."""
        try:
            engine = make_engine(url)
        except (ArgumentError, ImportError) as e:
            raise StoreError(f"event store {redacted(url)}: {e}") from None
        try:
            migrate(engine)
            # a database already at the newest schema migrates without writing: prove that
            # it can (a read-only file or a full disk fails here, at start, not on the first
            # event)
            with engine.begin() as connection:
                connection.execute(text("UPDATE alembic_version SET version_num = version_num"))
        except Exception as e:  # alembic raises its own errors too (an unknown revision)
            engine.dispose()
            raise StoreError(f"event store {redacted(url)}: {cause(e)}") from e
        return cls(engine, policy)

    def ping(self) -> None:
        """A round trip to the database; raises what the driver raises when it is away."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            connection.execution_options(gd_readonly=True)
            with connection.begin():
                yield connection

    # --- events --------------------------------------------------------------------------

    def add_event(self, record: EventRecord, now: datetime) -> Change:
        """A new event (`started`, or `ended` if it comes already ended)."""
        with self._write() as connection:
            connection.execute(_INSERT_EVENT, _event_row(record))
            change: ChangeKind = "started" if record.end is None else "ended"
            alerted, quiet = self._changed(connection, record, change, now, new=True)
        self._remember(record, quiet)
        return Change(change, record, alerted)

    def update_event(
        self,
        event_id: str,
        now: datetime,
        *,
        confidence: float | None = None,
        label: str | None = None,
        class_id: int | None = None,
        end: datetime | None = None,
    ) -> Change | None:
        """Running confidence (`updated`) or the end with the final label and confidence
        (`ended`); None if the event is unknown (deleted meanwhile)."""
        values: dict[str, Any] = {"confidence": confidence, "label": label, "class_id": class_id}
        values = {k: v for k, v in values.items() if v is not None}
        if end is not None:
            values["end_at"] = end
        change: ChangeKind = "ended" if end is not None else "updated"
        return self._update(event_id, values, change, now)

    def review(
        self,
        event_id: str,
        now: datetime,
        by: str,
        review: Review | None = None,
        note: str | None = None,
        keep: bool | None = None,
    ) -> Change | None:
        """Acknowledge or mark false positive (`review`), add a note, keep forever; the
        reviewer and the time are recorded. None if the event is unknown."""
        values: dict[str, Any] = {"reviewed_by": by, "reviewed_at": now}
        if review is not None:
            values["review"] = review
        if note is not None:
            values["note"] = note
        if keep is not None:
            values["keep"] = keep
        return self._update(event_id, values, "reviewed", now)

    def update_confidences(self, confidences: Mapping[str, float], now: datetime) -> list[Change]:
        """Running confidences of open events (`updated`), a flush's worth in one transaction;
        events deleted meanwhile are left out."""
        return [c for c in self.save_flush((), confidences, now) if isinstance(c, Change)]

    def save_flush(
        self, cameras: Collection[CameraRecord], confidences: Mapping[str, float], now: datetime
    ) -> list[Change | CameraRecord]:
        """A recorder's flush in one transaction: running confidences of open events
        (`updated`; events deleted meanwhile are left out) and camera states (`save_cameras`).
        Returns what was written, the changes in the order of `confidences`, then the cameras.

        The events that owe no alert until they end (`_quiet`, the usual case) are written by
        one statement for all of them and read back by one, not one each: per statement,
        SQLAlchemy's Python costs more than SQLite's write, and it holds the GIL that the
        server's event loop needs (docs/results.md, the event path's cost)."""
        # without an alert policy every update owes nothing
        quiet = {i for i in confidences if self.policy is None or i in self._quiet}
        done: dict[str, tuple[Change, bool | None]] = {}
        with self._write() as connection:
            if quiet:
                rows = [{"b_id": i, "b_confidence": confidences[i]} for i in quiet]
                connection.execute(_SET_CONFIDENCE, rows)
                for row in connection.execute(_EVENTS_BY_ID, {"b_ids": list(quiet)}):
                    done[row.id] = Change("updated", _event(row), row.alerted), True
            for event_id, c in confidences.items():
                if event_id not in quiet:
                    d = self._update_in(connection, event_id, {"confidence": c}, "updated", now)
                    if d is not None:
                        done[event_id] = d
            if cameras:
                connection.execute(self._camera_upsert(), [_camera_row(r) for r in cameras])
        changes = [done[i] for i in confidences if i in done]
        for change, quiet_now in changes:
            self._remember(change.event, quiet_now)
        return [*(change for change, _ in changes), *cameras]

    def _update(
        self, event_id: str, values: dict[str, Any], change: ChangeKind, now: datetime
    ) -> Change | None:
        with self._write() as connection:
            done = self._update_in(connection, event_id, values, change, now)
        if done is None:
            return None
        self._remember(done[0].event, done[1])
        return done[0]

    def _update_in(
        self,
        connection: Connection,
        event_id: str,
        values: dict[str, Any],
        change: ChangeKind,
        now: datetime,
    ) -> tuple[Change, bool | None] | None:
        """The change and, as `_changed` says, whether the event is now quiet."""
        statement = _update_statement(tuple(sorted(values)))
        row = connection.execute(statement, {"b_id": event_id, **_bound(values)}).first()
        if row is None:
            return None
        record = _event(row)
        if change == "updated" and event_id in self._quiet:
            return Change(change, record, row.alerted), True  # owes nothing until it ends
        alerted, quiet = self._changed(connection, record, change, now, alerted=row.alerted)
        return Change(change, record, alerted or row.alerted), quiet

    def _changed(
        self,
        connection: Connection,
        record: EventRecord,
        change: str,
        now: datetime,
        new: bool = False,
        alerted: bool = False,
    ) -> tuple[bool, bool | None]:
        """The alerts the rules owe for this change, into the outbox, in this transaction
        (and the event marked `alerted`, unless it is already). `new`: the event was inserted
        in this transaction. Returns whether it owed any, and whether the open event's updates
        now owe nothing until it ends (None: not looked at; `_remember`)."""
        if self.policy is None:
            return False, None
        lookback = self.policy.lookback if isinstance(self.policy, AlertRules) else None
        history = _History(connection, record, now, lookback, new)
        alerts = self.policy.alerts_for(record, change, history, now)
        if alerts and not alerted:
            connection.execute(_SET_ALERTED, {"b_id": record.id})
        if alerts:
            connection.execute(
                _INSERT_DELIVERIES,
                [
                    {
                        "event_id": record.id,
                        "destination": a.destination,
                        "kind": a.kind,
                        "payload": a.payload,
                        "state": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                    for a in alerts
                ],
            )
        if (
            not isinstance(self.policy, AlertRules)
            or record.end is not None
            or change not in ("started", "updated")
            or (not alerts and record.id in self._checked)
        ):
            return bool(alerts), None
        wanted = self.policy.destinations_for(record.camera_id, record.label)
        sent = {a.destination for a in alerts}
        if not wanted <= sent:  # alerted before (another server, before a restart)?
            d = deliveries.c
            query = select(d.destination).where(d.event_id == record.id).distinct()
            sent |= set(connection.execute(query).scalars())
        return bool(alerts), wanted <= sent

    def _remember(self, record: EventRecord, quiet: bool | None) -> None:
        """After the commit: whether the open event owes nothing until it ends (`_quiet`);
        an ended event is forgotten."""
        if record.end is not None:
            self._quiet.discard(record.id)
            self._checked.discard(record.id)
        elif quiet is not None:
            self._checked.add(record.id)
            if quiet:
                self._quiet.add(record.id)

    def repeat_alerts(self, since: datetime, now: datetime) -> int:
        """Offer every event not yet reviewed that started at or after `since` to the rules
        again (`repeat`: alerts repeat until acknowledged); how many were offered."""
        if self.policy is None:
            return 0
        with self._write() as connection:
            if connection.dialect.name == "postgresql":  # the second sees the first's repeats
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({REPEAT_LOCK})")
            query = select(events).where(events.c.review == "new", events.c.start_at >= since)
            rows = connection.execute(query).all()
            for row in rows:
                self._changed(connection, _event(row), "repeat", now)
        return len(rows)

    def get(self, event_id: str) -> EventRecord | None:
        with self._read() as connection:
            return self._get(connection, event_id)

    def get_alerted(self, event_id: str) -> tuple[EventRecord, bool] | None:
        """The event and whether the rules owed it an alert; None if unknown."""
        with self._read() as connection:
            row = connection.execute(select(events).where(events.c.id == event_id)).first()
        return None if row is None else (_event(row), row.alerted)

    def _get(self, connection: Connection, event_id: str) -> EventRecord | None:
        row = connection.execute(select(events).where(events.c.id == event_id)).first()
        return None if row is None else _event(row)

    def open_events(self, camera_id: str) -> list[EventRecord]:
        """The camera's events without an end, oldest first."""
        with self._read() as connection:
            return [
                _event(row) for row in connection.execute(_OPEN_EVENTS, {"b_camera": camera_id})
            ]

    def list_events(self, where: EventFilter, limit: int, cursor: str | None = None) -> Page:
        """Newest first (start, then id: a stable order); `cursor` continues a listing."""
        c = events.c
        conditions = []
        if where.camera_id is not None:
            conditions.append(c.camera_id == where.camera_id)
        if where.label is not None:
            conditions.append(c.label == where.label)
        if where.state is not None:
            conditions.append(c.end_at.is_(None) if where.state == "open" else c.end_at.isnot(None))
        if where.review is not None:
            conditions.append(c.review == where.review)
        if where.since is not None:
            conditions.append(c.start_at >= where.since)
        if where.until is not None:
            conditions.append(c.start_at < where.until)
        if where.min_confidence is not None:
            conditions.append(c.confidence >= where.min_confidence)
        if where.alerted is not None:
            conditions.append(c.alerted == where.alerted)
        if cursor is not None:
            start, event_id = decode_cursor(cursor)
            conditions.append(or_(c.start_at < start, and_(c.start_at == start, c.id < event_id)))
        query = (
            select(events)
            .where(*conditions)
            .order_by(c.start_at.desc(), c.id.desc())
            .limit(limit + 1)
        )
        with self._read() as connection:
            rows = connection.execute(query).all()
        more = len(rows) > limit
        records = [_event(row) for row in rows[:limit]]
        alerted = frozenset(row.id for row in rows[:limit] if row.alerted)
        last = records[-1] if more else None
        cursor = None if last is None else encode_cursor(last.start, last.id)
        return Page(records, cursor, alerted)

    def delete_expired(self, before: datetime) -> int:
        """Retention: delete ended events that started before `before`, except those kept
        (and, with them, their deliveries). Returns how many events went."""
        expired = and_(events.c.start_at < before, events.c.end_at.isnot(None), ~events.c.keep)
        with self._write() as connection:
            ids = select(events.c.id).where(expired)
            # explicitly, not only by the foreign key: a SQLite opened elsewhere may lack it
            connection.execute(delete(deliveries).where(deliveries.c.event_id.in_(ids)))
            return connection.execute(delete(events).where(expired)).rowcount

    # --- cameras -------------------------------------------------------------------------

    def save_cameras(self, records: Iterable[CameraRecord]) -> None:
        """Insert or update; a camera's `first_seen` stays its first."""
        rows = [_camera_row(r) for r in records]
        if not rows:
            return
        with self._write() as connection:
            connection.execute(self._camera_upsert(), rows)

    def _insert(self, table: Table) -> Any:
        """The database's own INSERT, which has ON CONFLICT. Its dialect's module is the one
        the engine loaded: a SQLite store never imports PostgreSQL's (and its drivers')."""
        dialect = importlib.import_module(f"sqlalchemy.dialects.{self.engine.dialect.name}")
        return dialect.insert(table)

    def _camera_upsert(self) -> Any:
        """The insert-or-update of camera rows, built once (building it cost more than
        running it)."""
        if self._upsert is None:
            statement = self._insert(cameras)
            kept = {"id", "first_seen"}
            self._upsert = statement.on_conflict_do_update(
                index_elements=[cameras.c.id],
                set_={c.name: statement.excluded[c.name] for c in cameras.c if c.name not in kept},
            )
        return self._upsert

    def cameras(self) -> list[CameraRecord]:
        with self._read() as connection:
            rows = connection.execute(select(cameras).order_by(cameras.c.id))
            return [CameraRecord(**row._mapping) for row in rows]

    def camera(self, camera_id: str) -> CameraRecord | None:
        with self._read() as connection:
            row = connection.execute(select(cameras).where(cameras.c.id == camera_id)).first()
        return None if row is None else CameraRecord(**row._mapping)

    # --- camera references ---------------------------------------------------------------

    def put_reference(self, record: ReferenceRecord) -> None:
        """Insert or replace the camera's reference."""
        statement = self._insert(camera_references).values(asdict(record))
        statement = statement.on_conflict_do_update(
            index_elements=[camera_references.c.camera_id],
            set_={c.name: statement.excluded[c.name] for c in camera_references.c},
        )
        with self._write() as connection:
            connection.execute(statement)

    def references(self) -> list[ReferenceRecord]:
        """Every camera's reference, by camera id."""
        query = select(camera_references).order_by(camera_references.c.camera_id)
        with self._read() as connection:
            return [ReferenceRecord(**row._mapping) for row in connection.execute(query)]

    def delete_reference(self, camera_id: str) -> bool:
        """Whether the camera had a reference (it has none now)."""
        where = camera_references.c.camera_id == camera_id
        with self._write() as connection:
            return connection.execute(delete(camera_references).where(where)).rowcount > 0

    # --- the outbox (types.Outbox) -------------------------------------------------------

    def due(self, destinations: Collection[str], now: datetime, limit: int) -> list[Delivery]:
        """Pending rows for these destinations whose next attempt is due, oldest first; they
        are claimed for `CLAIM` (their next attempt moves there) until marked.

        In order per camera and destination: a row waits while an earlier pending row of its
        camera to its destination is not due (backing off, or claimed by a deliverer), so a
        receiver never gets a camera's later alert before an earlier one that is owed."""
        if not destinations:
            return []
        d = deliveries.c
        keys = {"b_destinations": list(destinations), "b_now": now, "b_limit": limit}
        with self._read() as connection:  # the usual answer, nothing due, needs no write lock
            if connection.execute(_ANY_DUE, keys).first() is None:
                return []
        with self._write() as connection:
            if connection.dialect.name == "postgresql":  # SQLite: one writer at a time anyway
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({OUTBOX_LOCK})")
            rows = [_delivery(row) for row in connection.execute(_DUE, keys)]
            if rows:
                connection.execute(
                    update(deliveries)
                    .where(d.id.in_([r.id for r in rows]))
                    .values(next_attempt_at=now + CLAIM)
                )
        return [replace(r, next_attempt_at=now + CLAIM) for r in rows]

    def delivered(self, delivery_id: int, now: datetime, status: int | None) -> None:
        self._mark(delivery_id, state="delivered", delivered_at=now, last_status=status)

    def retry(self, delivery_id: int, at: datetime, error: str, status: int | None) -> None:
        self._mark(delivery_id, next_attempt_at=at, last_error=error, last_status=status)

    def dead(self, delivery_id: int, now: datetime, error: str, status: int | None) -> None:
        self._mark(delivery_id, state="dead", last_error=error, last_status=status)

    def release(self, delivery_ids: Collection[int], at: datetime) -> None:
        if not delivery_ids:
            return
        d = deliveries.c
        with self._write() as connection:
            connection.execute(
                update(deliveries)
                .where(d.id.in_(list(delivery_ids)), d.state == "pending")
                .values(next_attempt_at=at)
            )

    def _mark(self, delivery_id: int, **values: Any) -> None:
        """One attempt's outcome (each mark counts one attempt)."""
        statement = _mark_statement(tuple(sorted(values)))
        with self._write() as connection:
            connection.execute(statement, {"b_id": delivery_id, **_bound(values)})

    def deliveries(self, event_id: str | None = None, limit: int = 100) -> list[Delivery]:
        """The delivery log, newest first; one event's when `event_id` is given."""
        query = select(deliveries).order_by(deliveries.c.id.desc()).limit(limit)
        if event_id is not None:
            query = query.where(deliveries.c.event_id == event_id)
        with self._read() as connection:
            return [_delivery(row) for row in connection.execute(query)]

    def delivery_log(
        self,
        limit: int,
        before_id: int | None = None,
        event_id: str | None = None,
        destination: str | None = None,
        state: str | None = None,
    ) -> list[Delivery]:
        """`GET /v1/deliveries`: newest first (by id), filtered (None: any); `before_id`
        continues a listing after the row with that id."""
        d = deliveries.c
        wanted = ((d.event_id, event_id), (d.destination, destination), (d.state, state))
        conditions = [column == value for column, value in wanted if value is not None]
        if before_id is not None:
            conditions.append(d.id < before_id)
        query = select(deliveries).where(*conditions).order_by(d.id.desc()).limit(limit)
        with self._read() as connection:
            return [_delivery(row) for row in connection.execute(query)]

    # --- camera references, as other servers changed them (server/events/references.py) ----

    def reference(self, camera_id: str) -> ReferenceRecord | None:
        """The camera's reference; None if it has none."""
        where = camera_references.c.camera_id == camera_id
        with self._read() as connection:
            row = connection.execute(select(camera_references).where(where)).first()
        return None if row is None else ReferenceRecord(**row._mapping)

    def reference_versions(self) -> dict[str, datetime]:
        """Each stored reference's `updated_at`, by camera id: what changed, without the PNGs."""
        query = select(camera_references.c.camera_id, camera_references.c.updated_at)
        with self._read() as connection:
            return {row.camera_id: row.updated_at for row in connection.execute(query)}


class Backlog:
    """Store calls that failed because the database was away (`unavailable`), kept in order
    and run again, in that order, when it answers (`retry`): streams go on while the database
    is stopped, full or read-only, and their events are written when it returns. At most
    `limit` calls are kept; beyond, the oldest is dropped (counted in `dropped`, logged).

    For one writer thread (the events service's); `problem`, `since`, `kept` and `dropped`
    may be read from any thread. `publish` gets what each kept call returns once it has run.
    """

    def __init__(
        self,
        publish: Callable[[Any], None],
        clock: Callable[[], datetime],
        limit: int = BACKLOG_LIMIT,
    ) -> None:
        self.publish, self.clock, self.limit = publish, clock, limit
        self.calls: deque[Callable[[], Any]] = deque()
        self.dropped = 0  # since the server started
        self.problem: str | None = None  # why the database is unavailable; None: it answers
        self.since: datetime | None = None  # when it stopped answering
        self._dropped_now = 0  # in this outage

    @property
    def kept(self) -> int:
        return len(self.calls)

    def run(self, call: Callable[[], T], keep: bool = True) -> T | None:
        """`call`, after the calls kept before it. While the database is unavailable, `call`
        is kept (and None returned) or, when not `keep`, StoreUnavailable is raised."""
        if self.calls:
            if keep:  # its turn comes in `retry`, after the older ones: no wait on a dead server
                self._keep(call)
                return None
            if not self.retry():
                raise StoreUnavailable(self.problem)
        try:
            result = call()
        except Exception as e:
            if not unavailable(e):
                raise
            self._away(e)
            if not keep:
                raise StoreUnavailable(self.problem) from e
            self._keep(call)
            return None
        self._back()
        return result

    def retry(self, check: Callable[[], None] | None = None) -> bool:
        """Run the kept calls in order, publishing what each returns, until the database
        fails again (that call and the rest stay kept); with none kept, `check` (a ping) tells
        whether the database answers. True when it did."""
        if not self.calls and check is not None:
            try:
                check()
            except Exception as e:
                if not unavailable(e):
                    raise
                self._away(e)
                return False
        while self.calls:
            try:
                result = self.calls[0]()
            except Exception as e:
                if unavailable(e):
                    self._away(e)
                    return False
                # the call itself is wrong: it would fail forever and hold up the others
                log.error("event store: a kept change failed and is dropped: %s", e, exc_info=e)
            else:
                self.publish(result)
            self.calls.popleft()
        self._back()
        return True

    def _keep(self, call: Callable[[], Any]) -> None:
        if len(self.calls) >= self.limit:
            self.calls.popleft()
            self.dropped += 1
            self._dropped_now += 1
            if self._dropped_now == 1:
                log.warning(
                    "event store: %d changes kept in memory, the most it keeps: dropping the "
                    "oldest from now on (the count is on /readyz)",
                    self.limit,
                )
        self.calls.append(call)

    def _away(self, error: BaseException) -> None:
        problem = cause(error)
        if self.problem is None:
            self.since = self.clock()
            log.warning(
                "event store unavailable (%s): keeping its changes in memory until it answers, "
                "streams go on",
                problem,
            )
        self.problem = problem

    def _back(self) -> None:
        if self.problem is not None:
            away = (self.clock() - self.since).total_seconds() if self.since is not None else 0.0
            log.warning(
                "event store available again after %.1f s: kept changes written, %d dropped",
                away,
                self._dropped_now,
            )
        self.problem, self.since, self._dropped_now = None, None, 0


def encode_cursor(start: datetime, event_id: str) -> str:
    raw = json.dumps([start.isoformat(), event_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        start, event_id = json.loads(raw)
        when = datetime.fromisoformat(start)
        if when.tzinfo is None or not isinstance(event_id, str):
            raise ValueError
        return when, event_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise CursorError("not a cursor of this listing (use next_cursor as given)") from None


def _event_row(r: EventRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "camera_id": r.camera_id,
        "label": r.label,
        "class_id": r.class_id,
        "confidence": r.confidence,
        "start_at": r.start,
        "end_at": r.end,
        "model_name": r.model_name,
        "model_version": r.model_version,
        "review": r.review,
        "reviewed_by": r.reviewed_by,
        "reviewed_at": r.reviewed_at,
        "note": r.note,
        "keep": r.keep,
    }


def _event(row: Any) -> EventRecord:
    m = dict(row._mapping)
    m["start"], m["end"] = m.pop("start_at"), m.pop("end_at")
    m.pop("alerted", None)  # the alert queue's filter, not part of the record
    return EventRecord(**m)


def _camera_row(r: CameraRecord) -> dict[str, Any]:
    return {f: getattr(r, f) for f in CameraRecord.__dataclass_fields__}


def _delivery(row: Any) -> Delivery:
    return Delivery(**row._mapping)
