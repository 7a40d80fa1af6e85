"""RealSense recordings: read depth (and colour) from `.bag` (ROS1) / `.db3` (ROS2) through
librealsense playback, record a device's streams through librealsense's own recorder, and a
software camera that arrays are pushed into (how `.db3` recordings are written from numpy).

Depth comes back as uint16 millimetres, colour as uint8 RGB, timestamps in microseconds, ready
for `core.clip`. pyrealsense2 is imported inside the functions, so `core` imports without it.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MM_PER_METRE = 1000.0
DEPTH, COLOR = "depth", "color"  # the streams read and written: z16 depth, rgb8 colour
BYTES_PER_PIXEL = {DEPTH: 2, COLOR: 3}
KINDS = {DEPTH: "z16 depth", COLOR: "rgb8 colour"}  # for messages
STOP_WAIT_S = 2.0  # for playback to say it stopped after `sensor.stop()`


class RealSenseError(ValueError):
    """A recording cannot be read or written (missing library, no depth stream, too large)."""


class RecordingTooLarge(RealSenseError):
    """A recording holds more frames or pixels than the caller allows."""


@dataclass(frozen=True)
class DepthRecording:
    frames: np.ndarray  # uint16[T, H, W] millimetres, 0 = invalid
    timestamps_us: np.ndarray  # int64[T], increasing
    fps: float  # the stream's nominal rate
    depth_units: float  # metres per unit in the file (frames are converted to mm)


@dataclass(frozen=True)
class ColorRecording:
    frames: np.ndarray  # uint8[T, H, W, 3] RGB
    timestamps_us: np.ndarray  # int64[T], increasing
    fps: float  # the stream's nominal rate


@dataclass(frozen=True)
class StreamInfo:
    fps: float  # nominal rate
    width: int
    height: int
    depth_units: float  # metres per unit in the file (1 mm for colour: unused)


def _rs():
    try:
        import pyrealsense2
    except ImportError as e:
        raise RealSenseError(
            "reading RealSense recordings needs pyrealsense2 (pip install 'gd-detect[realsense]')"
        ) from e
    return pyrealsense2


def _format(rs, stream: str):
    return {DEPTH: rs.format.z16, COLOR: rs.format.rgb8}[stream]


def _rs_stream(rs, stream: str):
    return {DEPTH: rs.stream.depth, COLOR: rs.stream.color}[stream]


# --- reading -------------------------------------------------------------------------------


def play(
    path: str | Path,
    stream: str,
    on_frame: Callable[[int, np.ndarray], None],
    max_frames: int | None = None,
    max_bytes: int | None = None,
    timeout_s: float = 60.0,
) -> StreamInfo | None:
    """Call `on_frame(timestamp_us, pixels)` for each frame of one stream of a recording
    (`"depth"` in uint16 mm, `"color"` uint8 RGB), as fast as playback delivers them, on
    librealsense's thread. `pixels` may be librealsense's buffer, valid only during the call:
    copy what you keep. An exception from `on_frame` stops playback and is raised here.

    Returns None when the recording has no such stream. Raises `RealSenseError` for an
    unreadable file, more than `max_frames` frames or `max_bytes` of pixels (checked as frames
    arrive, so a large file stops early), or playback unfinished after `timeout_s`.
    """
    rs = _rs()
    name = Path(path).name
    device = _load(rs, path)
    playback = device.as_playback()
    playback.set_real_time(False)  # as fast as we read, and no frame skipped
    found = _find_stream(rs, device, stream)
    if found is None:
        return None
    sensor, profile = found
    units = 0.001
    if stream == DEPTH and sensor.supports(rs.option.depth_units):
        # librealsense keeps the option in float32: 0.001 reads back as 0.0010000000475.
        units = float(f"{sensor.get_option(rs.option.depth_units):.6g}")
    video = profile.as_video_stream_profile()
    info = StreamInfo(float(profile.fps()), video.width(), video.height(), units)
    frame_bytes = BYTES_PER_PIXEL[stream] * info.width * info.height
    limit = _frame_limit(max_frames, max_bytes, frame_bytes)
    count = 0
    done = threading.Event()
    too_many = threading.Event()
    failed: list[BaseException] = []

    def on_rs_frame(frame) -> None:  # librealsense's thread
        nonlocal count
        if done.is_set():
            return
        if count >= limit:
            too_many.set()
            done.set()
            return
        count += 1
        pixels = np.asanyarray(frame.get_data())
        if stream == DEPTH and units != 0.001:
            pixels = to_millimetres(pixels, units)
        try:
            on_frame(round(frame.get_timestamp() * 1000.0), pixels)  # ms -> µs
        except BaseException as e:  # raised again on the caller's thread
            failed.append(e)
            done.set()

    stopped = threading.Event()

    def on_status(status) -> None:
        if status == rs.playback_status.stopped:
            stopped.set()
            done.set()

    playback.set_status_changed_callback(on_status)
    sensor.open(profile)
    sensor.start(on_rs_frame)
    try:
        finished = done.wait(timeout_s)
    finally:
        sensor.stop()
        sensor.close()
        # Playback goes on delivering on its own thread for a moment after an early stop;
        # releasing the device before it says it stopped crashed the process now and then
        # (a segfault in librealsense, under load).
        stopped.wait(STOP_WAIT_S)
    if failed:
        raise failed[0]
    if too_many.is_set():
        raise RecordingTooLarge(
            f"{name}: more than {limit} {stream} frames of {info.width}x{info.height} "
            f"(limits: {max_frames} frames, {max_bytes} bytes)"
        )
    if not finished:
        raise RealSenseError(f"{name}: playback did not finish in {timeout_s} s")
    return info


def read_depth(
    path: str | Path,
    max_frames: int | None = None,
    max_bytes: int | None = None,
    timeout_s: float = 60.0,
) -> DepthRecording:
    """All depth frames of a recording in millimetres (limits as `play`).

    Raises `RealSenseError` when the file has no z16 depth stream or no depth frame.
    """
    frames, stamps, info = _collect(path, DEPTH, max_frames, max_bytes, timeout_s)
    return DepthRecording(frames, stamps, info.fps, info.depth_units)


def read_color(
    path: str | Path,
    max_frames: int | None = None,
    max_bytes: int | None = None,
    timeout_s: float = 60.0,
) -> ColorRecording | None:
    """All colour frames (RGB) of a recording, or None when it has no rgb8 colour stream."""
    if not has_stream(path, COLOR):
        return None
    frames, stamps, info = _collect(path, COLOR, max_frames, max_bytes, timeout_s)
    return ColorRecording(frames, stamps, info.fps)


def has_stream(path: str | Path, stream: str) -> bool:
    """Whether the recording holds a `"depth"` (z16) or `"color"` (rgb8) stream."""
    rs = _rs()
    return _find_stream(rs, _load(rs, path), stream) is not None


def _load(rs, path: str | Path):
    try:
        return rs.context().load_device(str(path))
    except RuntimeError as e:
        raise RealSenseError(f"{Path(path).name}: not a readable RealSense recording ({e})") from e


def _collect(path, stream, max_frames, max_bytes, timeout_s):
    frames: list[np.ndarray] = []
    stamps: list[int] = []

    def keep(t_us: int, pixels: np.ndarray) -> None:
        stamps.append(t_us)
        frames.append(np.array(pixels))  # librealsense recycles its buffer: copy

    info = play(path, stream, keep, max_frames, max_bytes, timeout_s)
    if info is None:
        raise RealSenseError(f"{Path(path).name}: no {KINDS[stream]} stream in the recording")
    if not frames:
        raise RealSenseError(f"{Path(path).name}: the recording holds no {stream} frames")
    return np.stack(frames), np.asarray(stamps, np.int64), info


def _frame_limit(max_frames: int | None, max_bytes: int | None, frame_bytes: int) -> float:
    limit = float("inf") if max_frames is None else max_frames
    return limit if max_bytes is None else min(limit, max_bytes // frame_bytes)


def _find_stream(rs, device, stream: str):
    """(sensor, profile) of the first profile of `stream` in its format, or None."""
    kind, fmt = _rs_stream(rs, stream), _format(rs, stream)
    for sensor in device.query_sensors():
        for profile in sensor.get_stream_profiles():
            if profile.stream_type() == kind and profile.format() == fmt:
                return sensor, profile
    return None


def to_millimetres(depth: np.ndarray, depth_units: float) -> np.ndarray:
    """Depth in units of `depth_units` metres -> uint16 mm (rounded, saturated; 0 stays 0)."""
    mm = np.rint(depth * (depth_units * MM_PER_METRE))
    return np.clip(mm, 0, np.iinfo(np.uint16).max).astype(np.uint16)


# --- recording a device ----------------------------------------------------------------------


def stream_profiles(
    device: Any,
    color: bool = False,
    size: tuple[int, int] | None = None,
    fps: int | None = None,
) -> list[tuple[Any, Any]]:
    """(sensor, profile) to record from a device (a camera or a `SoftwareCamera`'s): its z16
    depth and, with `color`, its rgb8 colour, each the first profile of `size` (width, height)
    and `fps` when given. Raises `RealSenseError` naming what the device lacks."""
    rs = _rs()
    out = []
    sensors = device.query_sensors()  # once: the same objects when one sensor has both streams
    for stream in (DEPTH, COLOR) if color else (DEPTH,):
        kind, fmt = _rs_stream(rs, stream), _format(rs, stream)
        for sensor in sensors:
            matches = [
                p
                for p in sensor.get_stream_profiles()
                if p.stream_type() == kind
                and p.format() == fmt
                and (fps is None or p.fps() == fps)
                and (size is None or _size(p) == size)
            ]
            if matches:
                out.append((sensor, matches[0]))
                break
        else:
            want = f"{size[0]}x{size[1]}" if size else "any size"
            raise RealSenseError(
                f"the device has no {KINDS[stream]} stream at {want}, {fps or 'any'} fps"
            )
    return out


def _size(profile) -> tuple[int, int]:
    video = profile.as_video_stream_profile()
    return video.width(), video.height()


@contextmanager
def recording(
    path: str | Path, device: Any, profiles: list[tuple[Any, Any]], on_frame: Callable
) -> Iterator[None]:
    """Record `profiles` of `device` to `path` through librealsense's recorder while the block
    runs; `on_frame(frame)` sees each frame too (on librealsense's thread). Leaving the block
    (normally or not) stops the sensors and closes the recorder, which finalizes the file."""
    rs = _rs()
    path = Path(path)
    if path.suffix != ".db3":
        raise RealSenseError(f"{path.name}: librealsense records .db3 files only")
    recorder = rs.recorder(str(path), device)
    sensors: dict[Any, list] = {}
    for sensor, profile in profiles:
        sensors.setdefault(sensor, []).append(profile)
    opened, started = [], []
    try:
        for sensor, chosen in sensors.items():
            sensor.open(chosen)
            opened.append(sensor)
            sensor.start(on_frame)
            started.append(sensor)
        yield
    finally:
        for sensor in started:
            sensor.stop()
        for sensor in opened:
            sensor.close()
        recorder.pause()
        del recorder  # closes the file


class SoftwareCamera:
    """A librealsense software device with a depth sensor and, with `color_size` (width,
    height), a colour sensor; frames pushed into it reach whatever records or reads the
    device, as a camera's would. `push` delivers on the caller's thread."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        depth_units: float = 0.001,
        color_size: tuple[int, int] | None = None,
    ) -> None:
        rs = self._rs = _rs()
        self.device = rs.software_device()
        depth = self.device.add_sensor("Depth")
        depth.add_read_only_option(rs.option.depth_units, depth_units)
        self._sensors = {DEPTH: depth}
        self._profiles = {
            DEPTH: depth.add_video_stream(_video_stream(rs, DEPTH, width, height, fps))
        }
        if color_size is not None:
            color = self.device.add_sensor("Color")
            stream = _video_stream(rs, COLOR, *color_size, fps)
            self._sensors[COLOR] = color
            self._profiles[COLOR] = color.add_video_stream(stream)
        self._numbers = dict.fromkeys(self._sensors, 0)

    def push(self, stream: str, image: np.ndarray, timestamp_us: int) -> None:
        rs = self._rs
        profile = self._profiles[stream].as_video_stream_profile()
        expected = (profile.height(), profile.width(), *(() if stream == DEPTH else (3,)))
        dtype = np.uint16 if stream == DEPTH else np.uint8
        if image.shape != expected or image.dtype != dtype:
            raise RealSenseError(
                f"{stream} frames must be {np.dtype(dtype).name} {expected}, got "
                f"{image.dtype} {image.shape}"
            )
        frame = rs.software_video_frame()  # a fresh one per frame: reusing it corrupts memory
        frame.pixels = np.ascontiguousarray(image)
        frame.bpp = BYTES_PER_PIXEL[stream]
        frame.stride = frame.bpp * profile.width()
        frame.timestamp = timestamp_us / 1000.0  # milliseconds
        frame.domain = rs.timestamp_domain.hardware_clock
        frame.frame_number = self._numbers[stream]
        frame.profile = profile
        self._numbers[stream] += 1
        self._sensors[stream].on_video_frame(frame)


def _video_stream(rs, stream: str, width: int, height: int, fps: float):
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = width, height
    intrinsics.ppx, intrinsics.ppy = width / 2, height / 2
    intrinsics.fx = intrinsics.fy = float(width)
    intrinsics.model = rs.distortion.none
    intrinsics.coeffs = [0.0] * 5
    video = rs.video_stream()
    video.type = _rs_stream(rs, stream)
    video.index = 0
    video.uid = 0 if stream == DEPTH else 1
    video.width, video.height = width, height
    video.fps = round(fps)
    video.bpp = BYTES_PER_PIXEL[stream]
    video.fmt = _format(rs, stream)
    video.intrinsics = intrinsics
    return video


# --- writing arrays --------------------------------------------------------------------------


def record(
    path: str | Path,
    depth: np.ndarray,
    timestamps_us: np.ndarray,
    fps: float,
    depth_units: float = 0.001,
    color: np.ndarray | None = None,
    color_timestamps_us: np.ndarray | None = None,
) -> None:
    """Write uint16 depth frames `[T, H, W]` (stored as given, in units of `depth_units`
    metres) and optionally uint8 RGB frames `[Tc, Hc, Wc, 3]` with timestamps of their own as
    a RealSense recording (this librealsense writes ROS2 `.db3` only), through a
    `SoftwareCamera` and `recording`: the path a camera's frames take."""
    depth, timestamps_us = _checked(depth, timestamps_us, 3, np.uint16, "depth")
    streams = [(DEPTH, depth, timestamps_us)]
    color_size = None
    if color is not None:
        if color_timestamps_us is None:
            raise RealSenseError("colour frames need their timestamps")
        color, color_timestamps_us = _checked(color, color_timestamps_us, 4, np.uint8, "colour")
        if color.shape[-1] != 3:
            raise RealSenseError(f"colour frames must be RGB [T, H, W, 3], got {color.shape}")
        streams.append((COLOR, color, color_timestamps_us))
        color_size = (color.shape[2], color.shape[1])
    if Path(path).suffix != ".db3":  # before the software device exists
        raise RealSenseError(f"{Path(path).name}: librealsense records .db3 files only")
    camera = SoftwareCamera(depth.shape[2], depth.shape[1], fps, depth_units, color_size)
    profiles = stream_profiles(camera.device, color=color is not None)
    # Frames of both streams in timestamp order, as a camera delivers them.
    order = heapq.merge(*([(int(t), k, i) for i, t in enumerate(ts)] for k, (_, _, ts) in
                          enumerate(streams)))  # fmt: skip
    with recording(path, camera.device, profiles, lambda frame: None):
        for t, k, i in order:
            name, frames, _ = streams[k]
            camera.push(name, frames[i], t)


def record_depth(
    path: str | Path,
    frames: np.ndarray,
    timestamps_us: np.ndarray,
    fps: float,
    depth_units: float = 0.001,
) -> None:
    """Depth only: `record` without colour (kept for its callers)."""
    record(path, frames, timestamps_us, fps, depth_units)


def _checked(frames, timestamps_us, ndim: int, dtype, what: str):
    frames = np.ascontiguousarray(frames, dtype=dtype)
    timestamps_us = np.asarray(timestamps_us, dtype=np.int64)
    if frames.ndim != ndim or len(frames) != len(timestamps_us) or not len(frames):
        raise RealSenseError(
            f"need {what} frames [T, H, W{', 3' if ndim == 4 else ''}] and T timestamps, got "
            f"{frames.shape} and {timestamps_us.shape}"
        )
    if np.any(np.diff(timestamps_us) <= 0):
        raise RealSenseError("timestamps must increase")
    return frames, timestamps_us
