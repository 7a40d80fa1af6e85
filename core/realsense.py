"""RealSense recordings: read depth from `.bag` (ROS1) / `.db3` (ROS2) through librealsense
playback, and write `.db3` recordings from arrays through a software device.

Frames come back as uint16 millimetres with timestamps in microseconds, ready for
`core.clip`. pyrealsense2 is imported inside the functions, so `core` imports without it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MM_PER_METRE = 1000.0


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


def _rs():
    try:
        import pyrealsense2
    except ImportError as e:
        raise RealSenseError(
            "reading RealSense recordings needs pyrealsense2 (pip install 'gd-detect[realsense]')"
        ) from e
    return pyrealsense2


def read_depth(
    path: str | Path,
    max_frames: int | None = None,
    max_bytes: int | None = None,
    timeout_s: float = 60.0,
) -> DepthRecording:
    """All depth frames of a recording, as fast as playback delivers them.

    Raises `RealSenseError` when the file has no z16 depth stream, holds more than
    `max_frames` frames or `max_bytes` of pixels (checked as frames arrive, so a large file
    stops early), or playback does not finish within `timeout_s`.
    """
    rs = _rs()
    try:
        device = rs.context().load_device(str(path))
    except RuntimeError as e:
        raise RealSenseError(f"{Path(path).name}: not a readable RealSense recording ({e})") from e
    playback = device.as_playback()
    playback.set_real_time(False)  # as fast as we read, and no frame skipped
    sensor, profile = _depth_sensor(rs, device, path)
    # librealsense keeps the option in float32: 0.001 reads back as 0.0010000000475.
    raw_units = sensor.get_option(rs.option.depth_units) if _has_units(rs, sensor) else 0.001
    units = float(f"{raw_units:.6g}")
    video = profile.as_video_stream_profile()
    limit = _frame_limit(max_frames, max_bytes, 2 * video.width() * video.height())
    frames: list[np.ndarray] = []
    stamps: list[float] = []
    done = threading.Event()
    too_many = threading.Event()

    def on_frame(frame) -> None:  # librealsense's thread
        if len(frames) >= limit:
            too_many.set()
            done.set()
            return
        stamps.append(frame.get_timestamp())  # milliseconds
        image = np.asanyarray(frame.get_data())  # librealsense recycles it: copy
        # Converted frame by frame: a whole recording in float64 would take 4x its size.
        frames.append(image.copy() if units == 0.001 else to_millimetres(image, units))

    def on_status(status) -> None:
        if status == rs.playback_status.stopped:
            done.set()

    playback.set_status_changed_callback(on_status)
    sensor.open(profile)
    sensor.start(on_frame)
    try:
        finished = done.wait(timeout_s)
    finally:
        sensor.stop()
        sensor.close()
    if too_many.is_set():
        raise RecordingTooLarge(
            f"{Path(path).name}: more than {limit} depth frames of {video.width()}x"
            f"{video.height()} (limits: {max_frames} frames, {max_bytes} bytes)"
        )
    if not finished:
        raise RealSenseError(f"{Path(path).name}: playback did not finish in {timeout_s} s")
    if not frames:
        raise RealSenseError(f"{Path(path).name}: the recording holds no depth frames")
    depth = np.stack(frames)
    timestamps = np.round(np.asarray(stamps) * 1000.0).astype(np.int64)
    return DepthRecording(depth, timestamps, float(profile.fps()), units)


def _frame_limit(max_frames: int | None, max_bytes: int | None, frame_bytes: int) -> float:
    limit = float("inf") if max_frames is None else max_frames
    return limit if max_bytes is None else min(limit, max_bytes // frame_bytes)


def _depth_sensor(rs, device, path):
    for sensor in device.query_sensors():
        for profile in sensor.get_stream_profiles():
            if profile.stream_type() == rs.stream.depth and profile.format() == rs.format.z16:
                return sensor, profile
    raise RealSenseError(f"{Path(path).name}: no z16 depth stream in the recording")


def _has_units(rs, sensor) -> bool:
    return sensor.supports(rs.option.depth_units)


def to_millimetres(depth: np.ndarray, depth_units: float) -> np.ndarray:
    """Depth in units of `depth_units` metres -> uint16 mm (rounded, saturated; 0 stays 0)."""
    mm = np.rint(depth * (depth_units * MM_PER_METRE))
    return np.clip(mm, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def record_depth(
    path: str | Path,
    frames: np.ndarray,
    timestamps_us: np.ndarray,
    fps: float,
    depth_units: float = 0.001,
) -> None:
    """Write uint16 depth frames `[T, H, W]` as a RealSense recording (this librealsense writes
    ROS2 `.db3` only). Frames are stored as given, in units of `depth_units` metres."""
    rs = _rs()
    path = Path(path)
    if path.suffix != ".db3":
        raise RealSenseError(f"{path.name}: librealsense records .db3 files only")
    frames = np.ascontiguousarray(frames, dtype=np.uint16)
    timestamps_us = np.asarray(timestamps_us, dtype=np.int64)
    if frames.ndim != 3 or len(frames) != len(timestamps_us) or not len(frames):
        raise RealSenseError(
            f"need frames [T, H, W] and T timestamps, got {frames.shape} and {timestamps_us.shape}"
        )
    if np.any(np.diff(timestamps_us) <= 0):
        raise RealSenseError("timestamps must increase")
    _, height, width = frames.shape
    device = rs.software_device()
    sensor = device.add_sensor("Depth")
    sensor.add_read_only_option(rs.option.depth_units, depth_units)
    profile = sensor.add_video_stream(_video_stream(rs, width, height, fps))
    profile = profile.as_video_stream_profile()
    recorder = rs.recorder(str(path), device)
    sensor.open([profile])
    sensor.start(rs.syncer())
    for i, (image, t_us) in enumerate(zip(frames, timestamps_us, strict=True)):
        frame = rs.software_video_frame()  # a fresh one per frame: reusing it corrupts memory
        frame.pixels = image
        frame.bpp = 2
        frame.stride = 2 * width
        frame.timestamp = t_us / 1000.0  # milliseconds
        frame.domain = rs.timestamp_domain.hardware_clock
        frame.frame_number = i
        frame.profile = profile
        sensor.on_video_frame(frame)
    sensor.stop()
    sensor.close()
    recorder.pause()
    del recorder  # closes the file


def _video_stream(rs, width: int, height: int, fps: float):
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = width, height
    intrinsics.ppx, intrinsics.ppy = width / 2, height / 2
    intrinsics.fx = intrinsics.fy = float(width)
    intrinsics.model = rs.distortion.none
    intrinsics.coeffs = [0.0] * 5
    stream = rs.video_stream()
    stream.type = rs.stream.depth
    stream.index = stream.uid = 0
    stream.width, stream.height = width, height
    stream.fps = round(fps)
    stream.bpp = 2
    stream.fmt = rs.format.z16
    stream.intrinsics = intrinsics
    return stream
