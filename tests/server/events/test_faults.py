"""Faults, each with the real component: a webhook receiver down for a while (a real receiver
answering 503), PostgreSQL stopped mid-run (the real server, pg_ctl stop and start), and a
SQLite store that cannot write, at start (a folder where the file should be) and while
running (a file size limit on the real gd-serve process: every write fails as on a full disk).
Streams go on; what the store could not take waits in memory and is written when it can."""

from __future__ import annotations

import dataclasses
import os
import resource
import subprocess
from collections import defaultdict
from datetime import timedelta
from itertools import pairwise
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from server.cli import main
from server.events.delivery import message_id
from server.events.rules import AlertRules
from server.events.store import CLAIM, Backlog, EventFilter, EventStore, database_url
from server.events.types import EventRecord
from tests.helpers.live import TOKEN
from tests.helpers.loopback import http
from tests.helpers.served import Served, rules_file, wait_for
from tests.helpers.streams import ACTIONS, FRAMES, stream
from tests.helpers.tiny_bundle import TINY_SPEC
from tests.helpers.webhooks import SECRETS, T0, Clock, Receiver, deliver_all

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLIPS = len(FRAMES) // (TINY_SPEC.downsample * TINY_SPEC.clip_step)  # FRAMES' scored clips


def record(event_id: str, camera_id: str, at) -> EventRecord:
    return EventRecord(event_id, camera_id, "fall", 1, 0.9, at, None, "tiny", "1")


# --- the webhook receiver down for a while -------------------------------------------------


class StoreOutbox(EventStore):
    """The real store, with what `deliver_all` asks of an outbox besides."""

    def pending(self):
        return [r for r in self.deliveries(limit=10_000) if r.state == "pending"]


@pytest.mark.slow  # over a second (docs/testing.md, "The suite's time")
def test_a_receiver_down_for_a_while_gets_every_alert_then_in_order_per_camera(store_url, tmp_path):
    # The receiver answers 503 to its first requests, the last of them asking for a rest
    # (Retry-After) of twice as long as the store lends the alerts behind the failing one
    # (store.CLAIM), so those come due while the first of their camera still waits. (No
    # longer: the deliverer polls the store every fake POLL_S second of it.)
    down_for, rest_s = 10, int(2 * CLAIM.total_seconds())
    backoff, cap = 1.0, 8.0
    clock = Clock()
    answers = [(503, {})] * (down_for - 1) + [(503, {"Retry-After": str(rest_s)})]
    receiver = Receiver(clock, answers)
    try:
        path = rules_file(tmp_path / "rules.yaml", receiver.url, SECRETS, ["fall"], backoff, cap)
        rules = AlertRules.load(path)
        store = StoreOutbox.open(database_url(store_url), rules)
        # two cameras' events interleaved, each change a second apart, before the receiver
        # is first tried: six alerts, three per camera
        at = (T0 - timedelta(minutes=1) + timedelta(seconds=s) for s in range(10))
        store.add_event(record("d1", "door", t := next(at)), t)
        store.add_event(record("b1", "bed", t := next(at)), t)
        store.update_event("d1", t := next(at), end=t)
        store.add_event(record("d2", "door", t := next(at)), t)
        store.update_event("b1", t := next(at), end=t)
        store.update_event("d2", t := next(at), end=t)
        rows = sorted(store.pending(), key=lambda r: r.id)
        assert len(rows) == 6
        deliver_all(store, rules.webhooks, clock)
        done = store.deliveries(limit=100)
    finally:
        receiver.stop()
    assert {r.state for r in done} == {"delivered"}
    assert all(r.problem is None for r in receiver.received)  # every attempt signed
    assert sum(r.attempts for r in done) == len(receiver.received)
    # the first `down_for` requests failed; after them, each alert exactly once, and each
    # camera's in the order they were written
    delivered = [r.headers["webhook-id"] for r in receiver.received[down_for:]]
    assert sorted(delivered) == sorted(message_id(r) for r in rows)
    camera = {message_id(r): {"d": "door", "b": "bed"}[r.event_id[0]] for r in rows}
    for name in ("door", "bed"):
        assert [d for d in delivered if camera[d] == name] == [
            message_id(r) for r in rows if camera[message_id(r)] == name
        ]
    # the door's first alert took the rest; the bed's, not held up by it, went first
    assert receiver.received[down_for - 1].headers["webhook-id"] == message_id(rows[0])
    beds = sum(name == "bed" for name in camera.values())
    assert [camera[d] for d in delivered[:beds]] == ["bed"] * beds
    # while down, a failed alert waited its backoff before the next try (at least the lower
    # half of the doubling ceiling; a claim or a camera's earlier alert may hold it longer)
    tries = defaultdict(list)
    for r in receiver.received:
        tries[r.headers["webhook-id"]].append(r.at)
    for times in tries.values():
        for attempt, (a, b) in enumerate(pairwise(times), 1):
            ceiling = min(cap, backoff * 2 ** (attempt - 1))
            assert (b - a).total_seconds() >= ceiling / 2


def test_a_cameras_alert_waits_behind_its_earlier_ones_not_behind_other_cameras(
    store_url, tmp_path
):
    rules = AlertRules.load(
        rules_file(tmp_path / "r.yaml", "http://127.0.0.1:9/", SECRETS, ["fall"])
    )
    store = EventStore.open(database_url(store_url), rules)
    for n, (event_id, cam) in enumerate([("d1", "door"), ("b1", "bed"), ("d2", "door")]):
        store.add_event(record(event_id, cam, T0 + timedelta(seconds=n)), T0)
    d1, b1, d2 = sorted(store.deliveries(), key=lambda r: r.id)
    later = T0 + timedelta(seconds=10)
    store.retry(d1.id, later, "HTTP 503", 503)  # d1 backs off: d2, of its camera, waits
    assert [r.id for r in store.due(["nurses"], T0, 10)] == [b1.id]
    # d1 due again: its camera's alerts come in its order (b1 is claimed meanwhile)
    assert [r.id for r in store.due(["nurses"], later, 10)] == [d1.id, d2.id]
    store.dead(d1.id, later, "HTTP 503", 503)  # a dead letter holds nothing back
    store.retry(d2.id, later, "HTTP 503", 503)
    assert [r.id for r in store.due(["nurses"], later, 10)] == [d2.id]
    store.close()


# --- the store's backlog -------------------------------------------------------------------


def test_changes_wait_in_memory_bounded_oldest_dropped_and_are_written_in_order(tmp_path, caplog):
    """A real SQLite failure: the database file's place taken by a folder, so no connection
    opens ("unable to open database file")."""
    path = tmp_path / "events.db"
    store = EventStore.open(database_url(str(path)))
    published = []
    backlog = Backlog(published.append, lambda: T0, limit=3)
    store.engine.dispose()  # no open connection keeps writing to the moved file
    path.rename(tmp_path / "away.db")
    path.mkdir()
    for i in range(5):
        assert backlog.run(lambda i=i: store.add_event(record(f"e{i}", "door", T0), T0)) is None
    assert (backlog.kept, backlog.dropped) == (3, 2)  # the two oldest went
    dropping = [r for r in caplog.records if "dropping the oldest" in r.getMessage()]
    assert len(dropping) == 1  # said once per outage, counted on /readyz
    assert backlog.problem == "unable to open database file" and backlog.since == T0
    assert backlog.retry(store.ping) is False and backlog.kept == 3
    path.rmdir()
    (tmp_path / "away.db").rename(path)
    assert backlog.retry(store.ping) is True
    assert (backlog.kept, backlog.problem) == (0, None)
    assert [c.event.id for c in published] == ["e2", "e3", "e4"]  # in order, as committed
    assert sorted(e.id for e in store.list_events(EventFilter(), 10).events) == ["e2", "e3", "e4"]
    store.close()


# --- PostgreSQL stopped mid-run ------------------------------------------------------------


def start_postgres(server) -> None:
    """Start the session's PostgreSQL again as the `postgres` fixture started it: its socket
    folder and port (from its URL), as the user who owns its data (root may not run it)."""
    query = parse_qs(urlsplit(server.url()).query)
    options = f"-k {query['host'][0]} -p {query['port'][0]} -c listen_addresses='' -c fsync=off"
    argv = [server.pg_ctl, "-D", str(server.data), "-o", options, "-w",
            "-l", str(server.root / "log"), "start"]  # fmt: skip
    if os.geteuid() == 0:
        argv = ["runuser", "-u", server.data.owner(), "--", *argv]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)


def get(url: str, path: str, **params) -> httpx.Response:
    return http.get(f"{url}{path}", params=params, headers=AUTH, timeout=10)


def assert_stored(url: str, result) -> None:
    """The stream's events and camera, as the store has them (written late or not)."""
    listed = get(url, "/v1/events", camera="cam-test").json()["events"]
    assert [(e["label"], e["class_id"], e["confidence"], e["state"]) for e in listed] == [
        (end["label"], end["class_id"], end["confidence"], "ended") for end in reversed(result.ends)
    ]
    (camera,) = [c for c in get(url, "/v1/cameras").json()["cameras"] if c["id"] == "cam-test"]
    assert camera["frames"] == len(FRAMES) and camera["connected"] is False


def ready(url: str) -> dict:
    r = http.get(f"{url}/readyz", timeout=10)
    assert r.status_code == 200  # degraded or not: still ready for streams
    return r.json()


@pytest.mark.slow
def test_postgresql_stopped_mid_run(postgres, test_settings, make_server):
    url = postgres.empty_database()
    live = make_server(dataclasses.replace(test_settings, events_db=url))
    assert ready(live.url)["events_db"] == "ok"
    postgres.stop()
    try:
        result = stream(live.ws_url)  # while the database is away
        # the stream detected as ever: every clip scored, both actions found
        assert len(result.ends) == len(ACTIONS) and result.close_code == 1000
        assert len(result.of("scores")) == CLIPS
        health = ready(live.url)
        assert health["status"] == "degraded"
        assert health["events_db"].startswith("unavailable since ")
        assert health["events_kept"] > 0 and health["events_dropped"] == 0
    finally:
        start_postgres(postgres)
    wait_for(lambda: ready(live.url)["events_db"] == "ok", "the kept changes written")
    assert ready(live.url)["status"] == "ready"
    assert_stored(live.url, result)


# --- SQLite that cannot write ----------------------------------------------------------------


def test_a_sqlite_file_that_cannot_be_created_is_refused_at_start(tiny_bundle, tmp_path, capsys):
    taken = tmp_path / "events.db"
    taken.mkdir()  # a folder where the file should be: SQLite cannot open it, root or not
    argv = ["--model", str(tiny_bundle.root), "--no-auth", "--events-db", str(taken)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"events_db: event store sqlite:///{taken}: unable to open database file" in err
    assert "make its folder writable" in err and "--events-db (GD_EVENTS_DB)" in err
    # a data folder that cannot be made (a file on its path)
    (tmp_path / "file").write_text("")
    argv = ["--model", str(tiny_bundle.root), "--no-auth", "--data-dir", str(tmp_path / "file/d")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"events_db: [Errno 20] Not a directory: '{tmp_path / 'file' / 'd'}'" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_folder_is_refused_at_start(tiny_bundle, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    argv = ["--model", str(tiny_bundle.root), "--no-auth", "--events-db", str(folder / "e.db")]
    try:
        assert main(argv) == 2
    finally:
        folder.chmod(0o755)
    err = capsys.readouterr().err
    assert f"sqlite:///{folder / 'e.db'}" in err and "make its folder writable" in err


def set_file_size_limit(pid: int, limit: int) -> None:
    """RLIMIT_FSIZE on a running process: writes past `limit` bytes fail (EFBIG; Python
    ignores SIGXFSZ), as on a full disk; SQLite answers "disk I/O error"."""
    hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))


@pytest.mark.slow
def test_sqlite_failing_to_write_while_running(tiny_bundle, tmp_path):
    served = Served(tiny_bundle.root, tmp_path / "data")
    try:
        assert ready(served.url)["events_db"] == "ok"
        set_file_size_limit(served.proc.pid, 0)  # from now on no file of it grows
        result = stream(served.ws_url)
        assert len(result.ends) == len(ACTIONS) and result.close_code == 1000
        assert len(result.of("scores")) == CLIPS
        health = ready(served.url)
        assert health["status"] == "degraded"
        assert health["events_db"].endswith(": disk I/O error"), health
        set_file_size_limit(served.proc.pid, resource.RLIM_INFINITY)
        wait_for(lambda: ready(served.url)["events_db"] == "ok", "the kept changes written")
        assert_stored(served.url, result)
    finally:
        served.stop()
    assert "Traceback" not in served.output, served.output
    assert "event store unavailable (disk I/O error)" in served.output
    assert "event store available again after" in served.output
