"""Camera references on two real servers (uvicorn on loopback) of one real PostgreSQL, serving a
person-crop model: a reference PUT on the first is served by the second's GET and used by its
next stream (`ready.reference`, no `no_reference` warning); a DELETE on the first makes the
second's GET answer 404 and its next stream warn `no_reference`. The safety net is held off:
the relay's notice alone must carry each change (test_references_sync.py covers the net)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx
import pytest

from server.events import notify
from tests.helpers import live
from tests.helpers.crop_bundle import empty_wall, make_crop_bundle, put_reference, reference_call
from tests.helpers.served import AUTH
from tests.helpers.streams import FRAMES

pytestmark = pytest.mark.slow
CAMERA = "ward-2/bed-1"
WAIT_S = 30.0  # a ceiling for what the servers do at once, never a window asserted


def until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def stream(server: live.LiveServer) -> live.StreamResult:
    hello = live.hello(camera_id=CAMERA)
    result = asyncio.run(live.run_stream(server.ws_url, FRAMES[:24], hello_message=hello))
    assert result.close_code == 1000, result.events[-3:]
    return result


def warned(result: live.StreamResult) -> list[str]:
    return [e["code"] for e in result.of("warning")]


def test_a_reference_put_or_deleted_on_one_server_is_used_by_the_other(
    test_settings, postgres, make_server, tmp_path, monkeypatch
):
    monkeypatch.setattr(notify, "SYNC_EVERY_S", 3600.0)  # no safety net during the test
    crop = make_crop_bundle(tmp_path / "crop").root
    settings = dataclasses.replace(test_settings, events_db=postgres.empty_database(), model=crop)
    first, second = (make_server(settings) for _ in range(2))
    for server in (first, second):
        assert server.app.state.events.relay.listening.wait(WAIT_S)

    before = stream(second)
    assert before.ready["reference"] is False and warned(before) == ["no_reference"]

    body = live.png(empty_wall())
    assert put_reference(first.url, CAMERA, body).status_code == 200
    until(lambda: reference_call(second.url, "GET", CAMERA).status_code == 200, "not on B")
    assert reference_call(second.url, "GET", CAMERA).content == body
    with_reference = stream(second)
    assert with_reference.ready["reference"] is True and warned(with_reference) == []
    cameras = httpx.get(f"{second.url}/v1/cameras", headers=AUTH).json()["cameras"]
    assert {c["id"]: c["reference"]["height"] for c in cameras} == {CAMERA: 48}

    assert reference_call(first.url, "DELETE", CAMERA).status_code == 204
    until(lambda: reference_call(second.url, "GET", CAMERA).status_code == 404, "still on B")
    gone = reference_call(second.url, "GET", CAMERA).json()
    assert gone["error"]["code"] == "not_found"
    after = stream(second)
    assert after.ready["reference"] is False and warned(after) == ["no_reference"]
