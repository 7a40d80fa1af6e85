"""The server tests' standard recording, and streaming it to a live server."""

import asyncio

import numpy as np

from core.clip import frame_timestamps_us
from tests.helpers.live import T0_US, StreamResult, run_stream
from tests.helpers.tiny_bundle import scene

# 150 frames at 30 fps = 50 kept frames = 12 clips of 4 (0.4 s each, 12 source frames)
ACTIONS = ((24, 72, 0.15), (96, 132, 0.5))  # clips 2-5 "small", clips 8-10 "large"
FRAMES = scene(150, actions=ACTIONS)

TS = frame_timestamps_us(len(FRAMES), 30) + T0_US  # what run_stream sends for FRAMES


def stream(url: str, frames: np.ndarray = FRAMES, **kw) -> StreamResult:
    return asyncio.run(run_stream(url, frames, **kw))
