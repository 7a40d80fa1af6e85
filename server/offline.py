"""Detection on a whole uploaded video: the paper's test-time procedure (design.md §7).

Frames are resampled by timestamp to the model's kept rate, cut into clips, each clip encoded
once; the sequence encoder scores windows of T_w clips every s_w clips
(`core.clip.window_starts`), each clip gets the mean of the windows containing it, and
`core.postprocess.segment` finds the actions. The model runs chunk by chunk on the shared model
thread, so live streams' batches slot in between an upload's chunks. `check_cost` refuses, before
any of it, a video whose timing claims far more frames than it holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from core.clip import ClipSpec, DepthPreprocessor, num_clips, resample_indices, video_clips
from core.foreground import crop_clip_mm
from core.postprocess import Segment, offline_clip_probs, segment
from server.engine import Engine


class TooShort(ValueError):
    """The video does not hold one clip."""


class TooSparse(ValueError):
    """Resampling would repeat the frames received more than the upsampling cap allows."""


class TooManyClips(ValueError):
    """The video makes more clips than one upload may."""


@dataclass
class OfflineResult:
    segments: list[Segment]
    probs: np.ndarray  # float64[n_clips, L+1], window-averaged
    kept: np.ndarray  # indices of the frames kept at the model's rate
    timings_ms: dict[str, float] = field(default_factory=dict)


async def detect(
    engine: Engine,
    frames: np.ndarray,
    timestamps_us: np.ndarray,
    model_executor: Executor,
    cpu_executor: Executor,
    chunk_clips: int = 32,
    max_clips: int | None = None,
    max_upsample: int | None = None,
    reference: np.ndarray | None = None,
) -> OfflineResult:
    """uint16 `frames[T, H, W]` with their timestamps -> segments and per-clip scores.

    Raises `TooSparse` / `TooManyClips` (before any work) past `max_upsample` / `max_clips`.
    A person-crop model crops each clip against `reference`, the camera's empty-room depth at
    the frames' size; None: each clip is the whole frame.
    """
    spec = engine.bundle.clip
    check_cost(len(frames), timestamps_us, spec, max_clips, max_upsample)
    loop = asyncio.get_running_loop()
    timings: dict[str, float] = {"preprocess": 0.0, "visual_encoder": 0.0}

    async def timed(name: str, executor: Executor, fn: Callable, *args: Any) -> Any:
        start = time.perf_counter()
        out = await loop.run_in_executor(executor, fn, *args)
        timings[name] = timings.get(name, 0.0) + 1000 * (time.perf_counter() - start)
        return out

    kept = resample_indices(timestamps_us, spec.kept_fps)
    n = num_clips(len(kept), spec)
    if n == 0:
        raise TooShort(
            f"{len(frames)} frames over {(timestamps_us[-1] - timestamps_us[0]) / 1e6:.2f} s give "
            f"{len(kept)} frames at the model's {spec.kept_fps:g} fps; one clip needs "
            f"{spec.clip_len} ({spec.clip_seconds:g} s)"
        )
    preprocess = DepthPreprocessor(spec, *frames.shape[1:])
    chunks = []
    for c0 in range(0, n, chunk_clips):
        c1 = min(n, c0 + chunk_clips)
        if spec.person_crop:
            cut = partial(_cropped_clips, preprocess, reference)
        else:
            cut = partial(_clips, preprocess)
        clips = await timed("preprocess", cpu_executor, cut, frames, kept, c0, c1)
        chunks.append(await timed("visual_encoder", model_executor, engine.encode_clips, clips))
    features = np.concatenate(chunks)

    def score_windows(windows: np.ndarray) -> np.ndarray:  # in chunks the engine can batch
        return np.concatenate(
            [engine.score_windows(windows[i : i + 64]) for i in range(0, len(windows), 64)]
        )

    probs = await timed(
        "sequence_encoder", model_executor, offline_clip_probs, features, spec, score_windows
    )
    start = time.perf_counter()
    segments = segment(probs, engine.bundle.activity_threshold)
    timings["postprocess"] = 1000 * (time.perf_counter() - start)
    return OfflineResult(segments, probs, kept, timings)


def check_cost(
    n_frames: int,
    timestamps_us: np.ndarray,
    spec: ClipSpec,
    max_clips: int | None,
    max_upsample: int | None,
) -> None:
    """Refuse a video whose cost is set by what it claims rather than by what it holds.

    Resampling to the model's rate keeps one frame per tick over the video's span, repeating
    frames where they are sparse: 2 frames claimed 10^5 s apart would make 10^6 kept frames.
    Kept frames are capped at `max_upsample` per frame received (counting at least one clip's
    worth), so the work stays proportional to the upload's size; clips at `max_clips`.
    Computed in Python numbers (no int64 overflow), before the resampler allocates ticks.
    """
    span_us = max(0, int(timestamps_us[-1]) - int(timestamps_us[0]))
    ticks = int(span_us * spec.kept_fps // 1_000_000) + 1  # the resampler's kept frames
    if max_upsample is not None and ticks > max_upsample * max(n_frames, spec.clip_len):
        raise TooSparse(
            f"{n_frames} frames over {span_us / 1e6:g} s would be {ticks} frames at the model's "
            f"{spec.kept_fps:g} fps, over {max_upsample} per frame received "
            f"(GD_MAX_UPLOAD_UPSAMPLE): check the fps or the timestamps"
        )
    clips = num_clips(ticks, spec)
    if max_clips is not None and clips > max_clips:
        raise TooManyClips(
            f"the video makes {clips} clips of {spec.clip_seconds:g} s, over the limit of "
            f"{max_clips} (GD_MAX_UPLOAD_CLIPS)"
        )


def _clips(
    preprocess: DepthPreprocessor, frames: np.ndarray, kept: np.ndarray, c0: int, c1: int
) -> np.ndarray:
    """float32[c1 - c0, T_c, H, W]: clips c0..c1-1, each kept frame preprocessed once."""
    spec = preprocess.spec
    lo, hi = c0 * spec.clip_step, (c1 - 1) * spec.clip_step + spec.clip_len
    return np.ascontiguousarray(video_clips(preprocess(frames[kept[lo:hi]]), spec))


def _cropped_clips(
    preprocess: DepthPreprocessor,
    reference: np.ndarray | None,
    frames: np.ndarray,
    kept: np.ndarray,
    c0: int,
    c1: int,
) -> np.ndarray:
    """float32[c1 - c0, T_c, H, W]: clips c0..c1-1 (on the grid: clip_step == clip_len), each
    cropped to its person box against `reference` (core/foreground.py), as a stream's are."""
    spec, n = preprocess.spec, preprocess.spec.clip_len
    normalize = DepthPreprocessor(spec, spec.height, spec.width)
    return np.stack(
        [normalize(crop_clip_mm(frames[kept[c * n : (c + 1) * n]], reference, spec))
         for c in range(c0, c1)]
    )  # fmt: skip


def frame_span(
    seg: Segment, spec: ClipSpec, timestamps_us: np.ndarray, kept: np.ndarray
) -> tuple[int, int]:
    """A segment's first and last frame in the upload's own numbering.

    It starts at the frame kept for its first tick and ends before the tick after its last
    clip (`core.clip.clip_source_span`'s convention): at the model's source_fps these are
    exactly `Segment.to_detection`'s frames, clipped to the video.
    """
    start = int(kept[seg.first_clip * spec.clip_step])
    end_tick = seg.last_clip * spec.clip_step + spec.clip_len
    end_us = int(timestamps_us[0]) + round(end_tick * (1e6 / spec.kept_fps))  # as the resampler
    end = int(np.searchsorted(timestamps_us, end_us)) - 1
    return start, max(start, end)
