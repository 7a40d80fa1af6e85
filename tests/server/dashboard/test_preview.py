"""The depth preview on the dashboard's camera tiles, in headless Chromium against a real
gd-serve (uvicorn on loopback, the tiny model, a SQLite event store) streamed to by a real
WebSocket client: with --preview an online camera's tile shows its depth image (read with the
token in a header, shown from a blob: URL) until the camera leaves; without it, none."""

import asyncio
import dataclasses
import json
import threading

import pytest
from websockets.asyncio.client import connect

from tests.helpers.browser import WAIT_MS, every_ms, sign_in
from tests.helpers.live import T0_US, TOKEN, collect, frame_messages, hello
from tests.helpers.tiny_bundle import TINY_SPEC, scene

pytestmark = pytest.mark.slow
FRAMES_PER_S = 30  # sent at about real time, so the camera stays online while the page looks


class Camera:
    """A camera streaming a wall from a thread of its own (Playwright's sync API holds an
    event loop in the test's) until `stop()`, which ends the stream and waits for its close."""

    def __init__(self, live, camera_id: str) -> None:
        self.live, self.camera_id = live, camera_id
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._run(),))
        self.thread.start()

    async def _run(self) -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with connect(self.live.ws_url, additional_headers=auth) as ws:
            await ws.send(json.dumps(hello(camera_id=self.camera_id)))
            events = asyncio.create_task(collect(ws))  # read, or the server closes it (4408)
            frame, i = scene(1), 0
            while not self.stopping.is_set():
                await ws.send(frame_messages(frame, [T0_US + i * 1_000_000 // FRAMES_PER_S])[0])
                i += 1
                await asyncio.sleep(1 / FRAMES_PER_S)
            await ws.send(json.dumps({"type": "end"}))
            assert (await events)[-1]["type"] == "end"

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def start(test_settings, make_server, tmp_path, preview: bool):
    db = str(tmp_path / "events.db")
    return make_server(dataclasses.replace(test_settings, preview=preview, events_db=db))


# make_server before tab: the page closes before its server stops, which then has no feed to
# wait for (2 s of graceful shutdown)
def test_with_preview_an_online_camera_s_tile_shows_its_depth_until_it_leaves(
    make_server, tab, test_settings, tmp_path
):
    from playwright.sync_api import expect

    live, page, camera_id = start(test_settings, make_server, tmp_path, True), tab.page, "bed 1"
    page.clock.install()  # the page's timers run when the test says: no 2 s waits for a poll
    sign_in(page, live.url)
    camera = Camera(live, camera_id)
    try:
        tile = page.locator(f'.tile[data-camera="{camera_id}"]')
        expect(tile).to_have_attribute("data-online", "true", timeout=WAIT_MS)
        page.clock.run_for(every_ms("PREVIEW_EVERY_MS"))  # the online tile's preview is read
        image = tile.locator("img.preview")
        expect(image).to_have_count(1, timeout=WAIT_MS)
        assert image.get_attribute("src").startswith("blob:")
        # the PNG the server made, decoded by the browser: the model's input size
        image.evaluate("img => img.decode()")
        size = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert size == [TINY_SPEC.width, TINY_SPEC.height]
        reads = [r for r in tab.requests if r.url.endswith("/preview")]
        assert reads and all(r.all_headers()["authorization"] == f"Bearer {TOKEN}" for r in reads)
    finally:
        camera.stop()
    expect(tile).to_have_attribute("data-online", "false", timeout=WAIT_MS)
    page.clock.run_for(every_ms("PREVIEW_EVERY_MS"))  # the next round drops the offline's
    expect(image).to_have_count(0, timeout=WAIT_MS)
    assert tab.errors == []


def test_without_preview_the_tile_shows_none(make_server, tab, test_settings, tmp_path):
    from playwright.sync_api import expect

    live, page, camera_id = start(test_settings, make_server, tmp_path, False), tab.page, "bed 2"
    camera = Camera(live, camera_id)
    try:
        page.clock.install()  # the page's timers run when the test says: no 2 s waits
        sign_in(page, live.url)
        tile = page.locator(f'.tile[data-camera="{camera_id}"]')
        expect(tile).to_have_attribute("data-online", "true", timeout=WAIT_MS)
        # the page asks for the online camera's preview, is told it is off, and shows none
        asked = page.expect_response(lambda r: r.url.endswith("/preview"), timeout=WAIT_MS)
        with asked as answer:
            page.clock.run_for(every_ms("PREVIEW_EVERY_MS"))
        assert answer.value.status == 404
        assert answer.value.json()["error"]["code"] == "preview_off"
        expect(tile).to_have_attribute("data-online", "true")
        expect(tile.locator("img")).to_have_count(0)
    finally:
        camera.stop()
    assert tab.errors == []
