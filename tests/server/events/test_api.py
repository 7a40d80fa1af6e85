"""The event API on a real server: a synthetic video streamed over a real WebSocket becomes
stored events and a camera, listed, reviewed and fed live over Server-Sent Events."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import threading

import httpx
import pytest

from tests.helpers.live import TOKEN, run_stream
from tests.helpers.loopback import http
from tests.helpers.streams import ACTIONS, FRAMES, stream

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def get(server, path: str, **params) -> httpx.Response:
    return http.get(f"{server.url}{path}", params=params, headers=AUTH, timeout=10)


def review(server, event_id: str, body: dict) -> httpx.Response:
    url = f"{server.url}/v1/events/{event_id}/review"
    return http.post(url, json=body, headers=AUTH, timeout=10)


@pytest.fixture(scope="module")
def live(test_settings, tmp_path_factory):
    """One server with its own SQLite store, and the result of streaming FRAMES into it."""
    from tests.helpers.live import LiveServer

    settings = dataclasses.replace(test_settings, data_dir=tmp_path_factory.mktemp("data"))
    server = LiveServer(settings)
    result = stream(server.ws_url)
    yield server, result
    server.stop()


def test_a_streamed_video_becomes_its_events(live, tiny_bundle):
    server, result = live
    assert len(result.ends) == len(ACTIONS)  # the stream's own account of what it saw
    r = get(server, "/v1/events", camera="cam-test")
    assert r.status_code == 200
    listed = r.json()["events"]
    assert r.json()["next_cursor"] is None
    # newest first: the stream's ends in reverse, with their final label and confidence
    assert [(e["label"], e["class_id"], e["confidence"]) for e in listed] == [
        (end["label"], end["class_id"], end["confidence"]) for end in reversed(result.ends)
    ]
    for e in listed:
        assert e["state"] == "ended" and e["end"] >= e["start"]
        assert e["model"] == {"name": tiny_bundle.name, "version": tiny_bundle.version}
        assert e["review"] == "new" and e["keep"] is False
        assert e["alerted"] is False  # this server has no alert rules
        assert get(server, f"/v1/events/{e['id']}").json() == e


def test_the_camera_is_listed_with_its_frames_and_rate(live):
    server, result = live
    (camera,) = [c for c in get(server, "/v1/cameras").json()["cameras"] if c["id"] == "cam-test"]
    assert camera["connected"] is False
    assert camera["frames"] == len(FRAMES) and camera["drops"] == 0
    # frames are 1/30 s apart in the sender's clock (timestamps rounded to the microsecond)
    assert camera["fps"] == pytest.approx(30, rel=2 / 400_000)
    last = result.of("scores")[-1]["top"][0]
    assert camera["top"] == {"label": last["label"], "score": last["score"]}


def test_filters_reach_the_store(live):
    server, result = live
    first, second = result.ends
    assert [
        e["label"] for e in get(server, "/v1/events", label=first["label"]).json()["events"]
    ] == [first["label"]]
    above = min(first["confidence"], second["confidence"]) + 1e-9
    confident = get(server, "/v1/events", min_confidence=above).json()["events"]
    assert [e["confidence"] for e in confident] == [max(first["confidence"], second["confidence"])]
    assert get(server, "/v1/events", state="open").json()["events"] == []
    assert get(server, "/v1/events", alerted="true").json()["events"] == []
    assert len(get(server, "/v1/events", alerted="false").json()["events"]) == 2
    assert get(server, "/v1/events", camera="no-such-camera").json()["events"] == []
    page = get(server, "/v1/events", limit=1).json()
    rest = get(server, "/v1/events", limit=1, cursor=page["next_cursor"]).json()
    everything = get(server, "/v1/events").json()["events"]
    assert page["events"] + rest["events"] == everything[:2]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"cursor": "bogus"}, "bad_cursor"),
        ({"state": "sleeping"}, "bad_request"),
        ({"since": "2026-01-01T00:00:00"}, "bad_request"),  # no time zone
        ({"limit": 0}, "bad_request"),
        ({"min_confidence": 2}, "bad_request"),
        ({"alerted": "maybe"}, "bad_request"),
    ],
)
def test_bad_queries_get_a_json_error(live, params, code):
    r = get(live[0], "/v1/events", **params)
    assert r.status_code == 400 and r.json()["error"]["code"] == code


def test_the_event_api_needs_a_token(live):
    for path in ("/v1/events", "/v1/cameras", "/v1/events/feed"):
        r = http.get(f"{live[0].url}{path}", timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_an_unknown_event_is_a_404(live):
    r = get(live[0], "/v1/events/no-such-event")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = review(live[0], "no-such-event", {"action": "acknowledge"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_review_records_the_decision_and_who(live):
    server, _ = live
    first, second = get(server, "/v1/events").json()["events"]
    r = review(server, first["id"], {"action": "acknowledge"})
    assert r.status_code == 200
    named = "token:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
    assert (r.json()["review"], r.json()["reviewed_by"]) == ("acknowledged", named)
    assert TOKEN not in r.text
    r = review(server, second["id"], {"action": "false_positive", "by": "nurse", "keep": True})
    assert (r.json()["review"], r.json()["reviewed_by"], r.json()["keep"]) == (
        "false_positive", "nurse", True
    )  # fmt: skip
    r = review(server, second["id"], {"action": "note", "note": "the cat"})
    assert (r.json()["review"], r.json()["note"]) == ("false_positive", "the cat")
    assert get(server, f"/v1/events/{second['id']}").json() == r.json()
    acknowledged = get(server, "/v1/events", review="acknowledged").json()["events"]
    assert [e["id"] for e in acknowledged] == [first["id"]]


@pytest.mark.parametrize(
    "body",
    [{"action": "note"}, {"action": "shrug"}, {"action": "acknowledge", "extra": 1}, {}],
)
def test_a_bad_review_gets_a_json_error(live, body):
    event_id = get(live[0], "/v1/events").json()["events"][0]["id"]
    r = review(live[0], event_id, body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"


def feed_lines(server, lines: list[str], subscribed: threading.Event, stop: threading.Event):
    with http.stream("GET", f"{server.url}/v1/events/feed", headers=AUTH, timeout=20) as response:
        for line in response.iter_lines():
            lines.append(line)
            subscribed.set()
            if stop.is_set() and line.startswith("data:") and '"reviewed"' in line:
                return


def feed_messages(lines: list[str]) -> list[tuple[str, dict]]:
    """(event name, data) of each SSE message."""
    messages, name = [], None
    for line in lines:
        if line.startswith("event:"):
            name = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            messages.append((name, json.loads(line.partition(":")[2])))
    return messages


def test_the_live_feed_sends_a_streams_changes(live):
    server, _ = live
    lines: list[str] = []
    subscribed, stop = threading.Event(), threading.Event()
    reader = threading.Thread(target=feed_lines, args=(server, lines, subscribed, stop))
    reader.start()
    assert subscribed.wait(10)  # `: subscribed` came: changes from now on reach this feed
    camera = "cam-feed"
    result = asyncio.run(run_stream(server.ws_url, FRAMES, hello_message=hello_for(camera)))
    stored = get(server, "/v1/events", camera=camera).json()["events"]
    stop.set()
    review(server, stored[0]["id"], {"action": "acknowledge"})  # the feed's last message
    reader.join(20)
    assert not reader.is_alive()
    messages = feed_messages(lines)
    changes = [(m["change"], m["event"]["id"]) for name, m in messages if name == "event"]
    newest_first = [e["id"] for e in stored]
    oldest, newest = newest_first[::-1]
    assert len(result.ends) == 2
    # each event started then ended (running updates may come between), then the review
    assert [c for c in changes if c[0] != "updated"] == [
        ("started", oldest), ("ended", oldest), ("started", newest), ("ended", newest),
        ("reviewed", newest),
    ]  # fmt: skip
    cameras = [m for name, m in messages if name == "camera" and m["id"] == camera]
    assert cameras[0]["connected"] is True and cameras[-1]["connected"] is False


def hello_for(camera_id: str) -> dict:
    from tests.helpers.live import hello

    h, w = FRAMES.shape[1:]
    return hello(w, h, 30, camera_id=camera_id)


def test_the_event_api_is_in_the_openapi_schema(live):
    schema = http.get(f"{live[0].url}/openapi.json", timeout=10).json()
    for path in ("/v1/events", "/v1/events/{event_id}", "/v1/events/{event_id}/review",
                 "/v1/events/feed", "/v1/cameras"):  # fmt: skip
        assert path in schema["paths"], path
    for model in ("EventOut", "EventsPage", "ReviewRequest", "CameraOut", "CamerasResponse"):
        assert model in schema["components"]["schemas"], model


def test_a_listener_that_raises_does_not_end_the_stream(make_server, events_settings):
    class Broken:
        async def connected(self, *args) -> None:
            raise RuntimeError("broken listener")

        event = disconnected = connected

    server = make_server(events_settings)
    server.service.bus.listeners.insert(0, Broken())  # before the store's recorder
    result = stream(server.ws_url)
    assert result.close_code == 1000 and result.of("end")
    assert len(get(server, "/v1/events").json()["events"]) == len(result.ends) == 2


@pytest.mark.slow  # over a second (docs/testing.md, "The suite's time")
def test_a_stream_gone_mid_action_ends_its_event(make_server, events_settings):
    # the client sends its frames in a burst, then nothing: a second of silence is idle enough
    server = make_server(dataclasses.replace(events_settings, idle_timeout_s=1.0))
    first_action_end = ACTIONS[0][1]
    result = stream(server.ws_url, FRAMES[: first_action_end - 6], end=False)
    assert result.close_code == 4408  # idle: the client never said `end`
    assert result.ends == [] and len(result.of("action")) == 1
    (event,) = get(server, "/v1/events").json()["events"]
    assert event["state"] == "ended" and event["label"] == result.of("action")[0]["label"]


def test_no_event_api_when_the_store_is_off(make_server, events_settings):
    server = make_server(dataclasses.replace(events_settings, events_db="off"))
    assert get(server, "/v1/events").status_code == 404
    assert stream(server.ws_url).close_code == 1000
    assert not (events_settings.data_dir / "events.db").exists()


def test_the_same_on_postgresql(make_server, events_settings, postgres):
    url = postgres.empty_database()
    server = make_server(dataclasses.replace(events_settings, events_db=url))
    result = stream(server.ws_url)
    listed = get(server, "/v1/events").json()["events"]
    assert [e["confidence"] for e in listed] == [e["confidence"] for e in reversed(result.ends)]
    assert [c["id"] for c in get(server, "/v1/cameras").json()["cameras"]] == ["cam-test"]
