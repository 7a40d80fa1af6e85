"""The delivery log in the API (`GET /v1/deliveries`, `GET /v1/events/{id}/deliveries`) on a
real server: the tiny model's two actions, streamed over a real WebSocket, alert three real
webhook receivers on loopback (tests/helpers/webhooks.py, each verifying every signature)
through the server's own deliverer: one takes everything, one fails once and then takes
everything (a retry), one always fails and is tried once (dead letters). The log must say
exactly what each receiver saw."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections import Counter
from datetime import UTC, datetime
from itertools import product

import httpx
import pytest

from server.events.store import encode_cursor
from tests.helpers.live import TOKEN
from tests.helpers.streams import stream
from tests.helpers.tiny_bundle import CLASSES
from tests.helpers.webhooks import SECRETS, Receiver, WallClock

AUTH = {"Authorization": f"Bearer {TOKEN}"}
KINDS = ("alert.started", "alert.ended")  # what each event owes each destination, once ended
WAIT_S = 60.0  # generous: the deliverer polls once a second
POLL_S = 0.05  # the deliverer's poll in these tests, so that retries come quickly


def get(server, path: str, **params) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", params=params, headers=AUTH, timeout=10)


def log(server, **params) -> list[dict]:
    r = get(server, "/v1/deliveries", **params)
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


@pytest.fixture(scope="module")
def ward(test_settings, tmp_path_factory):
    """A server with alert rules to three receivers, the events of one streamed video, and
    the delivery log once nothing is pending."""
    from tests.helpers.live import LiveServer

    clock = WallClock()
    receivers = {
        "ok": Receiver(clock, []),
        "flaky": Receiver(clock, [(500, {})]),
        "down": Receiver(clock, [(503, {})] * 100),
    }
    root = tmp_path_factory.mktemp("ward")
    rules = root / "alerts.yaml"
    hooks = "".join(
        f"  {name}:\n    url: {r.url}\n    secrets: [{', '.join(SECRETS)}]\n"
        f"    backoff_s: 0.01\n    backoff_max_s: 0.01\n"
        f"    max_attempts: {1 if name == 'down' else 5}\n"
        for name, r in receivers.items()
    )
    rules.write_text(
        f"destinations:\n{hooks}rules:\n  - name: all\n    labels: [{', '.join(CLASSES[1:])}]\n"
        f"    min_confidence: 0\n    destinations: [{', '.join(receivers)}]\n"
    )
    settings = dataclasses.replace(test_settings, data_dir=root / "data", alert_rules=rules)
    server = LiveServer(settings)
    try:
        deliverer = server.app.state.events.deliverer
        # one row a pass: the outbox lends each pass's rows for a minute (store.CLAIM), and a
        # pass that stops at a failing receiver leaves the rest of its rows lent until then
        deliverer.poll_s, deliverer.batch = POLL_S, 1
        result = stream(server.ws_url)
        deadline = time.monotonic() + WAIT_S
        while log(server, state="pending"):
            assert time.monotonic() < deadline, "deliveries still pending"
            time.sleep(POLL_S)
        events = get(server, "/v1/events").json()["events"]
        yield server, receivers, result, events
    finally:
        server.stop()
        for r in receivers.values():
            r.stop()


def test_every_alert_owed_is_in_the_log_newest_first(ward):
    server, receivers, result, events = ward
    assert len(events) == len(result.ends) == 2  # the stream's own account
    rows = log(server)
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    owed = Counter(product((e["id"] for e in events), receivers, KINDS))
    assert Counter((r["event_id"], r["destination"], r["kind"]) for r in rows) == owed
    for r in rows:
        assert r["payload"]["type"] == r["kind"] and r["payload"]["data"]["id"] == r["event_id"]


def test_delivered_retried_and_dead_rows_say_what_the_receivers_saw(ward):
    server, receivers, _, _ = ward
    rows = log(server)
    for name, receiver in receivers.items():
        mine = sorted((r for r in rows if r["destination"] == name), key=lambda r: r["id"])
        got = receiver.received
        assert [g.problem for g in got] == [None] * len(got)  # all validly signed
        # one request per attempt, oldest row first, each attempt of a row with its webhook-id
        sent = [r["webhook_id"] for r in mine for _ in range(r["attempts"])]
        assert [g.headers["webhook-id"] for g in got] == sent
    ok = [r for r in rows if r["destination"] == "ok"]
    assert {(r["state"], r["attempts"], r["last_status"], r["last_error"]) for r in ok} == {
        ("delivered", 1, 200, None)
    }
    first, *rest = sorted((r for r in rows if r["destination"] == "flaky"), key=lambda r: r["id"])
    # the first row failed once (the receiver's 500), then went: its log keeps the failure
    assert (first["state"], first["attempts"], first["last_status"], first["last_error"]) == (
        "delivered",
        2,
        200,
        "HTTP 500",
    )
    assert {(r["state"], r["attempts"], r["last_error"]) for r in rest} == {("delivered", 1, None)}
    down = [r for r in rows if r["destination"] == "down"]
    assert {(r["state"], r["attempts"], r["last_status"], r["last_error"]) for r in down} == {
        ("dead", 1, 503, "HTTP 503")
    }
    for r in rows:
        assert r["next_attempt_at"] is None  # none pending
        assert (r["delivered_at"] is not None) == (r["state"] == "delivered")


def test_filters_and_pages(ward):
    server, _, _, events = ward
    everything = log(server)
    assert log(server, state="dead") == [r for r in everything if r["state"] == "dead"] != []
    assert log(server, destination="flaky") == [
        r for r in everything if r["destination"] == "flaky"
    ]
    assert log(server, state="pending") == []
    assert log(server, destination="no-such-destination") == []
    event = events[0]["id"]
    mine = [r for r in everything if r["event_id"] == event]
    assert log(server, event=event) == mine
    r = get(server, f"/v1/events/{event}/deliveries")
    assert r.status_code == 200 and r.json() == {"deliveries": mine, "next_cursor": None}
    r = get(server, f"/v1/events/{event}/deliveries", destination="down", state="dead")
    assert r.json()["deliveries"] == [d for d in mine if d["destination"] == "down"]
    pages, cursor = [], None
    while True:
        page = get(server, "/v1/deliveries", limit=5, **({"cursor": cursor} if cursor else {}))
        pages += page.json()["deliveries"]
        if (cursor := page.json()["next_cursor"]) is None:
            break
    assert pages == everything
    assert get(server, "/v1/deliveries", limit=len(everything)).json()["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"cursor": "bogus"}, "bad_cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"delivery:" + b"9" * 21).decode()}, "bad_cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"delivery:-1").decode()}, "bad_cursor"),
        ({"cursor": encode_cursor(datetime.now(UTC), "e1")}, "bad_cursor"),  # /v1/events'
        ({"state": "lost"}, "bad_request"),
        ({"limit": 0}, "bad_request"),
        ({"limit": 501}, "bad_request"),
    ],
)
def test_bad_queries_get_a_json_error(ward, params, code):
    for path in ("/v1/deliveries", f"/v1/events/{ward[3][0]['id']}/deliveries"):
        r = get(ward[0], path, **params)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, (path, r.text)


def test_an_unknown_event_is_a_404_and_the_log_needs_a_token(ward):
    server = ward[0]
    r = get(server, "/v1/events/no-such-event/deliveries")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    for path in ("/v1/deliveries", f"/v1/events/{ward[3][0]['id']}/deliveries"):
        r = httpx.get(f"{server.url}{path}", timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_the_log_is_in_the_openapi_schema(ward):
    schema = httpx.get(f"{ward[0].url}/openapi.json", timeout=10).json()
    for path in ("/v1/deliveries", "/v1/events/{event_id}/deliveries"):
        assert path in schema["paths"], path
    for model in ("DeliveryOut", "DeliveriesPage"):
        assert model in schema["components"]["schemas"], model
    states = schema["components"]["schemas"]["DeliveryOut"]["properties"]["state"]
    assert set(states["enum"]) == {"pending", "delivered", "dead"}


def test_no_log_when_the_store_is_off(make_server, test_settings):
    server = make_server(dataclasses.replace(test_settings, events_db="off"))
    r = get(server, "/v1/deliveries")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_the_alerted_events_are_flagged_and_listed_for_the_alert_queue(ward):
    server, _, _, events = ward
    assert [e["alerted"] for e in events] == [True, True]  # the rules alert on every action
    queue = get(server, "/v1/events", alerted="true", review="new").json()["events"]
    assert queue == events
    assert get(server, "/v1/events", alerted="false").json()["events"] == []
    assert get(server, f"/v1/events/{events[0]['id']}").json()["alerted"] is True
