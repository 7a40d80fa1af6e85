"""The built-in demo source (`gd-serve --demo`, what `make run` starts).

A scripted synthetic scene from `synth` is streamed in real time into this server's own
`/v1/stream`, over loopback, through exactly the path a camera's frames take. The events are
logged, so a newcomer sees detections in the log at once, and the stream shows in `/metrics`.
Scenes follow one another (a new seed each) until the server stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import numpy as np
import websockets

from core.wire import Hello, pack_frame
from synth.generate import detection_video

log = logging.getLogger("gd.demo")
CAMERA_ID = "demo"
FPS = 30.0


def render_scene(seed: int, n_actions: int = 6) -> np.ndarray:
    """Depth frames (uint16 [T, H, W]) of one scripted synthetic scene."""
    return detection_video(seed=seed, subject=1, camera=2, n_actions=n_actions).depth


async def stream_scene(url: str, token: str | None, frames: np.ndarray, encoding: str) -> int:
    """Stream one scene in real time and log its events; returns the number of actions."""
    hello = Hello(CAMERA_ID, frames.shape[2], frames.shape[1], FPS, encoding=encoding, token=token)
    actions = 0
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps(hello.to_message()))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"demo stream refused: {ready}")

        async def send() -> None:
            start = time.monotonic()
            for i, frame in enumerate(frames):
                await asyncio.sleep(max(0.0, start + i / FPS - time.monotonic()))
                await ws.send(pack_frame(round(i * 1e6 / FPS), i, frame, encoding))
            await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        try:
            async for message in ws:
                event = json.loads(message)
                if event.get("type") == "action" and event.get("state") == "end":
                    actions += 1
                    log.info(
                        "demo: %s from %.1f s to %.1f s (confidence %.2f)",
                        event.get("label"), event.get("start_s", 0.0), event.get("end_s", 0.0),
                        event.get("confidence", 0.0),
                    )  # fmt: skip
                elif event.get("type") in ("warning", "error"):
                    log.warning("demo: %s", event)
        finally:
            sender.cancel()
    return actions


async def run_demo(url: str, token: str | None, encoding: str = "zstd") -> None:
    """Play scene after scene until cancelled; a failed scene is logged, then the next one."""
    seed = 0
    while True:
        try:
            frames = await asyncio.to_thread(render_scene, seed)
            log.info("demo: streaming scene %d (%.0f s) to %s", seed, len(frames) / FPS, url)
            actions = await stream_scene(url, token, frames, encoding)
            log.info("demo: scene %d done, %d action(s) detected", seed, actions)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the demo must never take the server down
            log.warning("demo: scene %d failed: %s", seed, e)
            await asyncio.sleep(2.0)
        seed += 1
