"""A recorder's flush in one transaction (`EventStore.save_flush`), on SQLite and PostgreSQL:
camera states and running confidences together, the events that owe nothing written by a
number of statements that does not grow with them, the others still asked of the rules; and
what the rules' history is not asked when its answer cannot matter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from server.events.rules import AlertRules, RulesFile
from server.events.store import CameraRecord, Change, EventStore, database_url
from server.events.types import EventRecord
from server.events.webhooks import new_secret

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rules(cooldown_s: float = 0.0) -> AlertRules:
    """Falls of at least 0.5 alert the pager."""
    return AlertRules(
        RulesFile.model_validate({
            "destinations": {"pager": {"url": "http://127.0.0.1:9/", "secrets": [new_secret()]}},
            "rules": [{"name": "falls", "labels": ["fall"], "min_confidence": 0.5,
                       "cooldown_s": cooldown_s, "destinations": ["pager"]}],
        })
    )  # fmt: skip


def fall(n: int, confidence: float, start: datetime = T0) -> EventRecord:
    return EventRecord(f"fall-{n}", f"cam-{n}", "fall", 1, confidence, start, None, "tiny", "1")


def camera(n: int, at: datetime) -> CameraRecord:
    return CameraRecord(f"cam-{n}", T0, at, True, 10.0, n, 0, at, "fall", 0.75)


@pytest.fixture
def store(store_url):
    s = EventStore.open(database_url(store_url), rules())
    yield s
    s.close()


def statements(store: EventStore, call) -> list[str]:
    """The SQL statements `call()` sends the database (without SQLite's BEGIN)."""
    sent: list[str] = []

    def seen(connection, cursor, statement: str, *args) -> None:
        if not statement.startswith("BEGIN"):
            sent.append(statement)

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    return sent


def test_a_flush_writes_cameras_and_confidences_and_returns_them_in_order(store):
    for n in range(3):
        store.add_event(fall(n, 0.9), T0)  # alerted at once: owe nothing until they end
    later = T0 + timedelta(seconds=5)
    wanted = {"fall-2": 0.61, "gone": 0.5, "fall-0": 0.83}  # "gone": deleted meanwhile
    written = store.save_flush([camera(0, later), camera(1, later)], wanted, later)
    changes = [w for w in written if isinstance(w, Change)]
    assert [(c.change, c.event.id, c.event.confidence, c.alerted) for c in changes] == [
        ("updated", "fall-2", 0.61, True),
        ("updated", "fall-0", 0.83, True),
    ]
    assert changes[0].event == store.get("fall-2")  # the whole stored row, read back
    assert written[2:] == [camera(0, later), camera(1, later)]
    assert store.cameras() == [camera(0, later), camera(1, later)]
    assert store.get("fall-1").confidence == 0.9  # not in this flush: untouched


def test_the_statements_of_a_flush_do_not_grow_with_its_quiet_events(store):
    for n in range(40):
        store.add_event(fall(n, 0.9), T0)
    later = T0 + timedelta(seconds=5)

    def flush(k: int) -> int:
        confidences = {f"fall-{n}": 0.8 for n in range(k)}
        call = lambda: store.save_flush([camera(0, later)], confidences, later)  # noqa: E731
        return len(statements(store, call))

    assert flush(4) == flush(40) > 0
    assert all(store.get(f"fall-{n}").confidence == 0.8 for n in range(40))


def test_a_flush_still_asks_the_rules_about_an_event_that_may_alert(store):
    store.add_event(fall(0, 0.2), T0)  # below the minimum: owes an alert once it crosses it
    store.add_event(fall(1, 0.9), T0)  # alerted
    later = T0 + timedelta(seconds=5)
    changes = store.save_flush([], {"fall-0": 0.7, "fall-1": 0.8}, later)
    assert [(c.event.id, c.alerted) for c in changes] == [("fall-0", True), ("fall-1", True)]
    kinds = [(d.event_id, d.kind, d.created_at) for d in reversed(store.deliveries())]
    assert kinds == [("fall-1", "alert.started", T0), ("fall-0", "alert.started", later)]


def test_without_a_cooldown_another_events_alert_at_the_same_instant_silences_nothing(store):
    # one fall ends and the camera's next starts in the same tick (an injected clock's)
    first = fall(0, 0.9)
    store.add_event(first, T0)
    store.update_event(first.id, T0, end=T0)
    second = EventRecord("fall-again", "cam-0", "fall", 1, 0.9, T0, None, "tiny", "1")
    assert store.add_event(second, T0).alerted
    kinds = [(d.event_id, d.kind) for d in reversed(store.deliveries())]
    assert kinds == [
        ("fall-0", "alert.started"),
        ("fall-0", "alert.ended"),
        ("fall-again", "alert.started"),
    ]


def test_a_cooldown_still_silences_the_cameras_next_event(store_url):
    store = EventStore.open(database_url(store_url), rules(cooldown_s=60))
    store.add_event(fall(0, 0.9), T0)
    later = T0 + timedelta(seconds=30)
    second = EventRecord("fall-again", "cam-0", "fall", 1, 0.9, later, None, "tiny", "1")
    assert not store.add_event(second, later).alerted
    store.close()


def test_a_new_event_without_a_cooldown_alerts_without_reading_the_alert_history(store):
    record = fall(0, 0.9)
    sent = statements(store, lambda: store.add_event(record, T0))
    assert len(sent) == 3  # the insert, the alerted flag and the outbox row
    assert not [s for s in sent if s.lstrip().upper().startswith("SELECT")]
