"""A camera's empty-room reference: the per-pixel median of a few frames of the empty room.

A person-crop model finds the people in a camera's frames by comparing them with the room
without them (core.foreground), so each such camera needs one reference, captured once with
the camera fixed where it will stay and nobody in view (`gd-stream reference`). The median of
several frames removes the sensor's speckle and the readings that come and go on dark or
shiny surfaces; a pixel read in fewer than half the frames is 0 (no reading), which
core.foreground takes as "the room lies beyond the valid range".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from clients.sources import Frame, SourceError

DEFAULT_FRAMES = 30  # one second of a 30 fps camera: enough for a stable median
MAX_FRAMES = 300  # held in memory together: 300 frames of 1280x720 are 550 MB


def median_depth(frames: np.ndarray) -> np.ndarray:
    """uint16 [N, H, W] mm -> uint16 [H, W]: per pixel, the median of its non-zero readings
    (for an even count, the mean of the middle two rounded half up), 0 where fewer than half
    of the N frames had a reading."""
    n = len(frames)
    if frames.ndim != 3 or n == 0:
        raise ValueError(f"need frames [N, H, W] with N >= 1, got shape {frames.shape}")
    ordered = np.sort(frames, axis=0)  # each pixel's zeros first, then its readings in order
    count = np.count_nonzero(frames, axis=0)
    first = n - count  # where each pixel's readings start in `ordered`

    def at(rank: np.ndarray) -> np.ndarray:
        index = np.minimum(first + rank, n - 1)[None]  # pixels without readings are dropped
        return np.take_along_axis(ordered, index, axis=0)[0].astype(np.int32)

    median = (at((count - 1) // 2) + at(count // 2) + 1) // 2
    return np.where(2 * count >= n, median, 0).astype(np.uint16)


def capture(
    frames: Iterator[Frame], n: int, progress: Callable[[int], None] | None = None
) -> np.ndarray:
    """The reference (uint16 [H, W] mm) from the next `n` frames of a source.

    Raises `SourceError` when the source ends before `n` frames or changes its frame size.
    `progress(k)` is called after each frame with the number read so far.
    """
    if not 1 <= n <= MAX_FRAMES:
        raise ValueError(f"the number of frames must be in 1..{MAX_FRAMES}, got {n}")
    stack: np.ndarray | None = None
    k = 0
    for _, image in frames:
        if stack is None:
            stack = np.empty((n, *image.shape), np.uint16)
        if image.shape != stack.shape[1:]:
            h, w = stack.shape[1:]
            raise SourceError(
                f"frame {k} is {image.shape[1]}x{image.shape[0]}, the first {w}x{h}: a "
                "reference needs one frame size"
            )
        stack[k] = image
        k += 1
        if progress is not None:
            progress(k)
        if k == n:
            return median_depth(stack)
    raise SourceError(
        f"the source ended after {k} frames; a reference of {n} needs more (or --frames {k})"
        if k
        else "the source gave no frames"
    )
