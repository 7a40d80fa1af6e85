"""The dashboard in headless Chromium against a real gd-serve (uvicorn on loopback, the tiny
model, a SQLite event store): sign-in, a streamed camera's tile, its events in the alert queue
and the history, and review buttons whose effect the API shows."""

import dataclasses
import threading

import httpx
import pytest

from server.events.webhooks import new_secret
from tests.helpers.browser import WAIT_MS, every_ms, sign_in
from tests.helpers.live import TOKEN, LiveServer, hello
from tests.helpers.loopback import http
from tests.helpers.streams import stream

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(test_settings, tiny_bundle, tmp_path_factory):
    db = tmp_path_factory.mktemp("events") / "events.db"
    # the queue lists alerted events: these rules alert on every action (to a receiver that
    # is not there; its deliveries wait, the queue does not)
    rules = db.parent / "alerts.yaml"
    rules.write_text(
        f"destinations:\n  pager:\n    url: http://127.0.0.1:9/\n    secrets: [{new_secret()}]\n"
        f"rules:\n  - name: all\n    labels: {list(tiny_bundle.classes[1:])}\n"
        f"    min_confidence: 0\n    destinations: [pager]\n"
    )
    settings = dataclasses.replace(test_settings, events_db=str(db), alert_rules=rules)
    server = LiveServer(settings)
    yield server
    server.stop()


def api(live, path: str, **params) -> dict:
    r = http.get(live.url + path, params=params, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return r.json()


def send(live, camera: str) -> threading.Thread:
    """Stream the standard recording (two actions) as `camera`, in a thread of its own:
    Playwright's sync API holds an event loop in this one."""
    sender = threading.Thread(
        target=stream, args=(live.ws_url,), kwargs={"hello_message": hello(camera_id=camera)}
    )
    sender.start()
    return sender


def test_sign_in_refuses_a_wrong_token_and_sends_the_right_one_only_in_a_header(tab, live):
    from playwright.sync_api import expect

    page = tab.page

    sign_in(page, live.url, "not-the-token")
    expect(page.locator("#login-error")).to_have_text("The server refused that token.")
    expect(page.locator("main")).to_be_hidden()
    page.fill("#token", TOKEN)
    page.click("#login-form button[type=submit]")
    expect(page.locator("main")).to_be_visible()
    expect(page.locator("#feed-status")).to_have_text("feed: live", timeout=WAIT_MS)
    expect(page.locator("#alerts")).to_have_attribute("data-loaded", "true", timeout=WAIT_MS)

    api_calls = [r for r in tab.requests if "/v1/" in r.url]
    paths = {httpx.URL(r.url).path for r in api_calls}
    assert {"/v1/model", "/v1/cameras", "/v1/events", "/v1/events/feed"} <= paths
    assert not [r.url for r in tab.requests if TOKEN in r.url]
    last = [r for r in api_calls if r.url.endswith("/v1/events/feed")][-1]
    assert last.all_headers()["authorization"] == f"Bearer {TOKEN}"
    assert page.evaluate("sessionStorage.getItem('gd-token')") == TOKEN
    assert tab.errors == []


def test_a_streamed_camera_shows_and_its_alerts_are_reviewed_through_the_page(tab, live):
    from playwright.sync_api import expect

    page = tab.page

    camera = "ward-3-bed-2"
    sign_in(page, live.url)
    # the queue is loaded and the feed live: from here on, new events come through the feed
    expect(page.locator("#alerts")).to_have_attribute("data-loaded", "true", timeout=WAIT_MS)
    expect(page.locator("#feed-status")).to_have_text("feed: live", timeout=WAIT_MS)
    sender = send(live, camera)
    tile = page.locator(f'.tile[data-camera="{camera}"]')
    expect(tile).to_be_visible(timeout=WAIT_MS)
    sender.join(60)

    # the stream's two actions ("small", then "large") are stored and queued for review
    events = api(live, "/v1/events", camera=camera)["events"]
    assert sorted(e["label"] for e in events) == ["large", "small"]
    ids = {e["id"] for e in events}
    alerts = page.locator("#alerts li.alert")
    expect(alerts).to_have_count(len(ids), timeout=WAIT_MS)
    queue = [alerts.nth(i).get_attribute("data-event") for i in range(len(ids))]
    assert queue == [e["id"] for e in events]  # newest first, as the API lists them
    expect(page.locator("#alert-count")).to_have_text(str(len(ids)))
    assert page.evaluate("document.body.dataset.alerted") == str(len(ids))  # one sound each
    for event_id in ids:  # and the unfiltered history got them from the feed
        expect(page.locator(f'#history tr[data-event="{event_id}"]')).to_have_count(1)

    # the tile shows the camera as the API has it once the stream is over
    (state,) = [c for c in api(live, "/v1/cameras")["cameras"] if c["id"] == camera]
    assert state["connected"] is False
    expect(tile).to_have_attribute("data-online", "false", timeout=WAIT_MS)
    top = state["top"]
    expect(tile.locator(".action")).to_have_text(f"{top['label']} {round(100 * top['score'])} %")
    expect(tile.locator("canvas")).to_have_count(1)  # the activity chart, drawn by uPlot
    assert int(tile.get_attribute("data-points")) >= 1  # with the stored clips' top actions

    # acknowledge one, mark the other a false positive: the API shows both reviews
    small, large = sorted(events, key=lambda e: e["label"] == "large")
    for event, button, review in ((small, "acknowledge", "acknowledged"),
                                  (large, "false positive", "false_positive")):  # fmt: skip
        item = page.locator(f'#alerts li[data-event="{event["id"]}"]')
        item.get_by_role("button", name=button).click()
        expect(item).to_have_count(0, timeout=WAIT_MS)
        stored = api(live, f"/v1/events/{event['id']}")
        assert stored["review"] == review
        assert stored["reviewed_by"].startswith("token:")
    expect(page.locator("#alert-count")).to_have_text("0")
    expect(page.locator("#alerts-empty")).to_be_visible()

    # the history, filtered in the page, lists what the API lists for the same filters
    page.fill("#filters input[name=camera]", camera)
    page.fill("#filters input[name=label]", "large")
    page.click("#filters button[type=submit]")
    rows = page.locator("#history tbody tr")
    expect(rows).to_have_count(1, timeout=WAIT_MS)
    assert rows.first.get_attribute("data-event") == large["id"]
    expect(rows.first.locator(".review")).to_have_text("false positive")
    assert tab.errors == []


def test_without_the_feed_the_queue_follows_the_store_by_reading_it_again(tab, live):
    """As when the feed is cut, or the events come from another server on the same database:
    new alerts come (with the sound) and alerts reviewed elsewhere leave."""
    from playwright.sync_api import expect

    page, camera = tab.page, "ward-4-bed-1"
    page.route("**/v1/events/feed", lambda route: route.abort())
    page.clock.install()  # the page's timers run when the test says: no 5 s waits for a poll
    sign_in(page, live.url)
    expect(page.locator("#feed-status")).to_have_text("feed: retrying", timeout=WAIT_MS)
    # no live feed to trigger it: the queue's first read comes with the poll
    page.clock.run_for(every_ms("ALERTS_EVERY_MS"))
    expect(page.locator("#alerts")).to_have_attribute("data-loaded", "true", timeout=WAIT_MS)
    assert page.evaluate("document.body.dataset.alerted") is None

    send(live, camera).join(60)
    events = api(live, "/v1/events", camera=camera)["events"]
    assert len(events) == 2
    items = [page.locator(f'#alerts li[data-event="{e["id"]}"]') for e in events]
    page.clock.run_for(every_ms("ALERTS_EVERY_MS"))  # the queue is read again
    for item in items:
        expect(item).to_have_count(1, timeout=WAIT_MS)
    assert int(page.evaluate("document.body.dataset.alerted")) >= 1

    r = http.post(
        f"{live.url}/v1/events/{events[0]['id']}/review",
        json={"action": "acknowledge", "by": "nurse station 2"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert r.status_code == 200, r.text
    page.clock.run_for(every_ms("ALERTS_EVERY_MS"))
    expect(items[0]).to_have_count(0, timeout=WAIT_MS)
    expect(items[1]).to_have_count(1)
    assert tab.errors == []


# make_server before tab: the page closes before its server stops, which then has no feed to
# wait for (2 s of graceful shutdown)
@pytest.mark.parametrize("store", [True, False])
def test_without_auth_the_page_opens_at_once_and_says_when_it_has_no_events(
    make_server, tab, test_settings, tmp_path, store
):
    from playwright.sync_api import expect

    events_db = str(tmp_path / "events.db") if store else "off"
    settings = dataclasses.replace(test_settings, tokens=(), no_auth=True, events_db=events_db)
    page = tab.page
    page.goto(make_server(settings).url + "/")
    expect(page.locator("main" if store else "#notice")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#notice" if store else "main")).to_be_hidden()
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("#sign-out")).to_be_hidden()
    if store:
        expect(page.locator("#feed-status")).to_have_text("feed: live", timeout=WAIT_MS)
    assert tab.errors == []
