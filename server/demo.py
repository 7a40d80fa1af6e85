"""The built-in demo source (`gd-serve --demo`, what `make run` starts).

A scripted synthetic scene from `synth` is streamed in real time into this server's own
`/v1/stream`, over loopback, through exactly the path a camera's frames take, rendered as the
default model's camera sees (a RealSense D435 in VGA mode, scaled to 120x160). Before each scene
its empty room is stored as the camera's reference (`PUT /v1/cameras/demo/reference`), as an
installer captures one, so a person-crop model crops as it would at a site. The events are
logged beside the scene's ground truth (the generator knows which action it scripted when) with
a running hit rate, so a newcomer sees at once what was detected and whether it was right; the
stream shows in `/metrics`. Scenes follow one another (a new seed each) until the server stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

import httpx
import numpy as np
import websockets

from core.truth import TruthCheck, true_actions
from core.wire import Hello, encode_image, pack_frame
from synth.cameras import camera_profile
from synth.generate import TARGET_CLASSES, Shot, class_names, detection_shot

log = logging.getLogger("gd.demo")
CAMERA_ID = "demo"
FPS = 30.0


CAMERA = "d435-vga"  # the default model's camera (models/default/README.md)
SIZE = (120, 160)


def render_scene(seed: int, n_actions: int = 6) -> Shot:
    """One scripted synthetic scene, before filming: `.film()` gives the depth frames
    (`.depth`, uint16 [T, H, W]) and the actions they hold (`.segments`); `.reference()` the
    empty room."""
    fov = camera_profile(CAMERA).fov
    return detection_shot(seed=seed, subject=1, camera=2, n_actions=n_actions, fps=FPS,
                          size=SIZE, depth_fov=fov)  # fmt: skip


async def store_reference(url: str, token: str | None, reference: np.ndarray) -> None:
    """PUT the scene's empty room as the demo camera's reference (`url`: the stream's)."""
    http = url.replace("ws://", "http://", 1).removesuffix("/v1/stream")
    headers = {"Content-Type": "image/png"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient() as client:
        r = await client.put(f"{http}/v1/cameras/{CAMERA_ID}/reference",
                             content=encode_image(reference, "png"), headers=headers)  # fmt: skip
    r.raise_for_status()


async def stream_scene(
    url: str,
    token: str | None,
    frames: np.ndarray,
    encoding: str,
    truth: TruthCheck | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Stream one scene in real time (as `clock` tells it) and log its events, each detection
    beside the true action it overlaps when `truth` holds the scene's actions; returns the
    number of actions."""
    hello = Hello(CAMERA_ID, frames.shape[2], frames.shape[1], FPS, encoding=encoding, token=token)
    actions = 0
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps(hello.to_message()))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"demo stream refused: {ready}")

        async def send() -> None:
            start = clock()
            for i, frame in enumerate(frames):
                await asyncio.sleep(max(0.0, start + i / FPS - clock()))
                await ws.send(pack_frame(round(i * 1e6 / FPS), i, frame, encoding))
            await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        try:
            async for message in ws:
                event = json.loads(message)
                if event.get("type") == "action" and event.get("state") == "end":
                    actions += 1
                    label, start_s = event.get("label"), event.get("start_s", 0.0)
                    end_s = event.get("end_s", 0.0)
                    checked = ""
                    if truth is not None:
                        checked = f"; {truth.describe(truth.check(label, start_s, end_s))}"
                    log.info(
                        "demo: %s from %.1f s to %.1f s (confidence %.2f)%s",
                        label, start_s, end_s, event.get("confidence", 0.0), checked,
                    )  # fmt: skip
                elif event.get("type") in ("warning", "error"):
                    log.warning("demo: %s", event)
        finally:
            sender.cancel()
    return actions


async def run_demo(url: str, token: str | None, encoding: str = "zstd") -> None:
    """Play scene after scene until cancelled; a failed scene is logged, then the next one."""
    seed, names = 0, class_names(TARGET_CLASSES)
    while True:
        try:
            shot = await asyncio.to_thread(render_scene, seed)
            scene = await asyncio.to_thread(shot.film)
            await store_reference(url, token, shot.reference())
            frames = scene.depth
            truth = TruthCheck()
            truth.add(true_actions(scene.segments, names, FPS))
            log.info(
                "demo: streaming scene %d (%.0f s, true actions: %s) to %s",
                seed, len(frames) / FPS, ", ".join(a.label for a in truth.actions), url,
            )  # fmt: skip
            actions = await stream_scene(url, token, frames, encoding, truth)
            log.info("demo: scene %d done, %d action(s) detected: %s", seed, actions,
                     truth.summary())  # fmt: skip
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the demo must never take the server down
            log.warning("demo: scene %d failed: %s", seed, e)
            await asyncio.sleep(2.0)
        seed += 1
