"""The opt-in depth preview (server/preview.py, GET /v1/cameras/{id}/preview): the colorizing
and the per-camera store on their own, then a real server on loopback streamed to by a real
WebSocket client, with the setting off (the default) and on."""

import asyncio
import dataclasses
import json
import urllib.parse

import cv2
import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from core.clip import DepthPreprocessor, frame_timestamps_us
from server.preview import MAX_WIDTH, PreviewStore, colorize, millimetres
from tests.helpers.live import T0_US, TOKEN, collect, frame_messages, hello
from tests.helpers.numerics import F32_EPS
from tests.helpers.tiny_bundle import TINY_SPEC

AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEAR_MM, FAR_MM = 1000, 4000  # both inside the tiny model's 500..4500 mm


def halves(height: int = 48, width: int = 64) -> np.ndarray:
    """A near left half and a far right half, with a hole (no depth) in the top-left corner."""
    frame = np.full((height, width), FAR_MM, np.uint16)
    frame[:, : width // 2] = NEAR_MM
    frame[: height // 4, : width // 4] = 0
    return frame


def regions(rgb: np.ndarray, reduced_mm: np.ndarray) -> dict[int, np.ndarray]:
    """The distinct colours of the preview's pixels, by the depth the model saw there."""
    return {int(mm): np.unique(rgb[reduced_mm == mm], axis=0) for mm in np.unique(reduced_mm)}


def check_colours(rgb: np.ndarray, reduced_mm: np.ndarray) -> None:
    """One colour per depth: no depth black, near warm (red over blue), far cool."""
    colours = regions(rgb, reduced_mm)
    assert sorted(colours) == [0, NEAR_MM, FAR_MM]
    assert all(len(c) == 1 for c in colours.values()), colours
    (black,), (near,), (far,) = colours[0], colours[NEAR_MM], colours[FAR_MM]
    assert black.tolist() == [0, 0, 0]
    assert near[0] > near[2] and far[2] > far[0], (near, far)


# ---- the colorizing -----------------------------------------------------------------------


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (0.45, 0.2)])
def test_millimetres_undoes_the_preprocessing(mean, std):
    spec = dataclasses.replace(TINY_SPEC, mean=mean, std=std)
    frame = np.arange(0, 4096, 4, dtype=np.uint16).reshape(32, 32)  # at the model's size
    frame[frame < spec.depth_min_mm] = 0  # invalid either way; the rest in range
    pre = DepthPreprocessor(spec, *frame.shape)
    # the lookup rounds mm / depth_max, then (unit - mean) / std, in float32 (mean and std
    # rounded too): a few eps of 1 + |mean| in units, times depth_max_mm back in millimetres
    tol = 4 * F32_EPS * (1 + abs(mean)) * spec.depth_max_mm
    assert tol < 0.5  # so valid (>= depth_min_mm >= 1) and invalid (0) cannot be confused
    np.testing.assert_allclose(millimetres(pre(frame), spec), frame, rtol=0, atol=tol)


def test_colorize_maps_each_depth_to_one_colour_near_warm_far_cool():
    frame = halves(32, 32)
    rgb = colorize(DepthPreprocessor(TINY_SPEC, 32, 32)(frame), TINY_SPEC)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    check_colours(rgb, frame)


def test_colorize_orders_depth_from_near_to_far():
    """Along a ramp from depth_min to depth_max the colour map's hue runs red to blue: the
    red share falls and the blue share rises from one end to the other."""
    ramp = np.linspace(TINY_SPEC.depth_min_mm, TINY_SPEC.depth_max_mm, 32).astype(np.uint16)
    rgb = colorize(DepthPreprocessor(TINY_SPEC, 1, 32)(ramp[None]), TINY_SPEC)[0].astype(int)
    assert rgb[0, 0] > rgb[0, 2] and rgb[-1, 2] > rgb[-1, 0]
    assert len(np.unique(rgb, axis=0)) > 16  # a ramp of colours, not two


def test_a_large_model_input_is_shrunk_to_at_most_the_preview_width():
    spec = dataclasses.replace(TINY_SPEC, height=168, width=224)
    frame = halves(168, 224)
    rgb = colorize(DepthPreprocessor(spec, 168, 224)(frame), spec)
    step = -(-224 // MAX_WIDTH)  # the fewest skipped pixels that fit: every 2nd
    assert rgb.shape == (168 // step, 224 // step, 3)
    assert rgb.shape[1] <= MAX_WIDTH
    check_colours(rgb, frame[::step, ::step])


# ---- the store ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_store_makes_a_png_at_most_once_an_interval_and_forgets_a_camera_that_left():
    clock = Clock()
    store = PreviewStore(clock, interval_s=1.0)
    pre = DepthPreprocessor(TINY_SPEC, 32, 32)
    near, far = pre(np.full((32, 32), NEAR_MM, np.uint16)), pre(halves(32, 32))
    assert store.png("cam") is None  # never streamed

    store.keep("cam", near, TINY_SPEC)
    first = store.png("cam")
    store.keep("cam", far, TINY_SPEC)
    clock.now += 0.999  # within the interval: the PNG already made, however often asked
    assert store.png("cam") == first
    clock.now += 0.001
    second = store.png("cam")
    assert second != first
    decoded = cv2.imdecode(np.frombuffer(second, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(decoded, colorize(far, TINY_SPEC))  # lossless, RGB order

    store.keep("other", near, TINY_SPEC)
    asyncio.run(store.disconnected("cam", frames=10, dropped=0))
    assert store.png("cam") is None and len(store) == 1
    assert store.png("other") is not None


# ---- the route, on a real server ----------------------------------------------------------


def preview_url(live, camera: str) -> str:
    return f"{live.url}/v1/cameras/{urllib.parse.quote(camera, safe='')}/preview"


def test_off_by_default_the_route_says_how_to_turn_it_on(server):
    """The standard test server (tests/conftest.py): --preview not given."""
    assert server.service.settings.preview is False and server.service.previews is None
    r = httpx.get(preview_url(server, "cam-test"), headers=AUTH)
    assert r.status_code == 404
    assert r.json()["error"] == {
        "code": "preview_off",
        "message": "preview is off: start gd-serve with --preview",
    }
    assert httpx.get(preview_url(server, "cam-test")).status_code == 401  # the same tokens


@pytest.fixture(scope="module")
def live(test_settings):
    """--preview on, and no event store: the preview needs none."""
    from tests.helpers.live import LiveServer

    server = LiveServer(dataclasses.replace(test_settings, preview=True, events_db="off"))
    yield server
    server.stop()


async def stream_and_look(live, camera: str) -> tuple[httpx.Response, httpx.Response, list]:
    """Stream `halves()` as `camera`; once its first clip is scored (its frames are kept),
    GET its preview; then end the stream, and GET it again once the server has closed it."""
    n = 2 * TINY_SPEC.clip_len * TINY_SPEC.downsample  # two clips
    frames = np.repeat(halves()[None], n, axis=0)
    messages = frame_messages(frames, frame_timestamps_us(n, 30) + T0_US)
    async with (
        connect(live.ws_url, additional_headers=AUTH) as ws,
        httpx.AsyncClient(headers=AUTH, timeout=10) as http,
    ):
        await ws.send(json.dumps(hello(camera_id=camera)))
        for m in messages:
            await ws.send(m)
        while json.loads(await ws.recv())["type"] != "scores":
            pass
        during = await http.get(preview_url(live, camera))
        await ws.send(json.dumps({"type": "end"}))
        rest = await collect(ws)
    # the server forgets the frame before it closes the stream (server/stream.py: `serve`)
    async with httpx.AsyncClient(headers=AUTH, timeout=10) as http:
        after = await http.get(preview_url(live, camera))
    return during, after, rest


def test_on_a_streaming_camera_s_preview_is_its_frame_colorized_and_gone_when_it_ends(live):
    camera = "ward 3/bed 2"  # a space and a slash: any printable id has its preview
    during, after, rest = asyncio.run(stream_and_look(live, camera))

    assert during.status_code == 200, during.text
    assert during.headers["content-type"] == "image/png"
    assert during.headers["cache-control"] == "no-store"
    rgb = cv2.imdecode(np.frombuffer(during.content, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    assert rgb.shape == (TINY_SPEC.height, TINY_SPEC.width, 3)  # the model's input: 32 x 32
    # what the model saw: the 48 x 64 frame reduced to its input, each depth one colour
    check_colours(rgb, DepthPreprocessor(TINY_SPEC, 48, 64).to_millimetres(halves()))

    assert rest[-1]["type"] == "end"
    assert after.status_code == 404
    assert after.json()["error"]["code"] == "not_streaming"


def test_on_a_camera_that_never_streamed_here_has_no_preview(live):
    r = httpx.get(preview_url(live, "nobody"), headers=AUTH)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_streaming"
    assert httpx.get(preview_url(live, "nobody")).status_code == 401


def test_the_setting_is_a_flag_a_variable_and_a_config_key(tmp_path):
    from server.settings import from_env

    assert from_env({}).preview is False
    assert from_env({"GD_PREVIEW": "1"}).preview is True
    assert from_env({"GD_PREVIEW": "1"}, preview=False).preview is False  # the flag wins
    config = tmp_path / "gd.toml"
    config.write_text("preview = true\n")
    assert from_env({}, config=config).preview is True
