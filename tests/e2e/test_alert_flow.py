"""Issue 13's alert flow end to end: a fall streamed over the real WebSocket reaches the
nurses' station and the pager. A real gd-serve (uvicorn on loopback) with a SQLite event store
and an alert rules file, a webhook receiver on loopback (the standard library's HTTP server),
the dashboard in headless Chromium: the fall's alert shows in the page's queue, the page's
button acknowledges it, the API shows who did, and the receiver got each of the fall's alerts
exactly once, signed as Standard Webhooks specifies.

The model is the tiny test bundle (tests/helpers/tiny_bundle.py) with its two actions named as
a ward knows them: "sit down" for its small near object, "falling down" for its large one. Its
output is arithmetic (the large object gives "falling down" above 0.99), so the fall is detected
on every run, far above the rule's 0.5, and the test fails only when the flow does.
"""

import asyncio
import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clients.api import Client
from core.bundle import write_bundle_json
from server.events.delivery import message_id
from server.events.webhooks import new_secret, verify
from tests.helpers import loopback
from tests.helpers.browser import WAIT_MS, sign_in
from tests.helpers.live import TOKEN, LiveServer
from tests.helpers.streams import FRAMES, TS
from tests.helpers.tiny_bundle import make_bundle

pytestmark = pytest.mark.slow
CLASSES = ("background", "sit down", "falling down")  # the tiny model's, renamed
FALL = CLASSES[2]
CAMERA = "ward-3-bed-2"
SECRET = new_secret()
WAIT_S = WAIT_MS / 1000


@dataclasses.dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: datetime  # when it arrived: a receiver checks the signed timestamp against it


class Receiver:
    """A webhook endpoint on loopback that keeps every request and answers 204."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}  # names are any case
                received.append(Received(headers, body, datetime.now(UTC)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        # stop() waits for the serving loop to look at its stop flag: every 20 ms, not 0.5 s
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def live(test_settings, receiver, tmp_path_factory):
    root = tmp_path_factory.mktemp("ward")
    bundle = make_bundle(root / "model")
    write_bundle_json(dataclasses.replace(bundle, classes=CLASSES))
    rules = root / "alerts.yaml"
    rules.write_text(
        f"destinations:\n"
        f"  pager:\n"
        f"    url: {receiver.url}\n"
        f"    secrets: [{SECRET}]\n"
        f"rules:\n"
        f"  - name: falls\n"
        f"    labels: [{FALL}]\n"
        f"    min_confidence: 0.5\n"
        f"    destinations: [pager]\n"
    )
    settings = dataclasses.replace(
        test_settings, model=bundle.root, events_db=str(root / "events.db"), alert_rules=rules
    )
    server = LiveServer(settings)
    yield server
    server.stop()


@pytest.fixture
def page(browser):
    """A fresh page; closed before the server stops, so its live feed ends first."""
    context = browser.new_context()
    yield context.new_page()
    context.close()


def api(live, path: str) -> dict:
    r = loopback.http.get(live.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Poll until `condition()` holds; fail naming `what` after a generous timeout. Polled
    often: the test waits no longer than the condition takes (a poll is a small query)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def send_scene(live) -> list[str]:
    """Stream the standard recording (a sit-down, then a fall) through the clients' API, in a
    thread of its own (Playwright's sync API holds an event loop in this one); the types of
    the events it got back."""

    async def play() -> list[str]:
        client = Client(live.url, TOKEN)
        frames = zip(TS.tolist(), FRAMES, strict=True)
        stream = client.stream(frames, CAMERA, fps=30, encoding="raw", flow_control=True)
        return [type(event).__name__ async for event in stream]

    with ThreadPoolExecutor(1) as sender:
        return sender.submit(asyncio.run, play()).result(timeout=60)


def test_a_fall_alerts_the_page_and_the_pager_once_and_the_page_acknowledges_it(
    page, live, receiver
):
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, live.url)
    expect(page.locator("#alerts")).to_have_attribute("data-loaded", "true", timeout=WAIT_MS)
    expect(page.locator("#feed-status")).to_have_text("feed: live", timeout=WAIT_MS)

    sent = send_scene(live)
    assert (sent[0], sent[-1]) == ("Ready", "End")
    stored_events = api(live, f"/v1/events?camera={CAMERA}")["events"]
    assert sorted(e["label"] for e in stored_events) == sorted(CLASSES[1:])
    events = {e["label"]: e for e in stored_events}
    fall = events[FALL]

    # the page queues the fall: the rules alerted about it (not the sit-down: nobody was)
    item = page.locator(f'#alerts li.alert[data-event="{fall["id"]}"]')
    expect(item).to_have_count(1, timeout=WAIT_MS)
    expect(item).to_contain_text(FALL)
    expect(item).to_contain_text(CAMERA)
    item.get_by_role("button", name="acknowledge").click()
    expect(item).to_have_count(0, timeout=WAIT_MS)
    sit = page.locator(f'#alerts li.alert[data-event="{events["sit down"]["id"]}"]')
    expect(sit).to_have_count(0)
    assert (fall["alerted"], events["sit down"]["alerted"]) == (True, False)
    row = page.locator(f'#history tr[data-event="{fall["id"]}"] .review')
    expect(row).to_have_text("acknowledged", timeout=WAIT_MS)

    # the API shows the review: by this token, named as the server names tokens
    stored = api(live, f"/v1/events/{fall['id']}")
    assert stored["review"] == "acknowledged"
    assert stored["reviewed_by"] == "token:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
    assert stored["reviewed_at"] is not None
    assert stored["end"] is not None  # the stream ended, and the event with it

    # the outbox: the fall owed its start and its end, the sit-down and the review nothing;
    # once the store says both went out, the receiver holds all it will ever get
    store = live.app.state.events.store
    wait_for("the deliveries", lambda: all(d.state == "delivered" for d in store.deliveries()))
    log = sorted(store.deliveries(), key=lambda d: d.id)
    assert [(d.event_id, d.kind, d.attempts) for d in log] == [
        (fall["id"], "alert.started", 1),
        (fall["id"], "alert.ended", 1),
    ]

    # exactly one delivery per alert, each signed with the destination's secret
    got = sorted(receiver.received, key=lambda r: r.headers["webhook-id"])
    assert [r.headers["webhook-id"] for r in got] == sorted(message_id(d) for d in log)
    for r in got:
        verify(r.body, r.headers, [SECRET], now=r.at)  # raises, saying why, if it does not
        assert r.headers["content-type"] == "application/json"
    bodies = {json.loads(r.body)["type"]: json.loads(r.body) for r in got}
    assert set(bodies) == {"alert.started", "alert.ended"}
    for kind, body in bodies.items():
        data = body["data"]
        assert (data["id"], data["label"], data["camera_id"], data["rule"]) == (
            fall["id"],
            FALL,
            CAMERA,
            "falls",
        ), kind
        assert data["confidence"] >= 0.5
    assert bodies["alert.ended"]["data"]["end"] is not None
    assert errors == []
