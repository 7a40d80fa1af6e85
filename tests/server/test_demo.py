import asyncio
import dataclasses
import logging
import time

import numpy as np
import pytest

from server import demo
from tests.helpers.live import TOKEN, FrameClock
from tests.helpers.tiny_bundle import scene


@pytest.mark.slow
def test_demo_scene_streams_through_the_real_path_and_logs_actions(server, caplog):
    frames = scene(90, actions=((12, 78, 0.5),))  # 3 s with one large near object
    with caplog.at_level(logging.INFO, logger="gd.demo"):
        clock = FrameClock(demo.FPS).monotonic  # its 3 s pass without waiting
        actions = asyncio.run(demo.stream_scene(server.ws_url, TOKEN, frames, "zstd", clock=clock))
    assert actions == 1
    assert "demo: " in caplog.text and " from " in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.slow  # renders a scene at the camera's size: 0.8 CPU s
def test_rendered_scene_is_depth_at_the_default_models_camera_size():
    shot = demo.render_scene(seed=3, n_actions=1)
    frames = shot.film().depth
    assert frames.dtype == np.uint16 and frames.ndim == 3 and len(frames) > 60
    assert frames.shape[1:] == demo.SIZE == shot.reference().shape


def test_the_scenes_empty_room_is_stored_as_the_demo_cameras_reference(server):
    from clients.api import Client

    room = demo.render_scene(seed=3, n_actions=1).reference()
    asyncio.run(demo.store_reference(server.ws_url, TOKEN, room))
    np.testing.assert_array_equal(Client(server.url, TOKEN).get_reference(demo.CAMERA_ID), room)


def test_gd_serve_demo_starts_the_demo_with_a_token(test_settings, make_server, monkeypatch):
    calls = []

    async def fake_run_demo(url, token):
        calls.append((url, token))

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    make_server(dataclasses.replace(test_settings, demo=True, port=8123))
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == [("ws://127.0.0.1:8123/v1/stream", TOKEN)]
