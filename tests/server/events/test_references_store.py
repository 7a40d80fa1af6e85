"""Camera references in the event store, on SQLite and on a real PostgreSQL: the bytes as put,
replaced by the next put, deleted; and a database of the previous schema migrated without
losing its events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from server.events.store import MIGRATIONS, EventStore, ReferenceRecord, database_url, make_engine

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(camera_id: str, png: bytes, at: datetime = T0) -> ReferenceRecord:
    return ReferenceRecord(camera_id, png, height=48, width=64, updated_at=at)


def test_references_are_put_replaced_and_deleted(store_url):
    store = EventStore.open(database_url(store_url))
    try:
        assert store.references() == []
        png = bytes(range(256)) * 40  # every byte value, NUL included
        store.put_reference(record("ward/b", png))
        store.put_reference(record("ward/a", b"\x89PNG first"))
        assert store.references() == [record("ward/a", b"\x89PNG first"), record("ward/b", png)]

        later = record("ward/a", b"\x89PNG second", T0 + timedelta(hours=1))
        store.put_reference(later)
        assert store.references() == [later, record("ward/b", png)]

        assert store.delete_reference("ward/a") is True
        assert store.delete_reference("ward/a") is False
        assert store.references() == [record("ward/b", png)]
    finally:
        store.close()


def test_a_database_of_the_previous_schema_gains_the_table_and_keeps_its_events(store_url):
    url = database_url(store_url)
    engine = make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        connection.execute(
            sa.text(
                "INSERT INTO cameras (id, first_seen, last_seen, connected, fps, frames, drops) "
                "VALUES ('cam-old', :t, :t, false, 30.0, 0, 0)"
            ),
            {"t": T0.replace(tzinfo=None)},
        )
    engine.dispose()
    store = EventStore.open(url)  # migrates to the newest schema
    try:
        assert [c.id for c in store.cameras()] == ["cam-old"]
        store.put_reference(record("cam-old", b"png"))
        assert store.references() == [record("cam-old", b"png")]
    finally:
        store.close()
