"""clients.api without a server: URLs, event parsing, error mapping, frame reduction, flow."""

import asyncio
import dataclasses
import socket
from types import SimpleNamespace

import numpy as np
import pytest

from clients import api
from core.clip import ClipSpec
from core.wire import Ready, WireError
from tests.helpers.depth_reference import reference_millimetres

SPEC = ClipSpec(source_fps=30, downsample=3, clip_len=4, clip_step=4, window=4, window_step=2,
                height=8, width=8)  # fmt: skip


def ready(sizes=((48, 64), (8, 8)), spec: ClipSpec = SPEC) -> Ready:
    return Ready(
        {"name": "m", "version": "1"}, spec, ("background", "a"), 0.4, True, sizes, 1 << 20
    )


@pytest.mark.parametrize(
    ("url", "http", "ws"),
    [
        ("http://h:8000", "http://h:8000", "ws://h:8000/v1/stream"),
        ("ws://h:8000/v1/stream", "http://h:8000", "ws://h:8000/v1/stream"),
        ("wss://example.org/gd/v1/stream/", "https://example.org/gd", "wss://example.org/gd/v1/stream"),
        ("https://example.org/gd/v1/detections", "https://example.org/gd", "wss://example.org/gd/v1/stream"),
    ],
)  # fmt: skip
def test_one_url_serves_uploads_and_streams(url, http, ws):
    client = api.Client(url, token="secret")
    assert (client.http_url, client.ws_url) == (http, ws)
    assert "secret" not in repr(client)


@pytest.mark.parametrize("url", ["h:8000", "ftp://h/", "http://", "localhost"])
def test_bad_url(url):
    with pytest.raises(ValueError, match="server URL"):
        api.Client(url)


def test_parse_events():
    scores = api.parse_event({
        "type": "scores", "clip": 3, "activity": 0.9, "start_frame": 36, "end_frame": 47,
        "start_s": 1.2, "end_s": 1.6, "start_timestamp_us": 5, "end_timestamp_us": 9,
        "frame_index": 45, "timestamp_us": 8, "future_field": 1,
        "top": [{"label": "a", "class_id": 1, "score": 0.8}],
    })  # fmt: skip
    assert isinstance(scores, api.Scores) and scores.clip == 3
    assert scores.top == (api.Score("a", 1, 0.8),)
    assert scores.raw["future_field"] == 1  # --json passes on what this client does not model
    start = api.parse_event({
        "type": "action", "state": "start", "label": "a", "class_id": 1, "confidence": 0.7,
        "clip": 2, "start_frame": 24, "start_s": 0.8, "start_timestamp_us": 800_000,
    })  # fmt: skip
    assert start == api.ActionStart("a", 1, 0.7, 2, 24, 0.8, 800_000)
    end = api.parse_event({
        "type": "action", "state": "end", "label": "a", "class_id": 1, "confidence": 0.7,
        "start_frame": 24, "end_frame": 71, "start_s": 0.8, "end_s": 2.4, "first_clip": 2,
        "last_clip": 5, "start_timestamp_us": 1, "end_timestamp_us": 2,
    })  # fmt: skip
    assert end == api.ActionEnd("a", 1, 24, 71, 0.8, 2.4, 0.7, 1, 2, 2, 5)
    dropped = {"type": "warning", "code": "frames_dropped", "message": "m", "dropped": 2,
               "total_dropped": 5}  # fmt: skip
    assert api.parse_event(dropped) == api.FramesDropped("m", dropped=2, total_dropped=5)
    unknown = {"type": "warning", "code": "something_new", "message": "m", "extra": 1}
    assert api.parse_event(unknown) == api.ServerWarning("something_new", "m")
    end_message = {"type": "end", "clips": 1, "frames_received": 4, "frames_dropped": 0}
    assert api.parse_event(end_message) == api.End(1, 4, 0)
    assert api.event_message(api.parse_event(end_message)) == end_message
    assert api.parse_event({"type": "something_new"}) is None


def test_parse_event_missing_field():
    with pytest.raises(WireError, match="end message lacks 'frames_dropped'"):
        api.parse_event({"type": "end", "clips": 1, "frames_received": 4})


@pytest.mark.parametrize(
    ("close", "kind"),
    [(4400, api.BadRequest), (4401, api.Unauthorized), (4408, api.Idle), (4413, api.TooLarge),
     (4429, api.TooManyStreams), (1011, api.InternalError), (1012, api.ConnectionLost),
     (1006, api.ConnectionLost), (1000, api.ConnectionLost)],
)  # fmt: skip
def test_close_codes_become_exceptions(close, kind):
    ws = SimpleNamespace(close_code=close, close_reason="")
    error = api._closed_error(ws, {"type": "error", "code": "c", "message": "what went wrong"})
    assert type(error) is kind
    assert (error.code, error.close_code, error.message) == ("c", close, "what went wrong")
    assert str(error) == f"what went wrong (close code {close})"


def test_reducer_sends_the_models_frames_on_its_ticks():
    """Jittered 30 fps with a dropped frame -> exactly one frame per 100 ms tick, model-sized."""
    rng = np.random.default_rng(0)
    frames = rng.integers(400, 5000, (40, 48, 64)).astype(np.uint16)
    ts = [1_000_000 + round(i * 1e6 / 30) + int(rng.integers(-3000, 3000)) for i in range(40)]
    keep = [i for i in range(40) if i != 13]  # the camera dropped frame 13
    reduce = api._Reducer(ready(), 48, 64)
    sent = [s for i in keep for s in reduce(i, ts[i], frames[i])]
    t0 = ts[0]
    # By hand: ticks every 100 ms from the first frame; the nearest frame to tick k is frame
    # 3k (jitter of +-3 ms cannot bring a neighbour 33 ms away closer), and the dropped
    # frame 13 was nobody's nearest (tick 4 is frame 12).
    assert len(sent) >= 13
    assert [t for t, _, _ in sent] == [t0 + 100_000 * k for k in range(len(sent))]
    assert [i for _, i, _ in sent] == [3 * k for k in range(len(sent))]
    for _, i, image in sent:  # each 6x8 block's nearest valid depth, worked out per pixel
        assert image.shape == (8, 8)
        np.testing.assert_array_equal(image, reference_millimetres(frames[i], SPEC))


def test_reducer_keeps_the_aspect_ratio_the_model_was_trained_with():
    """A pad model: a 4:3 frame becomes 6x8 of depth between invalid rows 0 and 7."""
    spec = dataclasses.replace(SPEC, fit="pad")
    reduce = api._Reducer(ready(spec=spec), 48, 64)
    frame = np.random.default_rng(1).integers(600, 4000, (48, 64)).astype(np.uint16)
    [(_, _, image)] = reduce(0, 1_000_000, frame)
    # By hand: the whole 48x64 frame pooled into rows 1..6 (6x8 keeps 4:3), rows 0 and 7 invalid
    expected = np.zeros((8, 8), np.uint16)
    expected[1:7] = reference_millimetres(frame, dataclasses.replace(SPEC, height=6, width=8))
    np.testing.assert_array_equal(image, expected)
    assert (image[1:7] > 0).all()


def test_reducer_sends_whole_frames_to_a_person_crop_model():
    """The crop needs the camera's full frame: a person-crop model's kept frames go whole, on
    the model's ticks, even where `ready.sizes` lists the model's size too (an older server)."""
    spec = dataclasses.replace(SPEC, person_crop=True)
    reduce = api._Reducer(ready(sizes=((48, 64), (8, 8)), spec=spec), 48, 64)
    frames = [np.full((48, 64), 1000 + i, np.uint16) for i in range(13)]
    t0 = 1_000_000
    sent = [s for i, f in enumerate(frames) for s in reduce(i, t0 + round(i * 1e6 / 30), f)]
    # By hand: at 30 fps frame 3k falls exactly on tick k (every 100 ms): the 5 ticks of
    # frames 0..12 are frames 0, 3, 6, 9, 12.
    assert [(t, i) for t, i, _ in sent] == [(t0 + 100_000 * k, 3 * k) for k in range(5)]
    assert all(image is frames[i] for _, i, image in sent)  # untouched: the camera's frame


def test_reducer_sends_full_frames_to_a_server_that_wants_them():
    reduce = api._Reducer(ready(sizes=((48, 64),)), 48, 64)
    frame = np.ones((48, 64), np.uint16)
    assert [(t, i) for t, i, _ in reduce(7, 123, frame)] == [(123, 7)]


def test_flow_control_waits_for_scores():
    async def main():
        flow = api._FlowControl(SPEC)  # limit: clip_len + 2 clip_step = 12 kept frames ahead
        flow.sent = 12
        waiter = asyncio.create_task(flow.wait())
        await asyncio.sleep(0.01)
        assert not waiter.done()  # 12 sent, nothing scored yet
        await flow.scored(0)  # clip 0 covers 4 kept frames: room for 4 more
        await asyncio.wait_for(waiter, 1)
        flow.sent = 16
        waiter = asyncio.create_task(flow.wait())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await flow.scored(0, dropped=1)  # a frame the server dropped is not coming back
        await asyncio.wait_for(waiter, 1)

    asyncio.run(main())


def test_frames_must_be_uint16_images():
    with pytest.raises(ValueError, match="uint16"):
        api._check_frame(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="uint16"):
        api._check_frame(np.zeros((2, 4, 4), np.uint16))


def test_stream_to_nowhere_is_a_connection_loss():
    async def main():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        client = api.Client(f"ws://127.0.0.1:{port}/v1/stream")
        frames = [(0, np.zeros((4, 4), np.uint16))]
        async for _ in client.stream(frames, "cam", fps=30):
            pass

    with pytest.raises(api.ConnectionLost, match="cannot connect"):
        asyncio.run(main())


def test_upload_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        api.Client("http://127.0.0.1:1").upload(tmp_path / "none.db3")
    with pytest.raises(ValueError, match="no .png frames"):
        api.Client("http://127.0.0.1:1").upload(tmp_path)


def test_stream_names_its_camera_in_the_url_and_sends_the_token():
    """Load balancers hash on `camera_id` in the query (docs/deploy.md)."""
    from websockets.asyncio.server import serve

    seen = {}

    async def handler(ws):
        seen["path"] = ws.request.path
        seen["authorization"] = ws.request.headers.get("Authorization")
        await ws.close(4401, "unauthorized")

    async def main():
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            client = api.Client(f"http://127.0.0.1:{port}/ward3", token="t0k")
            frames = [(0, np.zeros((4, 4), np.uint16))]
            with pytest.raises(api.Unauthorized):
                async for _ in client.stream(frames, "bed 2/a", fps=30):
                    pass

    asyncio.run(main())
    assert seen == {"path": "/ward3/v1/stream?camera_id=bed+2%2Fa", "authorization": "Bearer t0k"}
