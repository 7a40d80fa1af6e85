"""Several servers, one truth: two real servers (uvicorn on loopback, each with its own event
service) on one real PostgreSQL. A camera streamed over a real WebSocket to the first shows on
the second's SSE feed and /v1/cameras; a review on the second reaches the first's feed; and
each alert reaches a real webhook receiver once, not once per server."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from datetime import UTC, datetime

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.events.delivery import message_id
from server.events.store import EventStore, database_url
from server.events.webhooks import WebhookVerificationError, new_secret, verify
from tests.helpers.feeds import FeedReader
from tests.helpers.live import TOKEN, LiveServer, hello, uvicorn_server
from tests.helpers.loopback import http
from tests.helpers.streams import FRAMES, stream

pytestmark = pytest.mark.slow
CAMERA = "ward-2-bed-1"
SECRET = new_secret()
WAIT_S = 30.0  # a ceiling for what the servers do at once, never a window asserted
POLL_S = 0.2  # the deliverers' poll, not their default second: each delivery's hold scales
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Receiver:
    """A webhook endpoint on loopback that keeps what it receives, verified, and answers
    each delivery only after `hold_s`."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str | None]] = []  # (webhook-id, why invalid)
        self.hold_s = 0.0
        app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.server = uvicorn_server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, args=([self.sock],), daemon=True)
        self.thread.start()
        until(lambda: self.server.started, "the receiver did not start")

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        try:
            verify(body, request.headers, [SECRET], now=datetime.now(UTC))
            problem = None
        except WebhookVerificationError as e:
            problem = str(e)
        self.received.append((request.headers["webhook-id"], problem))
        await asyncio.sleep(self.hold_s)
        return Response(status_code=204)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def poll_often(server: LiveServer) -> threading.Event:
    """The server's deliverer sleeps POLL_S between passes from its next sleep on; the event
    is set at that sleep (from then on, the shorter poll holds)."""
    deliverer = server.app.state.events.deliverer
    polling = threading.Event()

    async def sleep(seconds: float) -> None:
        polling.set()
        await asyncio.sleep(seconds)

    deliverer.poll_s = POLL_S  # read by the deliverer's loop for each sleep, as is `sleep`
    deliverer.sleep = sleep
    return polling


def get(server: LiveServer, path: str, **params) -> dict:
    r = http.get(f"{server.url}{path}", params=params, headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def test_two_servers_on_one_postgresql_share_cameras_events_and_alerts(
    test_settings, postgres, receiver, make_server, tmp_path
):
    url = postgres.empty_database()
    rules = tmp_path / "alerts.yaml"
    rules.write_text(
        f"destinations:\n  desk:\n    url: {receiver.url}\n    secrets: [{SECRET}]\n"
        "rules:\n  - name: large ones\n    labels: [large]\n    min_confidence: 0\n"
        "    destinations: [desk]\n"
    )
    settings = dataclasses.replace(test_settings, events_db=url, alert_rules=rules)
    first, second = (make_server(settings) for _ in range(2))
    polling = [poll_often(server) for server in (first, second)]
    for server, polled in zip((first, second), polling, strict=True):
        assert server.app.state.events.relay.listening.wait(WAIT_S)
        assert polled.wait(WAIT_S)
    # each delivery is answered only after both deliverers polled again: a row that a
    # second server could take while the first sends it would be delivered twice
    receiver.hold_s = 2 * POLL_S
    # each feed until the review (made on the second server)
    feeds = [FeedReader(server, last='"reviewed"') for server in (first, second)]

    height, width = FRAMES.shape[1:]
    result = stream(first.ws_url, hello_message=hello(width, height, 30, camera_id=CAMERA))
    assert len(result.ends) == 2
    stored = get(first, "/v1/events", camera=CAMERA)["events"]  # all in: streams end drained

    def arrived() -> bool:
        """The first server's last changes are on the second's feed: each event's end and
        the camera's disconnection (read after it was stored: what any later read shows)."""
        messages = feeds[1].messages()
        ended = {m["event"]["id"] for n, m in messages if n == "event" and m["change"] == "ended"}
        gone = any(n == "camera" and not m["connected"] for n, m in messages)
        return gone and ended == {e["id"] for e in stored}

    until(arrived, "the first server's changes did not reach the second server's feed")
    (camera,) = get(first, "/v1/cameras")["cameras"]
    assert camera["id"] == CAMERA and get(second, "/v1/cameras")["cameras"] == [camera]
    assert get(second, "/v1/events", camera=CAMERA) == {"events": stored, "next_cursor": None}

    r = http.post(f"{second.url}/v1/events/{stored[0]['id']}/review",
                   json={"action": "acknowledge"}, headers=AUTH, timeout=10)  # fmt: skip
    assert r.status_code == 200
    for feed in feeds:
        feed.join(WAIT_S)

    # both feeds carried the same changes in the same order: the stream's, from the
    # first server, and the review, from the second
    fed = [feed.messages() for feed in feeds]
    changes_1, changes_2 = (
        [(m["change"], m["event"]["id"]) for n, m in messages if n == "event"] for messages in fed
    )
    assert changes_1 == changes_2
    newest, oldest = (e["id"] for e in stored)
    assert [c for c in changes_2 if c[0] != "updated"] == [
        ("started", oldest), ("ended", oldest), ("started", newest), ("ended", newest),
        ("reviewed", newest),
    ]  # fmt: skip
    cameras_2 = [m for n, m in fed[1] if n == "camera"]
    assert cameras_2[-1] == camera  # the dashboard's tile: as stored

    # every alert the rules owed was delivered, each exactly once, validly signed
    store = EventStore.open(database_url(url))
    try:
        large = [e for e in stored if e["label"] == "large"]
        assert large  # the recording's second action
        until(
            lambda: (
                (rows := store.deliveries())
                and len(rows) == 2 * len(large)  # alert.started and alert.ended
                and all(row.state == "delivered" for row in rows)
            ),
            "the alerts were not delivered",
        )
        first.stop()
        second.stop()  # nothing in flight can arrive after this
        rows = store.deliveries()
    finally:
        store.close()
    assert {row.event_id for row in rows} == {e["id"] for e in large}
    assert all(row.attempts == 1 for row in rows)
    assert sorted(receiver.received) == sorted((message_id(row), None) for row in rows)
