"""Limits and defaults every part applies to what a camera, a file or a model declares: one
home each.

The hello of a stream (`core.wire`), an upload (`server.uploads`), a file or camera source
(`clients.sources`) and a clip spec (`core.clip`) check against these same numbers, so that
what one part accepts the next one does too.
"""

from __future__ import annotations

import math

MAX_SIDE = 4096  # pixels a side of a depth frame (or a model input): above any depth camera
MAX_FPS = 1000  # frames per second a camera, a file or a clip spec may declare
MILLIMETRES = 0.001  # depth units (metres per unit) of millimetre frames: RealSense z16's default


def valid_fps(fps: float) -> bool:
    """Whether `fps` is a usable frame rate: finite, in (0, MAX_FPS]."""
    return math.isfinite(fps) and 0 < fps <= MAX_FPS


def fps_message(fps: float, name: str = "fps") -> str:
    """What every part says of a frame rate `valid_fps` refuses."""
    return f"{name} must be in (0, {MAX_FPS}], got {fps:g}"
