"""The clip contract: how depth frames become network input, shared by training, export, server
and clients (design.md §3).

A stream of uint16 millimetre frames is resampled by timestamp to `source_fps / downsample`,
each kept frame is reduced to the spec's size and normalized, and `clip_len` kept frames make a
clip `float32[clip_len, height, width]`. Clip `c` covers kept frames `[c*clip_step,
c*clip_step + clip_len)`. With `person_crop`, each clip is first cropped to the box of the
person in it, against the camera's empty-room reference (core.foreground).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from core.limits import MAX_SIDE, fps_message, valid_fps

INVALID = 0  # depth value of a pixel without a measurement (RealSense z16, Kinect v2)
_SENTINEL = np.iinfo(np.uint16).max  # stands for "invalid" while min-pooling
# How a frame of another aspect ratio becomes the model's input (see DepthPreprocessor).
FITS = ("stretch", "crop", "pad")


class ClipSpecError(ValueError):
    """A ClipSpec field is missing, of the wrong type or out of range."""


class TimestampError(ValueError):
    """Frame timestamps went backwards or repeated."""


@dataclass(frozen=True)
class ClipSpec:
    """Frame handling every model carries; defaults are the paper's, at a CPU-sized resolution."""

    source_fps: float = 30.0
    downsample: int = 3
    clip_len: int = 10
    clip_step: int = 10
    window: int = 10
    window_step: int = 5
    height: int = 112
    width: int = 112
    depth_min_mm: int = 500
    depth_max_mm: int = 4500
    mean: float = 0.0
    std: float = 1.0
    fit: str = "stretch"  # absent in model.json files written before it existed
    # Each clip cropped to its person box against the camera's empty-room reference
    # (core.foreground); False in model.json files written before it existed.
    person_crop: bool = False

    def __post_init__(self) -> None:
        for name in ("downsample", "clip_len", "clip_step", "window", "window_step"):
            _check_int(name, getattr(self, name), low=1)
        for name in ("height", "width"):
            _check_int(name, getattr(self, name), low=1, high=MAX_SIDE)
        # 0 is the invalid value, so the valid range starts at 1 mm.
        for name in ("depth_min_mm", "depth_max_mm"):
            _check_int(name, getattr(self, name), low=1, high=_SENTINEL - 1)
        for name in ("source_fps", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ClipSpecError(f"{name} must be a number, got {value!r}")
            if not np.isfinite(value):
                raise ClipSpecError(f"{name} must be finite, got {value!r}")
        if not valid_fps(self.source_fps):
            raise ClipSpecError(fps_message(self.source_fps, "source_fps"))
        if self.depth_min_mm >= self.depth_max_mm:
            raise ClipSpecError(
                f"depth_min_mm ({self.depth_min_mm}) must be below depth_max_mm "
                f"({self.depth_max_mm})"
            )
        if self.window_step > self.window:
            raise ClipSpecError(
                f"window_step ({self.window_step}) must not exceed window ({self.window}): "
                "clips between windows would never be scored"
            )
        if self.std <= 0:
            raise ClipSpecError(f"std must be positive, got {self.std}")
        if not isinstance(self.person_crop, bool):
            raise ClipSpecError(f"person_crop must be true or false, got {self.person_crop!r}")
        if self.person_crop and self.clip_step != self.clip_len:
            raise ClipSpecError("person_crop needs clip_step == clip_len (one box per clip)")
        if self.fit not in FITS:
            raise ClipSpecError(f"fit must be one of {', '.join(FITS)}, got {self.fit!r}")

    @property
    def kept_fps(self) -> float:
        """Frame rate after downsampling: the rate clips are made at."""
        return self.source_fps / self.downsample

    @property
    def clip_seconds(self) -> float:
        """Duration one clip covers."""
        return self.clip_len / self.kept_fps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipSpec:
        if not isinstance(data, dict):
            raise ClipSpecError(f"clip spec must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ClipSpecError(f"unknown clip spec field(s): {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ClipSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ClipSpecError(f"clip spec is not valid JSON: {e}") from e
        return cls.from_dict(data)

    def depth_to_unit(self, depth_mm: np.ndarray) -> np.ndarray:
        """Scale valid depth to (0, 1] as `depth / depth_max_mm`; invalid stays 0.

        Dividing by the maximum (not min-max scaling) keeps valid depth strictly above the
        invalid value, so the network can tell "no measurement" from "near".
        """
        depth = np.asarray(depth_mm)
        valid = (depth >= self.depth_min_mm) & (depth <= self.depth_max_mm)
        return np.where(valid, depth / np.float32(self.depth_max_mm), 0).astype(np.float32)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ClipSpecError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ClipSpecError(f"{name} must be {bound}, got {value}")


# --- depth preprocessing -------------------------------------------------------------------


class DepthPreprocessor:
    """Turns uint16 millimetre frames of one input size into normalized float32 frames.

    The spec's `fit` says what happens when the frame's aspect ratio is not the model's:
    `stretch` scales each axis on its own (squashes a 4:3 frame into a square input),
    `crop` keeps the centred part of the frame with the model's aspect ratio, and `pad`
    scales the whole frame into the centred box of the input with the frame's aspect ratio
    and leaves the bands around it invalid (letterbox). A frame that already has the model's
    aspect ratio (in particular one at the model's size) is treated the same by all three.

    Downscaling min-pools each output pixel's block over its *valid* pixels (the nearest
    surface wins and holes never average into depth); upscaling takes the nearest pixel.
    Out-of-range depth is invalid before pooling, so a far wall cannot hide behind a hole.

    Per-frame cost matters (every frame of every stream): subtracting `depth_min_mm` in uint16
    wraps every invalid value (0, too near) above every valid one, and too-far values land
    above them too, so pooling runs on the raw frame (a crop is a view of it) with a single
    subtraction, and the lookup table that validates, scales and normalizes runs on the small
    output only.
    """

    def __init__(self, spec: ClipSpec, in_height: int, in_width: int) -> None:
        if in_height < 1 or in_width < 1:
            raise ValueError(f"input frame size must be positive, got {in_height}x{in_width}")
        self.spec = spec
        self.in_shape = (in_height, in_width)
        out_shape = (spec.height, spec.width)
        self.source, self.target = fit_regions(spec.fit, self.in_shape, out_shape)
        (r0, r1), (c0, c1) = self.source
        (t0, t1), (l0, l1) = self.target
        self._rows = _pool_offsets(r1 - r0, t1 - t0)
        self._cols = _pool_offsets(c1 - c0, l1 - l0)
        self._padded = self.target != ((0, spec.height), (0, spec.width))
        self._span = spec.depth_max_mm - spec.depth_min_mm  # largest shifted valid value

    @cached_property
    def _to_float(self) -> np.ndarray:
        # shifted uint16 -> normalized float32; everything past the valid span is invalid.
        spec = self.spec
        unit = np.zeros(_SENTINEL + 1, dtype=np.float32)
        valid_mm = np.arange(spec.depth_min_mm, spec.depth_max_mm + 1, dtype=np.float32)
        unit[: self._span + 1] = valid_mm / np.float32(spec.depth_max_mm)
        return ((unit - np.float32(spec.mean)) / np.float32(spec.std)).astype(np.float32)

    @cached_property
    def _to_mm(self) -> np.ndarray:
        mm = np.zeros(_SENTINEL + 1, dtype=np.uint16)
        mm[: self._span + 1] = np.arange(self.spec.depth_min_mm, self.spec.depth_max_mm + 1)
        return mm

    def _pooled(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.dtype != np.uint16:
            raise ValueError(f"depth frames must be uint16 millimetres, got {frames.dtype}")
        if frames.ndim < 2 or frames.shape[-2:] != self.in_shape:
            raise ValueError(f"depth frames must end in shape {self.in_shape}, got {frames.shape}")
        (r0, r1), (c0, c1) = self.source
        shifted = frames[..., r0:r1, c0:c1] - np.uint16(self.spec.depth_min_mm)  # wraps
        pooled = _min_pool(_min_pool(shifted, self._rows, axis=-2), self._cols, axis=-1)
        if not self._padded:
            return pooled
        out = np.full((*pooled.shape[:-2], self.spec.height, self.spec.width), _SENTINEL, np.uint16)
        (t0, t1), (l0, l1) = self.target
        out[..., t0:t1, l0:l1] = pooled
        return out

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """`uint16[..., H_in, W_in]` -> `float32[..., height, width]`."""
        return self._to_float[self._pooled(frames)]

    def to_millimetres(self, frames: np.ndarray) -> np.ndarray:
        """The same reduction kept in uint16 mm (0 = invalid): what a client sends the server.

        The server's preprocessor for frames at the model's size maps this output to exactly
        what `__call__` gives for the original frame, for every `fit`.
        """
        return self._to_mm[self._pooled(frames)]


Region = tuple[tuple[int, int], tuple[int, int]]  # ((row0, row1), (col0, col1)), ends exclusive


def fit_regions(
    fit: str, in_shape: tuple[int, int], out_shape: tuple[int, int]
) -> tuple[Region, Region]:
    """(source, target): the part of the input frame that is resized into the part of the
    model input; model pixels outside the target are invalid.

    Sizes are rounded to the nearest pixel and boxes centred (an odd leftover pixel goes to the
    bottom or right). Equal aspect ratios give the whole frame into the whole input.
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    (h_in, w_in), (h_out, w_out) = in_shape, out_shape
    whole_in, whole_out = ((0, h_in), (0, w_in)), ((0, h_out), (0, w_out))
    if fit == "stretch" or h_in * w_out == w_in * h_out:
        return whole_in, whole_out
    wider = w_in * h_out > h_in * w_out  # the frame is wider than the model input
    if fit == "crop":  # the largest centred box of the frame with the model's aspect ratio
        if wider:
            return ((0, h_in), _centred(_ratio(h_in * w_out, h_out), w_in)), whole_out
        return (_centred(_ratio(w_in * h_out, w_out), h_in), (0, w_in)), whole_out
    if wider:  # pad: the largest centred box of the input with the frame's aspect ratio
        return whole_in, (_centred(_ratio(w_out * h_in, w_in), h_out), (0, w_out))
    return whole_in, ((0, h_out), _centred(_ratio(h_out * w_in, h_in), w_out))


def _ratio(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, at least 1 (exact integer arithmetic)."""
    return max(1, (2 * numerator + denominator) // (2 * denominator))


def _centred(size: int, total: int) -> tuple[int, int]:
    start = (total - size) // 2
    return start, start + size


def _pool_offsets(n_in: int, n_out: int) -> np.ndarray | None:
    """Input indices `[k, i]` whose minimum over k is output pixel i along one axis.

    Downscaling: output i pools input `[i*n_in//n_out, (i+1)*n_in//n_out)`; shorter blocks
    repeat their last index (min is idempotent), so pooling is a few whole-row gathers.
    Upscaling: one row of nearest indices. Same size: nothing to do.
    """
    if n_in == n_out:
        return None
    if n_out > n_in:
        centres = ((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.intp)
        return np.minimum(centres, n_in - 1)[None, :]
    starts = (np.arange(n_out) * n_in) // n_out
    ends = (np.arange(1, n_out + 1) * n_in) // n_out
    offsets = np.arange((ends - starts).max())[:, None]
    return np.minimum(starts[None, :] + offsets, ends[None, :] - 1)


def _min_pool(a: np.ndarray, offsets: np.ndarray | None, axis: int) -> np.ndarray:
    if offsets is None:
        return a
    out = np.take(a, offsets[0], axis=axis)
    for index in offsets[1:]:
        np.minimum(out, np.take(a, index, axis=axis), out=out)
    return out


def preprocess_depth(frames: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """One-off convenience: `uint16[..., H, W]` mm -> `float32[..., height, width]`."""
    frames = np.asarray(frames)
    if frames.ndim < 2:
        raise ValueError(f"depth frames need at least 2 dimensions, got shape {frames.shape}")
    return DepthPreprocessor(spec, *frames.shape[-2:])(frames)


# --- timestamp resampling ------------------------------------------------------------------


class TimestampResampler:
    """Keeps, for each tick of `rate_hz` from the first frame on, the frame nearest to it.

    Cameras drop frames and run at 15-90 fps, so counting frames would stretch or squeeze time;
    ticks do not. A gap longer than a tick repeats the nearest frame, so a clip always spans the
    same duration. Ties go to the earlier frame. `push` returns the frames decided so far;
    a tick is decided once a frame at or after it has arrived.
    """

    def __init__(self, rate_hz: float) -> None:
        if not rate_hz > 0:
            raise ValueError(f"resampling rate must be positive, got {rate_hz}")
        self.period_us = 1e6 / rate_hz
        self._t0: int | None = None
        self._tick = 0
        self._prev: tuple[int, Any] | None = None

    def tick_time(self, k: int) -> int:
        """Timestamp (µs) of tick `k`."""
        if self._t0 is None:
            raise RuntimeError("no frame has been pushed yet")
        return self._t0 + round(k * self.period_us)

    def push(self, timestamp_us: int, frame: Any) -> list[tuple[int, Any]]:
        """Feed one frame; returns `(tick, frame)` for every tick now decided, in order."""
        t = int(timestamp_us)
        if self._prev is not None and t <= self._prev[0]:
            raise TimestampError(f"timestamps must increase: {t} µs after {self._prev[0]} µs")
        if self._t0 is None:
            self._t0 = t
        out = []
        while (tick_t := self.tick_time(self._tick)) <= t:
            prev = self._prev
            if prev is not None and tick_t - prev[0] <= t - tick_t:
                out.append((self._tick, prev[1]))
            else:
                out.append((self._tick, frame))
            self._tick += 1
        self._prev = (t, frame)
        return out


def resample_indices(timestamps_us: np.ndarray, rate_hz: float) -> np.ndarray:
    """Offline resampling: indices of the frames `TimestampResampler` would keep, vectorized."""
    ts = np.asarray(timestamps_us, dtype=np.int64)
    if ts.ndim != 1:
        raise ValueError(f"timestamps must be 1-D, got shape {ts.shape}")
    if ts.size == 0:
        return np.zeros(0, dtype=np.intp)
    bad = np.flatnonzero(np.diff(ts) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise TimestampError(
            f"timestamps must increase: frame {i} at {ts[i]} µs after {ts[i - 1]} µs"
        )
    period = 1e6 / rate_hz
    n_ticks = int(np.floor((ts[-1] - ts[0]) / period)) + 1
    ticks = ts[0] + np.round(np.arange(n_ticks + 1) * period).astype(np.int64)
    ticks = ticks[ticks <= ts[-1]]  # guards the float floor above
    after = np.searchsorted(ts, ticks, side="left")  # first frame at or after the tick
    before = np.maximum(after - 1, 0)
    take_before = (after > 0) & (ticks - ts[before] <= ts[after] - ticks)
    return np.where(take_before, before, after)


def frame_timestamps_us(n_frames: int, fps: float) -> np.ndarray:
    """Timestamps of a constant-rate recording, in whole microseconds."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return np.round(np.arange(n_frames) * (1e6 / fps)).astype(np.int64)


# --- clip and window index math ------------------------------------------------------------


def parse_size(text: str, minimum: int = 1) -> tuple[int, int]:
    """`"HxW"` (as the CLIs and configs write frame sizes) -> `(height, width)`."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like HxW (e.g. 112x112), got {text!r}") from None
    if h < minimum or w < minimum:
        raise ValueError(f"size must be at least {minimum}x{minimum}, got {text!r}")
    return h, w


def num_clips(n_kept_frames: int, spec: ClipSpec) -> int:
    """Clips that fit whole in `n_kept_frames` kept frames."""
    if n_kept_frames < spec.clip_len:
        return 0
    return (n_kept_frames - spec.clip_len) // spec.clip_step + 1


def clip_kept_start(spec: ClipSpec, c: int | np.ndarray) -> int | np.ndarray:
    """First kept frame of clip `c`."""
    return c * spec.clip_step


def clip_source_span(spec: ClipSpec, c: int | np.ndarray) -> tuple[Any, Any]:
    """Source frames `(start, end)`, end inclusive, of clip `c` (the released code's conversion).

    These are the frame numbers detections and the metric use.
    """
    start = c * spec.clip_step * spec.downsample
    end = (c * spec.clip_step + spec.clip_len) * spec.downsample - 1
    return start, end


@dataclass(frozen=True)
class SourceSpan:
    """Where clips lie in the source video: frames (inclusive) and seconds (end exclusive), at
    the model's `source_fps`, counted from the video's (or stream's) first frame."""

    start_frame: int
    end_frame: int
    start_s: float
    end_s: float


def clips_span(spec: ClipSpec, first: int, last: int, offset_frames: int = 0) -> SourceSpan:
    """The span of clips `first..last` (inclusive); `offset_frames` source frames come before
    clip 0 (a stream segment that starts after a gap). The one place clip numbers become the
    frames and seconds of detections, clip scores and stream events."""
    start_frame = offset_frames + clip_source_span(spec, first)[0]
    end_frame = offset_frames + clip_source_span(spec, last)[1]
    return SourceSpan(
        int(start_frame),
        int(end_frame),
        start_frame / spec.source_fps,
        (end_frame + 1) / spec.source_fps,  # the end frame's own duration is inside the span
    )


def video_clips(kept_frames: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """All clips of a video on the clip grid: `[n_kept, ...]` -> `[n_clips, clip_len, ...]`.

    A read-only strided view (no copy); clip `c` is kept frames
    `[c*clip_step, c*clip_step + clip_len)`.
    """
    frames = np.asarray(kept_frames)
    n = num_clips(len(frames), spec)
    if n == 0:
        return np.zeros((0, spec.clip_len, *frames.shape[1:]), frames.dtype)
    windows = np.lib.stride_tricks.sliding_window_view(frames, spec.clip_len, axis=0)
    # sliding_window_view puts the window axis last; move it next to the clip axis.
    return np.moveaxis(windows[:: spec.clip_step][:n], -1, 1)


def window_starts(n_clips: int, window: int, step: int) -> np.ndarray:
    """First clips of the offline windows over a video of `n_clips` clips.

    Windows start every `step` clips while they fit; one more window, flush with the end,
    covers any clips left over. A video shorter than a window gets one shorter window.
    """
    if not 1 <= step <= window:
        raise ValueError(f"need 1 <= step <= window, got step {step}, window {window}")
    if n_clips <= 0:
        return np.zeros(0, dtype=np.intp)
    if n_clips <= window:
        return np.zeros(1, dtype=np.intp)
    starts = np.arange(0, n_clips - window + 1, step)
    if starts[-1] + window < n_clips:
        starts = np.append(starts, n_clips - window)
    return starts.astype(np.intp)
