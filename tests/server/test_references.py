"""Camera references on a real server: PUT / GET / DELETE /v1/cameras/{id}/reference, their
errors, the event store keeping them across a restart (memory only without it), `ready.reference`
and `GET /v1/cameras`, and a person-crop model cropping each clip against its camera's reference
in streams and uploads (the encoder's input recorded), with the `no_reference` and
`reference_size_mismatch` warnings, a reference put mid-stream used from the next clip on, and
the preview still showing the whole frame."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
import zlib

import cv2
import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from core.clip import DepthPreprocessor, frame_timestamps_us
from core.limits import MAX_SIDE
from core.wire import parse_ready
from server.preview import colorize
from tests.helpers import live
from tests.helpers.crop_bundle import (
    CROP_SPEC,
    cropped_clips,
    empty_wall,
    make_crop_bundle,
    put_reference,
    recording_server,
    reference_call,
)
from tests.helpers.served import AUTH
from tests.helpers.streams import FRAMES

CAMERA = "ward/bed-1"  # a camera id may hold '/'


@pytest.fixture
def stored(test_settings, tmp_path):
    """The tests' settings with an event store of their own (SQLite in tmp_path)."""
    return dataclasses.replace(test_settings, data_dir=tmp_path / "data")


@pytest.fixture
def crop_settings(stored, tmp_path):
    return dataclasses.replace(stored, model=make_crop_bundle(tmp_path / "crop").root)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int, bit_depth: int = 16, colour: int = 0) -> bytes:
    """A PNG signature and IHDR claiming this image, and no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)


def test_put_get_delete_round_trip(make_server, stored):
    server = make_server(stored)
    wall = empty_wall()
    wall[5:9, 7:20] = 0  # no reading there
    body = live.png(wall)
    response = put_reference(server.url, CAMERA, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["camera_id"], answer["height"], answer["width"]) == (CAMERA, 48, 64)
    assert answer["stored"] is True
    got = reference_call(server.url, "GET", CAMERA)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert got.content == body  # the PNG as put
    assert got.headers["cache-control"] == "no-store"

    replaced = put_reference(server.url, CAMERA, live.png(empty_wall() - 1))
    assert replaced.status_code == 200 and replaced.json()["updated_at"] >= answer["updated_at"]
    assert reference_call(server.url, "GET", CAMERA).content == live.png(empty_wall() - 1)

    assert reference_call(server.url, "DELETE", CAMERA).status_code == 204
    for method in ("GET", "DELETE"):
        gone = reference_call(server.url, method, CAMERA)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


def test_bad_references_get_clear_errors(server):
    wall = empty_wall()
    cases = [
        (live.png(wall), "application/octet-stream", 415, "unsupported_media_type"),
        (live.png(wall.astype(np.uint8)), "image/png", 422, "invalid_reference"),  # 8-bit
        (live.png(np.dstack([wall] * 3)), "image/png", 422, "invalid_reference"),  # colour
        (b"not a png at all" * 4, "image/png", 422, "invalid_reference"),
        (png_header_only(64, 48), "image/png", 422, "invalid_reference"),  # no pixels
        (png_header_only(MAX_SIDE + 1, 48), "image/png", 413, "too_large"),
        (png_header_only(64, MAX_SIDE + 1), "image/png", 413, "too_large"),
    ]
    for body, content_type, status, code in cases:
        response = put_reference(server.url, "cam-bad", body, content_type)
        assert response.status_code == status, (code, response.text)
        assert response.json()["error"]["code"] == code
    assert reference_call(server.url, "GET", "cam-bad").status_code == 404  # nothing kept

    assert put_reference(server.url, "cam-bad", live.png(wall), token=None).status_code == 401
    unauthorized = httpx.get(f"{server.url}/v1/cameras/cam-bad/reference")
    assert unauthorized.status_code == 401
    too_long = put_reference(server.url, "c" * 129, live.png(wall))
    assert too_long.status_code == 400 and "128" in too_long.json()["error"]["message"]


def test_a_reference_survives_a_restart_and_is_listed_with_its_camera(make_server, stored):
    first = make_server(stored)
    body = live.png(empty_wall())
    put = put_reference(first.url, CAMERA, body).json()
    first.stop()

    second = make_server(stored)
    assert reference_call(second.url, "GET", CAMERA).content == body
    frames = FRAMES[:24]
    hello = live.hello(camera_id=CAMERA)
    result = asyncio.run(live.run_stream(second.ws_url, frames, hello_message=hello))
    assert result.close_code == 1000 and result.ready["reference"] is True
    cameras = httpx.get(f"{second.url}/v1/cameras", headers=AUTH).json()["cameras"]
    listed = {c["id"]: c["reference"] for c in cameras}
    assert listed[CAMERA] == {"height": 48, "width": 64, "updated_at": put["updated_at"]}


def test_without_the_event_store_references_are_kept_in_memory_only(make_server, stored):
    off = dataclasses.replace(stored, events_db="off")
    first = make_server(off)
    response = put_reference(first.url, CAMERA, live.png(empty_wall()))
    assert response.status_code == 200 and response.json()["stored"] is False
    assert reference_call(first.url, "GET", CAMERA).status_code == 200
    first.stop()
    assert reference_call(make_server(off).url, "GET", CAMERA).status_code == 404


def test_ready_says_whether_the_camera_has_a_reference(server):
    hello = live.hello(camera_id="cam-ready")
    before = asyncio.run(live.run_stream(server.ws_url, FRAMES[:12], hello_message=hello))
    assert before.ready["reference"] is False
    # not a person-crop model: its clients may still reduce frames themselves, no warning
    assert {(s["height"], s["width"]) for s in before.ready["sizes"]} == {(48, 64), (32, 32)}
    assert before.of("warning") == []
    assert put_reference(server.url, "cam-ready", live.png(empty_wall())).status_code == 200
    after = asyncio.run(live.run_stream(server.ws_url, FRAMES[:12], hello_message=hello))
    assert after.ready["reference"] is True
    assert parse_ready(after.ready).reference and not parse_ready(before.ready).reference
    assert reference_call(server.url, "DELETE", "cam-ready").status_code == 204


def warnings(events: list[dict]) -> list[str]:
    return [e["code"] for e in events if e["type"] == "warning"]


def test_a_person_crop_stream_crops_each_clip_against_its_cameras_reference(
    crop_settings, monkeypatch
):
    with_reference, whole = cropped_clips(FRAMES, empty_wall()), cropped_clips(FRAMES, None)
    assert len(with_reference) == 12
    assert not np.array_equal(with_reference, whole)  # the crop changes the clips with a person
    server, recorder = recording_server(crop_settings, monkeypatch)
    try:

        def stream(camera_id: str) -> live.StreamResult:
            hello = live.hello(camera_id=camera_id)
            result = asyncio.run(live.run_stream(server.ws_url, FRAMES, hello_message=hello))
            assert result.close_code == 1000, result.events[-3:]
            return result

        none = stream("cam-none")
        assert none.ready["reference"] is False
        assert none.ready["sizes"] == [{"height": 48, "width": 64}]  # frames as the camera's
        assert warnings(none.events) == ["no_reference"]
        np.testing.assert_array_equal(recorder.take(), whole)

        assert put_reference(server.url, "cam-ok", live.png(empty_wall())).status_code == 200
        ok = stream("cam-ok")
        assert ok.ready["reference"] is True and warnings(ok.events) == []
        np.testing.assert_array_equal(recorder.take(), with_reference)

        small = live.png(empty_wall(24, 32))
        assert put_reference(server.url, "cam-small", small).status_code == 200
        mismatch = stream("cam-small")
        assert mismatch.ready["reference"] is True
        assert warnings(mismatch.events) == ["reference_size_mismatch"]
        message = next(e["message"] for e in mismatch.events if e["type"] == "warning")
        assert "32x24" in message and "64x48" in message
        np.testing.assert_array_equal(recorder.take(), whole)

        # a frame the client reduced to the model's size is refused: the crop needs full frames
        reduced = np.zeros((1, CROP_SPEC.height, CROP_SPEC.width), np.uint16)
        messages = live.frame_messages(reduced, [live.T0_US])
        refused = asyncio.run(live.run_stream(server.ws_url, messages=messages))
        assert refused.close_code == 4400
    finally:
        server.stop()


def test_a_person_crop_upload_uses_the_reference_of_its_camera_id(crop_settings, monkeypatch):
    server, recorder = recording_server(crop_settings, monkeypatch)
    body = live.npy_bytes(FRAMES)
    try:
        assert put_reference(server.url, "cam-up", live.png(empty_wall())).status_code == 200
        assert put_reference(server.url, "cam-up-small", live.png(empty_wall(24, 32))).is_success
        for camera_id, expected, warned in [
            ("cam-up", cropped_clips(FRAMES, empty_wall()), []),
            (None, cropped_clips(FRAMES, None), ["no_reference"]),
            ("cam-unknown", cropped_clips(FRAMES, None), ["no_reference"]),
            ("cam-up-small", cropped_clips(FRAMES, None), ["reference_size_mismatch"]),
        ]:
            params = {"fps": 30} if camera_id is None else {"fps": 30, "camera_id": camera_id}
            response = live.upload(server.url, body, **params)
            assert response.status_code == 200, response.text
            assert [w["code"] for w in response.json()["warnings"]] == warned
            np.testing.assert_array_equal(recorder.take(), expected)
    finally:
        server.stop()


async def stream_with_a_pause(ws_url: str, frames: np.ndarray, split: int, last_clip: int, pause):
    """Stream frames[:split], wait for the scores of `last_clip` (so that every clip those
    frames complete has been cut), call `pause()`, then stream the rest; all events."""
    messages = live.frame_messages(frames, frame_timestamps_us(len(frames), 30) + live.T0_US)
    events: list[dict] = []
    headers = {"Authorization": f"Bearer {live.TOKEN}"}
    async with connect(ws_url, additional_headers=headers, max_size=None) as ws:
        await ws.send(json.dumps(live.hello(camera_id="cam-mid")))
        for m in messages[:split]:
            await ws.send(m)
        async with asyncio.timeout(20):
            while not any(e["type"] == "scores" and e["clip"] == last_clip for e in events):
                events.append(json.loads(await ws.recv()))
        pause()
        for m in messages[split:]:
            await ws.send(m)
        await ws.send(json.dumps({"type": "end"}))
        async with asyncio.timeout(20):
            async for text in ws:
                events.append(json.loads(text))
    return events


def test_a_reference_put_mid_stream_is_used_from_the_next_clip(crop_settings, monkeypatch):
    split, last_clip = 36, 2  # frames 0..35: kept frames 0, 3, .., 33, clips 0-2
    before, after = cropped_clips(FRAMES, None), cropped_clips(FRAMES, empty_wall())
    assert not np.array_equal(before[last_clip + 1 :], after[last_clip + 1 :])
    # the stream sends nothing while it waits and pauses: not idle for that (a loaded machine)
    settings = dataclasses.replace(crop_settings, preview=True, idle_timeout_s=120.0)
    server, recorder = recording_server(settings, monkeypatch)
    previews = []
    try:

        def put() -> None:
            previews.append(httpx.get(f"{server.url}/v1/cameras/cam-mid/preview", headers=AUTH))
            assert put_reference(server.url, "cam-mid", live.png(empty_wall())).is_success

        events = asyncio.run(stream_with_a_pause(server.ws_url, FRAMES, split, last_clip, put))
        clips = recorder.take()
    finally:
        server.stop()
    assert warnings(events) == ["no_reference"]  # once, at the start
    # the preview: the newest kept frame (33) whole, reduced to the model's input, colorized
    assert previews[0].status_code == 200, previews[0].text
    rgb = cv2.imdecode(np.frombuffer(previews[0].content, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    newest = DepthPreprocessor(CROP_SPEC, 48, 64)(FRAMES[33])
    np.testing.assert_array_equal(rgb, colorize(newest, CROP_SPEC))
    np.testing.assert_array_equal(clips[: last_clip + 1], before[: last_clip + 1])
    np.testing.assert_array_equal(clips[last_clip + 1 :], after[last_clip + 1 :])
