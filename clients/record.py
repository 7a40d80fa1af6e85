"""`gd-record`: record a RealSense camera's depth (and, with `--color`, its colour) to a `.db3`
recording through librealsense's own recorder, for site data collection (docs/retraining.md).

    gd-record OUT.db3 [--color] [--serial S] [--size 848x480] [--fps 30]
              [--max-seconds N] [--max-bytes N]

A progress line shows the recorded time (the frames' own clock), frames and size; a limit,
Ctrl-C or SIGINT stops it cleanly: the sensors stop and the recorder closes, which finalizes
the file. `record_device` takes the device as a parameter, so the tests drive it with a
librealsense software device exactly as a camera would; only finding the camera is untested.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from core.realsense import RealSenseError, recording, stream_profiles

PROGRESS_S = 0.5  # how often the progress line is redrawn
NO_FRAME_S = 5.0  # a camera silent this long has failed


@dataclass
class Progress:
    """What has been recorded so far; updated on librealsense's thread."""

    frames: int = 0
    bytes: int = 0  # pixel data of the recorded frames (the file adds a little metadata)
    first_ms: float | None = None  # timestamp of the first frame
    last_ms: float | None = None
    stopped_by: str = ""  # "max-seconds", "max-bytes", "interrupt" (SIGINT), "stop"

    @property
    def seconds(self) -> float:
        """Recorded time on the frames' own clock."""
        if self.first_ms is None or self.last_ms is None:
            return 0.0
        return (self.last_ms - self.first_ms) / 1000.0

    def line(self) -> str:
        return f"{self.seconds:8.1f} s {self.frames:8d} frames {self.bytes / 1e6:10.1f} MB"


class Meter:
    """Counts the frames the recorder sees and sets `stop` once a limit is reached."""

    def __init__(
        self, stop: threading.Event, max_seconds: float | None, max_bytes: int | None
    ) -> None:
        self.progress = Progress()
        self.stop = stop
        self.max_seconds = max_seconds
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def on_frame(self, frame: Any) -> None:  # librealsense's thread
        with self._lock:
            p = self.progress
            t = frame.get_timestamp()
            p.first_ms = t if p.first_ms is None else p.first_ms
            p.last_ms = t if p.last_ms is None else max(p.last_ms, t)
            p.frames += 1
            video = frame.as_video_frame()  # get_data_size() is 0 for software frames
            p.bytes += video.get_stride_in_bytes() * video.get_height()
            if self.stop.is_set():
                return
            if self.max_seconds is not None and p.seconds >= self.max_seconds:
                p.stopped_by = "max-seconds"
            elif self.max_bytes is not None and p.bytes >= self.max_bytes:
                p.stopped_by = "max-bytes"
            else:
                return
        self.stop.set()


@contextmanager
def stop_on_sigint(stop: threading.Event, meter: Meter) -> Iterator[None]:
    """While the block runs (on the main thread), Ctrl-C / SIGINT sets `stop` instead of
    raising KeyboardInterrupt in the middle of librealsense calls."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return

    def on_sigint(signum: int, frame: Any) -> None:
        meter.progress.stopped_by = meter.progress.stopped_by or "interrupt"
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def record_device(
    device: Any,
    path: str | Path,
    color: bool = False,
    size: tuple[int, int] | None = None,
    fps: int | None = None,
    max_seconds: float | None = None,
    max_bytes: int | None = None,
    stop: threading.Event | None = None,
    progress: TextIO | None = None,
    on_start: Callable[[], None] | None = None,
) -> Progress:
    """Record `device`'s depth (and colour) to `path` until a limit, SIGINT or `stop`;
    returns what was recorded. The file is finalized however the recording ends.
    `on_start()` runs once the sensors stream (gd-record says so; a test starts feeding).

    Raises `RealSenseError` when the device lacks the streams, or sends no frame for
    `NO_FRAME_S` seconds (the file is still finalized).
    """
    stop = stop if stop is not None else threading.Event()
    meter = Meter(stop, max_seconds, max_bytes)
    profiles = stream_profiles(device, color=color, size=size, fps=fps)
    silent_since = time.monotonic()
    seen = 0
    with stop_on_sigint(stop, meter), recording(path, device, profiles, meter.on_frame):
        if on_start is not None:
            on_start()
        while not stop.wait(PROGRESS_S):
            if meter.progress.frames != seen:
                seen, silent_since = meter.progress.frames, time.monotonic()
            elif time.monotonic() - silent_since > NO_FRAME_S:
                raise RealSenseError(f"no frame from the camera for {NO_FRAME_S:g} s")
            if progress is not None:
                print(f"\r{meter.progress.line()}", end="", file=progress, flush=True)
    meter.progress.stopped_by = meter.progress.stopped_by or "stop"  # the caller's `stop`
    if progress is not None:
        print(f"\r{meter.progress.line()}  stopped: {meter.progress.stopped_by}", file=progress)
    return meter.progress


def open_camera(serial: str | None) -> Any:
    """The connected RealSense camera (the one with `serial`). Untested here: no camera."""
    import pyrealsense2 as rs

    devices = {d.get_info(rs.camera_info.serial_number): d for d in rs.context().query_devices()}
    if not devices:
        raise RealSenseError("no RealSense camera found: is it plugged in (USB 3)?")
    if serial is None:
        return next(iter(devices.values()))
    if serial not in devices:
        raise RealSenseError(
            f"no RealSense camera with serial {serial}; found {', '.join(devices)}"
        )
    return devices[serial]


def frame_size(text: str) -> tuple[int, int]:
    """argparse type: `WxH` as librealsense names its modes (848x480)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WxH, e.g. 848x480, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gd-record",
        description="Record a RealSense camera's depth (and colour with --color) to a .db3 "
        "recording through librealsense's recorder. Ctrl-C stops and finalizes the file. "
        "Colour is for consented data collection only: see docs/retraining.md.",
        epilog="example: gd-record site/kitchen-001.db3 --color --max-seconds 600",
    )
    p.add_argument("out", type=Path, help="the recording to write (.db3)")
    p.add_argument(
        "--color",
        action="store_true",
        help="record the colour stream too (RGB; for training only, never deployed)",
    )
    p.add_argument("--serial", help="the camera's serial number (default: the first camera)")
    p.add_argument(
        "--size", type=frame_size, metavar="WxH", help="stream size (default: the camera's first)"
    )
    p.add_argument("--fps", type=positive(int), help="frame rate (default: the camera's first)")
    p.add_argument("--max-seconds", type=positive(float), help="stop after this much recorded time")
    p.add_argument(
        "--max-bytes", type=positive(int), help="stop after this much frame data (bytes)"
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.suffix != ".db3":
        print("gd-record: error: librealsense records .db3 files only", file=sys.stderr)
        return 2
    if args.out.exists() and not args.force:
        print(f"gd-record: error: {args.out} exists (--force overwrites)", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        device = open_camera(args.serial)
        done = record_device(
            device, args.out, args.color, args.size, args.fps, args.max_seconds, args.max_bytes,
            progress=sys.stderr, on_start=lambda: print("recording; Ctrl-C stops", file=sys.stderr),
        )  # fmt: skip
    except RealSenseError as e:
        print(f"gd-record: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {done.frames} frames, {done.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
