"""kill -9 with alerts owed: the outbox, written in the event's own transaction, outlives the
process, and the restarted server delivers what it owed, once each, signed. A real gd-serve
subprocess on its SQLite store, a real WebSocket stream, a real webhook receiver."""

from __future__ import annotations

import json
import socket

import pytest

from server.events.delivery import message_id
from server.events.store import CLAIM, EventStore, database_url
from tests.helpers.served import Served, rules_file, wait_for
from tests.helpers.streams import ACTIONS, stream
from tests.helpers.webhooks import SECRETS, Receiver, WallClock


def claimed(rows) -> bool:
    """Whether a deliverer holds any of these rows: a claim moves a row's next attempt a
    minute on (CLAIM), a backoff here at most `rules_file`'s 1 s after the attempt."""
    newest = max(r.created_at for r in rows)
    return any(r.next_attempt_at > newest + CLAIM / 2 for r in rows)


@pytest.mark.slow
def test_alerts_owed_at_a_kill_9_are_delivered_once_after_restart(tiny_bundle, tmp_path):
    data = tmp_path / "data"
    labels = tiny_bundle.classes[1:]  # every action alerts
    owed_per_event = 2  # alert.started, then alert.ended
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: the receiver is down
        down = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
        rules = rules_file(tmp_path / "rules.yaml", down, SECRETS, labels)
        first = Served(tiny_bundle.root, data, ["--alert-rules", str(rules)])
        try:
            result = stream(first.ws_url)
            assert len(result.ends) == len(ACTIONS)
            store = EventStore.open(database_url(str(data / "events.db")))

            def all_owed_and_tried():
                # the camera's first alert tried; the others wait behind it (order per camera)
                rows = store.deliveries()
                tried = bool(rows) and min(rows, key=lambda r: r.id).attempts >= 1
                return len(rows) == owed_per_event * len(ACTIONS) and tried and not claimed(rows)

            # killed between two attempts, not while the deliverer holds rows: rows it held
            # would wait out their claim (CLAIM, a minute) before the restarted server may take
            # them, which is right, but a minute of this test
            wait_for(all_owed_and_tried, "every alert in the outbox, the first one tried")
            first.kill9()
        finally:
            first.stop()
    owed = store.deliveries()
    assert {r.state for r in owed} == {"pending"}  # the kill left them owed
    assert min(owed, key=lambda r: r.id).last_error.startswith("ConnectError")

    clock = WallClock()
    receiver = Receiver(clock, [])  # up now, answering 200
    try:
        rules_file(rules, receiver.url, SECRETS, labels)  # same destination name, new address
        second = Served(tiny_bundle.root, data, ["--alert-rules", str(rules)])
        try:
            wait_for(
                lambda: all(r.state == "delivered" for r in store.deliveries()),
                "the owed alerts delivered after the restart",
            )
        finally:
            second.stop()  # nothing left in flight: what the receiver has is all it gets
    finally:
        receiver.stop()
        store.close()
    received = {r.headers["webhook-id"]: r for r in receiver.received}
    assert len(receiver.received) == len(received) == len(owed)  # once each, no duplicates
    for row in owed:
        got = received[message_id(row)]
        assert got.problem is None  # a valid signature, with the older secret of the two
        assert json.loads(got.body) == row.payload
    assert "Traceback" not in second.output, second.output
