"""The event store on SQLite and on a real PostgreSQL: schema from empty, events, filters,
pagination, review, retention, cameras and the outbox written with the event."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from server.events.rules import AlertRules, RulesFile
from server.events.schema import REVISION, metadata
from server.events.store import (
    CLAIM,
    MIGRATIONS,
    CameraRecord,
    CursorError,
    EventFilter,
    EventStore,
    StoreError,
    _event_row,
    database_url,
)
from server.events.types import Alert, AlertHistory, EventRecord
from server.events.webhooks import new_secret

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(n: int, **fields) -> EventRecord:
    values = dict(
        id=f"ev-{n:03d}",
        camera_id=f"cam-{n % 2}",
        label=("falling down", "sit down", "stand up")[n % 3],
        class_id=n % 3 + 1,
        confidence=round(0.3 + 0.05 * n, 3),
        start=T0 + timedelta(seconds=10 * (n // 2)),  # pairs share a start: id breaks the tie
        end=None if n % 4 == 0 else T0 + timedelta(seconds=10 * (n // 2) + 5),
        model_name="tiny",
        model_version="1",
    )
    return EventRecord(**{**values, **fields})


@pytest.fixture
def store(store_url):
    s = EventStore.open(database_url(store_url))
    yield s
    s.close()


def upgrade(url: str, revision: str) -> None:
    """Run alembic's migrations on the database at `url`, up to `revision`."""
    engine = sa.create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def schema_of(url: str) -> dict[str, Any]:
    """Each table's columns, keys, indexes and constraints, as the database describes them
    (columns by name: a migration that adds one puts it last)."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        db = sa.inspect(connection)
        schema = {
            table: (
                sorted((c["name"], str(c["type"]), c["nullable"], c["default"])
                       for c in db.get_columns(table)),
                db.get_pk_constraint(table),
                sorted(db.get_foreign_keys(table), key=lambda k: k["constrained_columns"]),
                sorted(db.get_indexes(table), key=lambda i: i["name"]),
                sorted(db.get_unique_constraints(table), key=lambda c: c["column_names"]),
                sorted(db.get_check_constraints(table), key=lambda c: c["sqltext"]),
            )
            for table in db.get_table_names()
        }  # fmt: skip
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    engine.dispose()
    return {"tables": schema, "version": version, "diff from schema.py": diff}


def test_an_empty_database_gets_the_schema_the_migrations_make(store_url, request, tmp_path):
    url = database_url(store_url)
    other = "postgres" if url.startswith("postgresql") else None
    migrated = database_url(
        request.getfixturevalue(other).empty_database() if other else str(tmp_path / "m.db")
    )
    upgrade(migrated, "head")
    by_migrations = schema_of(migrated)
    assert by_migrations["diff from schema.py"] == []  # exactly server/events/schema.py's
    assert by_migrations["version"] == [(REVISION,)]
    store = EventStore.open(url)  # an empty database: made without the migrations
    store.add_event(record(1), T0)
    store.close()
    assert schema_of(url) == by_migrations
    again = EventStore.open(url)  # a second start migrates nothing and keeps the data
    assert again.get("ev-001") == record(1)
    again.close()


def test_the_schemas_revision_is_alembics_head():
    assert REVISION == ScriptDirectory(str(MIGRATIONS)).get_current_head()


def test_a_database_of_a_newer_schema_is_refused_with_its_url(store_url):
    url = database_url(store_url)
    EventStore.open(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match="9999"):
        EventStore.open(url)


def test_an_unreachable_database_is_a_store_error_without_the_password():
    with pytest.raises(StoreError) as e:
        EventStore.open(database_url("postgresql://gd:s3cret@/nodb?host=/nonexistent&port=1"))
    assert "s3cret" not in str(e.value) and "***" in str(e.value)


def test_an_event_starts_runs_and_ends(store):
    start = store.add_event(record(0), T0)
    assert start.change == "started" and store.get("ev-000") == record(0)
    end_at = T0 + timedelta(seconds=3)
    running = store.update_event("ev-000", T0, confidence=0.61)
    assert running.change == "updated" and running.event.confidence == 0.61
    ended = store.update_event(
        "ev-000", end_at, confidence=0.55, label="sit down", class_id=2, end=end_at
    )
    assert ended.change == "ended"
    expected = dataclasses.replace(
        record(0), confidence=0.55, label="sit down", class_id=2, end=end_at
    )
    assert ended.event == expected == store.get("ev-000")
    assert store.get("no-such-event") is None
    assert store.update_event("no-such-event", T0, confidence=0.5) is None


def test_review_records_who_when_and_what(store):
    store.add_event(record(1), T0)
    later = T0 + timedelta(minutes=5)
    change = store.review("ev-001", later, "nurse-station", "acknowledged", "checked", keep=True)
    assert change.change == "reviewed"
    assert change.event == dataclasses.replace(
        record(1),
        review="acknowledged",
        reviewed_by="nurse-station",
        reviewed_at=later,
        note="checked",
        keep=True,
    )
    # a note alone keeps the decision
    noted = store.review("ev-001", later, "night-shift", note="again")
    assert noted.event.review == "acknowledged" and noted.event.note == "again"
    assert store.review("no-such-event", later, "x", "acknowledged") is None


FILTERS = [
    EventFilter(),
    EventFilter(camera_id="cam-1"),
    EventFilter(label="sit down"),
    EventFilter(state="open"),
    EventFilter(state="ended", camera_id="cam-0"),
    EventFilter(review="false_positive"),
    EventFilter(since=T0 + timedelta(seconds=20), until=T0 + timedelta(seconds=50)),
    EventFilter(min_confidence=0.65),
]


def matches(r: EventRecord, f: EventFilter) -> bool:
    """The filters' meaning, said again in Python."""
    return (
        (f.camera_id is None or r.camera_id == f.camera_id)
        and (f.label is None or r.label == f.label)
        and (f.state is None or (r.end is None) == (f.state == "open"))
        and (f.review is None or r.review == f.review)
        and (f.since is None or r.start >= f.since)
        and (f.until is None or r.start < f.until)
        and (f.min_confidence is None or r.confidence >= f.min_confidence)
    )


def test_filters_and_pages_list_each_matching_event_once_in_a_stable_order(store):
    records = [record(n) for n in range(12)]
    for r in records:
        store.add_event(r, T0)
    for n in (3, 7):
        store.review(f"ev-{n:03d}", T0, "x", "false_positive")
    records = [store.get(r.id) for r in records]
    newest_first = sorted(records, key=lambda r: (r.start, r.id), reverse=True)
    for f in FILTERS:
        expected = [r for r in newest_first if matches(r, f)]
        assert expected, f  # every filter selects something, and (below) not everything
        assert len(expected) < len(records) or f == EventFilter()
        for limit in (1, 3, 100):
            listed, cursor, pages = [], None, 0
            while True:
                page = store.list_events(f, limit, cursor)
                listed += page.events
                pages += 1
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            assert listed == expected, (f, limit)
            assert pages == -(-len(expected) // limit)


def test_an_event_added_between_pages_does_not_shift_the_listing(store):
    for n in range(6):
        store.add_event(record(n), T0)
    first = store.list_events(EventFilter(), 2)
    store.add_event(record(99, start=T0 + timedelta(hours=1)), T0)  # newer than all
    second = store.list_events(EventFilter(), 2, first.next_cursor)
    everything = store.list_events(EventFilter(), 100).events
    assert first.events + second.events == [r for r in everything if r.id != "ev-099"][:4]


@pytest.mark.parametrize("cursor", ["not-a-cursor", "W10", "WyJ4IiwgMV0"])
def test_a_foreign_cursor_is_refused(store, cursor):
    with pytest.raises(CursorError):
        store.list_events(EventFilter(), 10, cursor)


def test_retention_deletes_old_ended_events_but_not_kept_or_open_ones(store):
    old = T0 - timedelta(days=40)
    store.add_event(record(1, id="old-ended", start=old, end=old + timedelta(seconds=5)), T0)
    store.add_event(record(2, id="old-kept", start=old, end=old, keep=True), T0)
    store.add_event(record(3, id="old-open", start=old, end=None), T0)
    store.add_event(record(5, id="new-ended", start=T0, end=T0 + timedelta(seconds=1)), T0)
    assert store.delete_expired(T0 - timedelta(days=30)) == 1
    left = {r.id for r in store.list_events(EventFilter(), 100).events}
    assert left == {"old-kept", "old-open", "new-ended"}
    assert store.delete_expired(T0 - timedelta(days=30)) == 0


def test_cameras_are_upserted_and_keep_their_first_sighting(store):
    first = CameraRecord("door", T0, T0, True, 30.0, 10, 0, T0, "sit down", 0.4)
    store.save_cameras([first, CameraRecord("bed", T0, T0, True, 15.0, 0, 0)])
    later = T0 + timedelta(hours=1)
    store.save_cameras([CameraRecord("door", later, later, False, 29.5, 99, 3, later)])
    assert store.cameras() == [
        CameraRecord("bed", T0, T0, True, 15.0, 0, 0),
        CameraRecord("door", T0, later, False, 29.5, 99, 3, later),
    ]
    assert store.camera("door").first_seen == T0 and store.camera("nowhere") is None


@dataclasses.dataclass
class FallAlerts:
    """A small real alert policy: falls alert `destination` when they start, at most once per
    `cooldown` per camera (asked of the store's history); `broken` raises instead."""

    destination: str = "pager"
    cooldown: timedelta = timedelta(minutes=1)
    broken: bool = False

    def alerts_for(
        self, event: EventRecord, change: str, history: AlertHistory, now: datetime
    ) -> list[Alert]:
        if self.broken:
            raise RuntimeError("rules failed")
        if change != "started" or event.label != "falling down":
            return []
        last = history.last_alert_at(event.camera_id, event.label, self.destination)
        if last is not None and now - last < self.cooldown:
            return []
        return [Alert(self.destination, "alert.started", {"event": event.id})]


def test_alerts_are_written_to_the_outbox_with_their_event(store):
    store.policy = FallAlerts()
    store.add_event(record(0, id="fall-1"), T0)  # falling down on cam-0
    store.add_event(record(1, id="sit"), T0)  # not a fall
    store.add_event(record(0, id="fall-2"), T0 + timedelta(seconds=30))  # cooling down
    store.add_event(record(0, id="fall-3"), T0 + timedelta(seconds=61))
    due = store.due(["pager"], T0 + timedelta(minutes=2), 10)
    assert [(d.event_id, d.kind, d.payload, d.attempts) for d in due] == [
        ("fall-1", "alert.started", {"event": "fall-1"}, 0),
        ("fall-3", "alert.started", {"event": "fall-3"}, 0),
    ]
    assert [d.created_at for d in due] == [T0, T0 + timedelta(seconds=61)]


def test_an_event_whose_rules_fail_is_not_written_without_its_alerts(store):
    store.policy = FallAlerts(broken=True)
    with pytest.raises(RuntimeError):
        store.add_event(record(0), T0)
    assert store.get(record(0).id) is None  # one transaction: neither or both


def test_the_outbox_claims_due_rows_and_records_each_attempt(store):
    store.policy = FallAlerts(cooldown=timedelta(0))
    for n in range(3):
        # one camera each: a camera's later alert waits behind its earlier ones
        store.add_event(record(0, id=f"fall-{n}", camera_id=f"cam-{n}"), T0)
    assert store.due(["elsewhere"], T0, 10) == [] and store.due([], T0, 10) == []
    first = store.due(["pager"], T0, 2)
    assert [d.event_id for d in first] == ["fall-0", "fall-1"]  # oldest first, `limit` rows
    assert all(d.next_attempt_at == T0 + CLAIM for d in first)
    # claimed: another deliverer gets only the third until the claim runs out
    assert [d.event_id for d in store.due(["pager"], T0, 10)] == ["fall-2"]
    a, b = first
    store.delivered(a.id, T0 + timedelta(seconds=1), 200)
    store.retry(b.id, T0 + timedelta(seconds=5), "HTTP 503", 503)
    assert [d.event_id for d in store.due(["pager"], T0 + timedelta(seconds=4), 10)] == []
    again = store.due(["pager"], T0 + timedelta(seconds=5), 10)
    assert [(d.event_id, d.attempts, d.last_status) for d in again] == [("fall-1", 1, 503)]
    store.dead(b.id, T0 + timedelta(seconds=6), "gave up", None)
    log = {d.event_id: d for d in store.deliveries()}
    assert (log["fall-0"].state, log["fall-0"].delivered_at) == (
        "delivered",
        T0 + timedelta(seconds=1),
    )
    assert (log["fall-1"].state, log["fall-1"].attempts, log["fall-1"].last_error) == (
        "dead", 2, "gave up"
    )  # fmt: skip
    assert [d.event_id for d in store.deliveries("fall-1")] == ["fall-1"]
    # the claim of fall-2 ran out: it is due again
    assert [d.event_id for d in store.due(["pager"], T0 + CLAIM, 10)] == ["fall-2"]


def test_released_rows_are_due_again_when_said_without_an_attempt(store):
    store.policy = FallAlerts(cooldown=timedelta(0))
    for n in range(2):
        store.add_event(record(0, id=f"fall-{n}", camera_id=f"cam-{n}"), T0)
    a, b = store.due(["pager"], T0, 10)
    store.delivered(a.id, T0, 200)
    store.release([a.id, b.id], T0 + timedelta(seconds=2))  # a delivered row stays delivered
    assert store.due(["pager"], T0 + timedelta(seconds=1), 10) == []  # not before `at`
    again = store.due(["pager"], T0 + timedelta(seconds=2), 10)
    assert [(d.event_id, d.attempts) for d in again] == [("fall-1", 0)]  # long before CLAIM
    assert {d.event_id: d.state for d in store.deliveries()}["fall-0"] == "delivered"


def test_running_confidences_are_written_together_and_skip_deleted_events(store):
    for n in range(2):
        store.add_event(record(n, end=None), T0)
    changes = store.update_confidences({record(0).id: 0.25, "gone": 0.5, record(1).id: 0.75}, T0)
    assert [(c.change, c.event.id, c.event.confidence) for c in changes] == [
        ("updated", record(0).id, 0.25),
        ("updated", record(1).id, 0.75),
    ]
    assert store.get(record(1).id).confidence == 0.75


def test_retention_takes_an_events_deliveries_with_it(store):
    store.policy = FallAlerts()
    old = T0 - timedelta(days=40)
    store.add_event(record(0, id="old-fall", start=old, end=None), old)
    store.update_event("old-fall", old, end=old)
    assert len(store.deliveries()) == 1
    store.delete_expired(T0 - timedelta(days=30))
    assert store.deliveries() == []


def test_an_event_is_flagged_alerted_with_its_first_alert_and_the_filter_lists_those(store):
    store.policy = FallAlerts()
    started = store.add_event(record(0, id="fall", end=None), T0)
    quiet = store.add_event(record(1, id="sit", end=None), T0)
    assert (started.alerted, quiet.alerted) == (True, False)
    # later changes say so too, from the stored flag
    assert store.update_confidences({"fall": 0.9, "sit": 0.9}, T0)[0].alerted is True
    assert store.review("fall", T0, "nurse", "acknowledged").alerted is True
    alerted = store.list_events(EventFilter(alerted=True), 10)
    assert [e.id for e in alerted.events] == ["fall"] and alerted.alerted == {"fall"}
    assert [e.id for e in store.list_events(EventFilter(alerted=False), 10).events] == ["sit"]
    assert store.get_alerted("fall") == (store.get("fall"), True)
    assert store.get_alerted("sit")[1] is False and store.get_alerted("nothing") is None


def test_migration_0002_flags_the_events_that_have_deliveries(store_url):
    url = database_url(store_url)
    upgrade(url, "0001")  # a store of the first schema, with one alert owed
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for n in range(2):
            connection.execute(sa.insert(metadata.tables["events"]).values(_event_row(record(n))))
        connection.execute(
            sa.insert(metadata.tables["deliveries"]).values(
                event_id=record(1).id,
                destination="pager",
                kind="alert.started",
                payload={},
                state="delivered",
                attempts=1,
                next_attempt_at=T0,
                created_at=T0,
            )
        )
    engine.dispose()
    store = EventStore.open(url)
    assert [e.id for e in store.list_events(EventFilter(alerted=True), 10).events] == [record(1).id]
    assert store.get_alerted(record(0).id) == (record(0), False)
    store.close()


def two_pagers(phone_cooldown_s: float = 0.0) -> AlertRules:
    """Falls alert the pager, and the phone with its own cooldown."""
    rule = {"labels": ["falling down"], "min_confidence": 0.5}
    return AlertRules(
        RulesFile.model_validate({
            "destinations": {
                name: {"url": "http://127.0.0.1:9/", "secrets": [new_secret()]}
                for name in ("pager", "phone")
            },
            "rules": [
                {**rule, "name": "pager", "destinations": ["pager"]},
                {**rule, "name": "phone", "destinations": ["phone"],
                 "cooldown_s": phone_cooldown_s},
            ],
        })
    )  # fmt: skip


def sent(store) -> list[tuple[str, str, str]]:
    return [(d.event_id, d.destination, d.kind) for d in reversed(store.deliveries())]


def test_an_alerted_events_updates_owe_nothing_even_after_a_restart(store_url):
    url = database_url(store_url)
    store = EventStore.open(url, two_pagers())
    fall = record(0, id="fall", confidence=0.3, end=None)
    store.add_event(fall, T0)  # below the threshold: nothing yet
    store.update_confidences({"fall": 0.6}, T0 + timedelta(seconds=1))
    store.update_confidences({"fall": 0.7}, T0 + timedelta(seconds=2))
    store.close()
    store = EventStore.open(url, two_pagers())  # a new server forgets what it knew
    store.update_confidences({"fall": 0.8}, T0 + timedelta(seconds=3))
    store.update_event("fall", T0 + timedelta(seconds=4), end=T0 + timedelta(seconds=4))
    assert sent(store) == [
        ("fall", "pager", "alert.started"),
        ("fall", "phone", "alert.started"),
        ("fall", "pager", "alert.ended"),
        ("fall", "phone", "alert.ended"),
    ]
    store.close()


def test_a_destination_cooling_down_gets_an_open_events_alert_once_it_has_cooled(store):
    store.policy = two_pagers(phone_cooldown_s=60)
    store.add_event(record(0, id="earlier", confidence=0.9, end=T0), T0)  # alerts both
    later = T0 + timedelta(seconds=30)
    store.add_event(record(0, id="fall", start=later, end=None, confidence=0.9), later)
    store.update_confidences({"fall": 0.9}, T0 + timedelta(seconds=59))  # still cooling
    assert [s for s in sent(store) if s[0] == "fall"] == [("fall", "pager", "alert.started")]
    store.update_confidences({"fall": 0.9}, T0 + timedelta(seconds=60))  # cooled down
    store.update_confidences({"fall": 0.9}, T0 + timedelta(seconds=61))
    assert [s for s in sent(store) if s[0] == "fall"] == [
        ("fall", "pager", "alert.started"),
        ("fall", "phone", "alert.started"),
    ]
