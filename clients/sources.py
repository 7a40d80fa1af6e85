"""Frame sources for the streamers: each yields `(timestamp_us, uint16 [H, W] millimetres)`.

- `camera`: a live RealSense camera through a pyrealsense2 pipeline (optional decimation and
  hole-filling filters);
- `open_file`: a RealSense `.bag` / `.db3` recording (librealsense playback), a `.npy` / `.npz`
  array, or a folder of 16-bit PNG frames;
- `synth`: a scripted synthetic scene from `synth.generate.detection_video`;
- `synth_room`: that scene's room without anyone in it (an empty-room reference's frames).

`paced` plays any source at its own timestamps, and `ThreadedFrames` reads a blocking source
on a thread of its own so that the streamer's event loop never waits on a camera or a disk.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.clip import frame_timestamps_us
from core.depthfiles import (
    DepthFileError,
    check_depth_layout,
    check_same_size,
    check_timestamps,
    decode_png_depth,
    natural_key,
    npz_frames_key,
)
from core.limits import MAX_SIDE, MILLIMETRES, fps_message, valid_fps
from core.realsense import RealSenseError, read_depth, to_millimetres
from core.truth import TruthCheck, true_actions

Frame = tuple[int, np.ndarray]  # (timestamp_us, uint16 [H, W] millimetres, 0 = invalid)

MAX_RECORDING_BYTES = 4 << 30  # decoded depth of one recording, held in memory while it plays
HOLE_FILLING = {"left": 0, "farthest": 1, "nearest": 2}  # librealsense's holes_fill modes
CATCH_UP_S = 1.0  # a paced source this far behind its clock starts again from now


class SourceError(ValueError):
    """A source cannot be opened or read: missing file, wrong format, no camera."""


@dataclass
class Source:
    frames: Iterator[Frame]
    fps: float  # nominal rate, announced in the stream's hello
    name: str  # default camera id
    live: bool = False  # a camera: it runs in real time and never waits for the server
    truth: TruthCheck | None = None  # a synthetic scene's true actions, added as each plays
    # Called with a synthetic scene's empty room before its frames (a synthetic camera knows
    # it): the streamer stores it as the camera's reference, as an installer would capture it.
    on_room: list[Callable[[np.ndarray], None]] | None = None


# --- files ---------------------------------------------------------------------------------


def open_file(path: str | Path, fps: float | None = None) -> Source:
    """A recording, an array file or a PNG folder; `fps` for those without timestamps."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if fps is not None and not valid_fps(fps):
        raise SourceError(fps_message(fps))
    suffix = path.suffix.lower()
    if path.is_dir():
        return _png_folder(path, fps)
    if suffix in (".bag", ".db3"):
        if fps is not None:
            raise SourceError(f"{path.name}: a recording has its own timestamps; drop --fps")
        return _recording(path)
    if suffix == ".npy":
        return _npy(path, fps)
    if suffix == ".npz":
        return _npz(path, fps)
    raise SourceError(
        f"{path.name}: unsupported file; give a RealSense .bag / .db3 recording, a .npy / .npz "
        "array (uint16 T x H x W) or a folder of 16-bit PNG frames"
    )


def _recording(path: Path) -> Source:
    try:
        rec = read_depth(path, max_bytes=MAX_RECORDING_BYTES)
    except RealSenseError as e:
        raise SourceError(str(e)) from e
    frames = zip(rec.timestamps_us.tolist(), rec.frames, strict=True)
    return Source(iter(frames), rec.fps, path.stem)


def _check_depth(frames: np.ndarray, where: str) -> np.ndarray:
    try:
        check_depth_layout(frames.dtype, frames.shape)
    except DepthFileError as e:
        raise SourceError(f"{where}: {e}") from None
    return frames


def _need_fps(fps: float | None, where: str) -> float:
    if fps is None:
        raise SourceError(f"{where} has no timestamps: give its frame rate with --fps")
    return fps


def _array_frames(frames: np.ndarray, timestamps: np.ndarray) -> Iterator[Frame]:
    for t, frame in zip(timestamps.tolist(), frames, strict=True):
        yield t, np.ascontiguousarray(frame, dtype=np.uint16)  # native order, off the mmap


def _npy(path: Path, fps: float | None) -> Source:
    try:
        frames = np.load(path, mmap_mode="r", allow_pickle=False)  # long files stay on disk
    except ValueError as e:
        raise SourceError(f"{path.name}: not a readable .npy file ({e})") from e
    frames = _check_depth(frames, path.name)
    fps = _need_fps(fps, path.name)
    return Source(_array_frames(frames, frame_timestamps_us(len(frames), fps)), fps, path.stem)


def _npz(path: Path, fps: float | None) -> Source:
    """Array `depth` (or the only array), timing from `timestamps_us`, `fps` or the argument."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as e:
        raise SourceError(f"{path.name}: not a readable .npz file ({e})") from e
    try:
        frames = _check_depth(arrays[npz_frames_key(arrays)], path.name)
        ts = arrays.get("timestamps_us")
        ts = None if ts is None else check_timestamps(ts, len(frames))
    except DepthFileError as e:
        raise SourceError(f"{path.name}: {e}") from None
    if ts is not None:
        span_s = (int(ts[-1]) - int(ts[0])) / 1e6
        nominal = fps or ((len(ts) - 1) / span_s if span_s > 0 else 30.0)
        return Source(_array_frames(frames, ts), nominal, path.stem)
    if fps is None and "fps" in arrays:
        fps = float(np.asarray(arrays["fps"]).reshape(()))
    fps = _need_fps(fps, path.name)
    return Source(_array_frames(frames, frame_timestamps_us(len(frames), fps)), fps, path.stem)


def _png_folder(folder: Path, fps: float | None) -> Source:
    """PNGs in natural name order (frame2 before frame10), read one at a time as they play."""
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".png"),
                   key=lambda p: natural_key(p.name))  # fmt: skip
    if not files:
        raise SourceError(f"{folder}: no .png frames in the folder")
    fps = _need_fps(fps, f"{folder.name}/ (PNG frames)")
    first = _read_png(files[0])

    def frames() -> Iterator[Frame]:
        for t, f in zip(frame_timestamps_us(len(files), fps).tolist(), files, strict=True):
            image = first if f == files[0] else _read_png(f)
            try:
                check_same_size(f.name, image.shape, first.shape)
            except DepthFileError as e:
                raise SourceError(str(e)) from None
            yield t, image

    return Source(frames(), fps, folder.name)


def _read_png(path: Path) -> np.ndarray:
    try:
        return decode_png_depth(path.read_bytes())
    except (OSError, DepthFileError) as e:
        raise SourceError(f"{path.name}: {e}") from None


# --- a live RealSense camera ----------------------------------------------------------------


def camera(
    serial: str | None = None,
    width: int = 640,
    height: int = 480,
    fps: int = 30,
    decimation: int = 1,
    hole_filling: str | None = None,
    timeout_s: float = 5.0,
) -> Source:
    """A RealSense camera's depth stream; the first camera found when `serial` is None.

    Raises `SourceError` at once when pyrealsense2 is missing, no camera (or not the one asked
    for) is connected, or the arguments are out of range; the pipeline starts on the first read.
    """
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise SourceError(
            f"resolution must be positive and at most {MAX_SIDE}, got {width}x{height}"
        )
    if not valid_fps(fps):
        raise SourceError(fps_message(fps))
    if not 1 <= decimation <= 8:
        raise SourceError(f"decimation must be in 1..8 (1 = off), got {decimation}")
    if hole_filling is not None and hole_filling not in HOLE_FILLING:
        raise SourceError(
            f"hole filling must be one of {', '.join(HOLE_FILLING)}, got {hole_filling!r}"
        )
    try:
        import pyrealsense2 as rs
    except ImportError as e:
        raise SourceError(
            "a live camera needs pyrealsense2 (pip install 'gd-detect[realsense]')"
        ) from e
    serials = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]
    if not serials:
        raise SourceError(
            "no RealSense camera found: is it plugged in (USB 3), and in Docker, is /dev/bus/usb "
            "passed through (docker compose --profile realsense)?"
        )
    if serial is not None and serial not in serials:
        raise SourceError(f"no RealSense camera with serial {serial}; found {', '.join(serials)}")
    config = rs.config()
    if serial is not None:
        config.enable_device(serial)
    config.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
    filters = []
    if decimation > 1:
        filters.append(rs.decimation_filter())
        filters[-1].set_option(rs.option.filter_magnitude, decimation)
    if hole_filling is not None:
        filters.append(rs.hole_filling_filter(HOLE_FILLING[hole_filling]))
    frames = _camera_frames(rs, config, filters, timeout_s)
    return Source(frames, float(fps), f"realsense-{serial or serials[0]}", live=True)


def _camera_frames(rs, config, filters: list, timeout_s: float) -> Iterator[Frame]:
    pipeline = rs.pipeline()
    try:
        profile = pipeline.start(config)
    except RuntimeError as e:
        raise SourceError(f"cannot start the RealSense depth stream: {e}") from e
    try:
        units = float(f"{profile.get_device().first_depth_sensor().get_depth_scale():.6g}")
        last = None
        while True:
            ok, frameset = pipeline.try_wait_for_frames(round(timeout_s * 1000))
            if not ok:
                raise SourceError(f"no depth frame from the camera for {timeout_s:g} s")
            depth = frameset.get_depth_frame()
            for f in filters:
                depth = f.process(depth)
            t = round(depth.get_timestamp() * 1000)  # ms -> µs
            if last is not None and t <= last:  # a clock reset: the stream must go forward
                continue
            last = t
            image = np.asanyarray(depth.get_data())
            # The frame's buffer goes back to librealsense: copy (the mm conversion copies).
            yield t, image.copy() if units == MILLIMETRES else to_millimetres(image, units)
    finally:
        pipeline.stop()


# --- a synthetic scene -----------------------------------------------------------------------


def synth(
    seed: int = 0, actions: int = 5, size: tuple[int, int] = (96, 128), loop: bool = False
) -> Source:
    """Scripted PKU-MMD-style videos of `actions` actions each; with `loop`, a new video (the
    next seed) follows each one forever, rendered while the previous one plays."""
    from synth.generate import TARGET_CLASSES, SynthError, class_names, detection_shot

    names = class_names(TARGET_CLASSES)
    truth = TruthCheck()

    def video(k: int) -> tuple[np.ndarray, float, list, np.ndarray]:  # depth only
        shot = detection_shot(seed + k, subject=1, camera=2, n_actions=actions, size=size)
        rec = shot.film()
        return rec.depth, rec.fps, rec.segments, shot.reference()

    try:
        first = video(0)  # bad arguments fail here, before anything connects
    except SynthError as e:
        raise SourceError(f"synthetic scene: {e}") from e

    on_room: list[Callable[[np.ndarray], None]] = []

    def frames() -> Iterator[Frame]:
        (depth, fps, segments, room), offset_us, k = first, 0, 0
        with ThreadPoolExecutor(1, thread_name_prefix="gd-synth") as pool:
            while True:
                following = pool.submit(video, k + 1) if loop else None
                for store in on_room:
                    store(room)
                truth.add(true_actions(segments, names, fps, offset_us / 1e6))
                ts = frame_timestamps_us(len(depth), fps) + offset_us
                yield from zip(ts.tolist(), depth, strict=True)
                if following is None:
                    return
                offset_us = int(ts[-1]) + round(1e6 / fps)
                (depth, fps, segments, room), k = following.result(), k + 1

    return Source(frames(), first[1], "synth", truth=truth, on_room=on_room)


def synth_room(
    seed: int = 0, actions: int = 5, size: tuple[int, int] = (96, 128), fps: float = 30.0
) -> Source:
    """The empty room of `synth(seed, actions, size)`'s first video as its camera sees it,
    noise-free (the same frame at `fps`, forever): what `gd-stream reference` captures there."""
    from synth.generate import SynthError, detection_shot

    try:  # the arguments `synth` films its first video with; nobody rendered
        room = detection_shot(seed, subject=1, camera=2, n_actions=actions, size=size).reference()
    except SynthError as e:
        raise SourceError(f"synthetic scene: {e}") from e

    def frames() -> Iterator[Frame]:
        for i in itertools.count():
            yield round(i * 1e6 / fps), room

    return Source(frames(), fps, "synth")


# --- pacing and threads ------------------------------------------------------------------------


def paced(
    frames: Iterator[Frame],
    speed: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Frame]:
    """Yield each frame when its timestamp comes due on the wall clock (`speed` x real time).

    A source more than `CATCH_UP_S` behind (the server was away, the reader stalled) restarts
    its clock at the late frame rather than bursting to catch up. `clock` and `sleep` are
    injectable so that tests can run the pacing on a clock of their own.
    """
    if not speed > 0:
        raise SourceError(f"speed must be positive, got {speed}")
    origin = None  # (timestamp_us, monotonic s) that the clock runs from
    for t, image in frames:
        now = clock()
        if origin is None:
            origin = (t, now)
        due = origin[1] + (t - origin[0]) / 1e6 / speed
        if now - due > CATCH_UP_S:
            origin, due = (t, now), now
        if due > now:
            sleep(due - now)
        yield t, image


class ThreadedFrames:
    """An async iterator over a blocking frame iterator, read on one thread of its own.

    A read still running when its reader is cancelled (the connection dropped) is kept, and the
    next `__anext__` returns its frame, so a recording resumes where it stopped.
    """

    def __init__(self, frames: Iterator[Frame]) -> None:
        self._frames = iter(frames)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="gd-source")
        self._pending: asyncio.Future | None = None

    def __aiter__(self) -> ThreadedFrames:
        return self

    async def __anext__(self) -> Frame:
        if self._pending is None:
            loop = asyncio.get_running_loop()
            self._pending = loop.run_in_executor(self._executor, next, self._frames, None)
        pending = self._pending
        try:
            frame = await asyncio.shield(pending)
        finally:
            if pending.done():  # else cancelled mid-read: the next call takes this frame
                self._pending = None
        if frame is None:
            raise StopAsyncIteration
        return frame

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
