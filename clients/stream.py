"""`gd-stream`: stream depth to the detection server and print its events as they come.

    gd-stream synth [--loop] [--fast]                 a scripted synthetic scene (ground truth
                                                      printed beside each detection)
    gd-stream file PATH [--fps F] [--fast]            .bag / .db3 recording, .npy / .npz, PNG folder
    gd-stream realsense [--serial S] [--width W ...]  a live RealSense camera
    gd-stream reference SOURCE ... [--frames N]       capture the camera's empty-room reference
                                                      (for person-crop models)

Frames are reduced to the model's rate and size (from the server's `ready`) before they are
sent (a person-crop model's go whole: the server crops them). A lost connection is retried
with exponential backoff: a camera keeps going, a file resumes where it stopped. Files and
synthetic scenes play in real time unless `--fast`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from clients import options
from clients.api import (
    ActionEnd,
    ActionStart,
    ApiError,
    Client,
    ConnectionLost,
    End,
    Event,
    Idle,
    InternalError,
    Scores,
    ServerWarning,
    TooManyStreams,
    Unauthorized,
    encode_reference,
    event_message,
)
from clients.reference import DEFAULT_FRAMES, MAX_FRAMES, capture
from clients.sources import (
    HOLE_FILLING,
    Frame,
    Source,
    ThreadedFrames,
    camera,
    open_file,
    paced,
    synth,
    synth_room,
)
from core.files import atomic_write_bytes
from core.truth import TruthCheck
from core.wire import ENCODINGS, Ready, WireError

DEFAULT_URL = "ws://127.0.0.1:8000/v1/stream"
RETRYABLE = (ConnectionLost, Idle, InternalError)
MAX_BACKOFF_S = 30.0


REFERENCE_HELP = """Capture the camera's empty-room reference and store it on the server for
--camera-id (or write it to --out FILE.png).

A person-crop model (its model card's clip.person_crop) finds the people in a camera's frames
by comparing them with the room without them. Capture once per camera, at installation: the
camera fixed where it will stay, nobody in view, the room as it usually is. Capture again
after moving the camera or the furniture. The reference is the per-pixel median of --frames
frames (0 where fewer than half of them had a reading), at the camera's full frame size, in
millimetres; give the source exactly the options (--width, --height, --decimation, ...) that
its streams use, and the camera id they use (default: the source's name, as gd-stream's).

    gd-stream reference realsense --camera-id ward3-bed2 --url http://host:8000
    gd-stream reference file empty-room.db3 --out ward3-bed2.png
"""


def _add_sources(
    sub: argparse._SubParsersAction,
    common: argparse.ArgumentParser,
    timed: list,
    synth_help: str = "a scripted synthetic scene",
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The sources (synth, file, realsense) as subcommands of `sub`, with the options that
    pick their frames; `timed` parsers add to the synthetic scene's and file's options."""
    s = sub.add_parser("synth", parents=[common, *timed], help=synth_help, description=synth_help)
    s.add_argument("--seed", type=int, default=0, help="scene seed; --loop counts up from it")
    s.add_argument("--actions", type=int, default=5, help="actions per video")
    s.add_argument("--width", type=int, default=128, help="frame width in pixels")
    s.add_argument("--height", type=int, default=96, help="frame height in pixels")
    f = sub.add_parser("file", parents=[common, *timed], help="a recording, array or PNG folder")
    f.add_argument("path", help=".bag / .db3 recording, .npy / .npz (uint16 T x H x W), folder")
    f.add_argument("--fps", type=float, help="frame rate of .npy, .npz and PNG folders")
    r = sub.add_parser("realsense", parents=[common], help="a live RealSense camera")
    r.add_argument("--serial", help="camera serial number (default: the first camera)")
    r.add_argument("--width", type=int, default=640, help="camera frame width (default 640)")
    r.add_argument("--height", type=int, default=480, help="camera frame height (default 480)")
    r.add_argument("--fps", type=int, default=30, help="camera frame rate (default 30)")
    r.add_argument("--decimation", type=int, default=1, help="decimation filter, 2..8 (1 = off)")
    r.add_argument("--hole-filling", choices=list(HOLE_FILLING), help="hole-filling filter")
    return s, f, r


def _reference_parser(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    options.add_server_options(common, DEFAULT_URL)
    common.add_argument(
        "--camera-id", help="the camera whose reference this is (default: the source's name)"
    )
    common.add_argument(
        "--frames", type=int, default=DEFAULT_FRAMES,
        help=f"frames to take the median of (default {DEFAULT_FRAMES}, at most {MAX_FRAMES})",
    )  # fmt: skip
    common.add_argument(
        "--out", type=Path, metavar="FILE.png",
        help="write the reference to this 16-bit PNG instead of sending it to the server",
    )  # fmt: skip
    ref = sub.add_parser(
        "reference", help="capture the camera's empty-room reference (person-crop models)",
        description=REFERENCE_HELP, epilog=options.exit_codes(streams=False),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    ref.set_defaults(command="reference")
    sources = ref.add_subparsers(dest="source", required=True, metavar="SOURCE")
    _add_sources(sources, common, [], "the empty room of gd-stream synth's scene (the same "
                 "--seed, --actions and size)")  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    options.add_server_options(common, DEFAULT_URL)
    common.add_argument("--camera-id", help="name of this stream in events and server logs")
    common.add_argument("--encoding", choices=ENCODINGS, default="zstd", help="frame encoding")
    common.add_argument("-v", "--verbose", action="store_true", help="also print every clip")
    common.add_argument(
        "--retries", type=int, help="give up after this many failed reconnects in a row "
        "(default: never)",
    )  # fmt: skip
    common.add_argument("--backoff", type=float, default=0.5, help="first reconnect delay, s")

    timing = argparse.ArgumentParser(add_help=False)
    timing.add_argument("--fast", action="store_true", help="send as fast as the server scores")
    timing.add_argument("--speed", type=float, default=1.0, help="playback speed (x real time)")

    p = argparse.ArgumentParser(
        prog="gd-stream",
        description=__doc__.split("\n")[0].split(": ", 1)[1],
        epilog=options.exit_codes(streams=True),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(command="stream")
    sub = p.add_subparsers(dest="source", required=True)
    s, _, _ = _add_sources(sub, common, [timing])
    s.add_argument("--loop", action="store_true", help="new videos forever")
    _reference_parser(sub)
    args = p.parse_args(argv)
    if args.command == "reference":
        if not 1 <= args.frames <= MAX_FRAMES:
            p.error(f"--frames must be in 1..{MAX_FRAMES}")
        return args
    if args.retries is not None and args.retries < 0:
        p.error("--retries must be >= 0")
    if not args.backoff > 0:
        p.error("--backoff must be positive")
    if not getattr(args, "speed", 1.0) > 0:
        p.error("--speed must be positive")
    return args


def open_source(args: argparse.Namespace) -> Source:
    if args.source == "synth":
        return synth(args.seed, args.actions, (args.height, args.width), args.loop)
    if args.source == "file":
        return open_file(args.path, args.fps)
    return camera(args.serial, args.width, args.height, args.fps, args.decimation,
                  args.hole_filling)  # fmt: skip


def open_reference_source(args: argparse.Namespace) -> Source:
    """What `gd-stream reference` captures: a synthetic scene's empty room, else the source."""
    if args.source == "synth":
        return synth_room(args.seed, args.actions, (args.height, args.width))
    return open_source(args)


def capture_reference(source: Source, n: int, err: TextIO) -> np.ndarray:
    """The source's reference, with a progress bar on `err`; the source is closed after."""
    try:
        with tqdm(total=n, desc="capturing the empty room", unit="frame", file=err,
                  disable=None) as bar:  # fmt: skip
            depth = capture(source.frames, n, lambda k: bar.update(k - bar.n))
    finally:
        close = getattr(source.frames, "close", None)
        if close is not None:
            close()  # a camera's pipeline stops now, not when collected
    if not depth.any():
        raise ValueError(
            "no pixel had a reading in half the frames: is the lens covered, or the camera "
            "facing a surface nearer than its minimum range?"
        )
    return depth


def reference(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`gd-stream reference`: capture, then store on the server or write `--out`."""
    try:
        client = None if args.out else Client(args.url, options.token(args))
        source = open_reference_source(args)
        depth = capture_reference(source, args.frames, err)
    except ValueError as e:  # SourceError included
        print(f"gd-stream: {e}", file=err)
        return options.EXIT_USAGE
    except KeyboardInterrupt:
        return options.EXIT_INTERRUPTED
    camera_id = args.camera_id or source.name
    answer: dict[str, Any] = {
        "camera_id": camera_id, "height": depth.shape[0], "width": depth.shape[1],
        "valid_fraction": round(np.count_nonzero(depth) / depth.size, 4),
    }  # fmt: skip
    if client is None:
        try:
            atomic_write_bytes(args.out, encode_reference(depth))
        except OSError as e:
            print(f"gd-stream: --out: cannot write {args.out}: {e}", file=err)
            return options.EXIT_USAGE
        answer["out"] = str(args.out)
        where = f"written to {args.out}"
    else:
        try:
            answer["server"] = client.put_reference(camera_id, depth)
        except Unauthorized as e:
            print(f"gd-stream: unauthorized: {e.message}; give a valid --token", file=err)
            return options.EXIT_UNAUTHORIZED
        except ApiError as e:
            print(f"gd-stream: the server did not store the reference: {e}", file=err)
            return options.EXIT_ERROR
        where = f"stored on {client.http_url}"
        if answer["server"].get("stored") is False:  # the server runs without its event store
            where += " in memory only: put it again after the server restarts"
    if args.json:
        print(json.dumps(answer), file=out)
    else:
        print(f"reference of {camera_id}: {answer['width']}x{answer['height']}, "
              f"{answer['valid_fraction']:.0%} of pixels with a reading; {where}",
              file=out)  # fmt: skip
    return options.EXIT_OK


def check_encoding(encoding: str) -> None:
    module = {"zstd": "zstandard", "png": "cv2"}.get(encoding)
    if module is None:
        return
    try:
        __import__(module)
    except ImportError as e:
        raise ValueError(f"--encoding {encoding} needs {module}; install it or use raw") from e


class Printer:
    """Events as readable lines, or as the server's JSON one a line (`--json`).

    With `truth` (a synthetic scene's true actions), each readable detection line says which
    true action it overlaps and the running hit rate, and the last line sums them up.
    """

    def __init__(
        self,
        json_lines: bool,
        camera_id: str,
        verbose: bool,
        out: TextIO,
        err: TextIO,
        truth: TruthCheck | None = None,
    ) -> None:
        self.json_lines, self.camera_id, self.verbose = json_lines, camera_id, verbose
        self.out, self.err, self.truth = out, err, truth
        self.origin_us: int | None = None  # the source's first timestamp: times count from it

    def event(self, event: Event) -> None:
        if self.json_lines:
            self._json(event_message(event))
        elif (line := self.line(event)) is not None:
            print(f"{time.strftime('%H:%M:%S')} {self.camera_id} {line}", file=self.out, flush=True)

    def client(self, kind: str, text: str, **fields) -> None:
        """What happens on this side (reconnecting, a final error): stderr, or a JSON line."""
        if self.json_lines:
            self._json({"type": kind, "message": text, **fields})
        if kind == "error" or not self.json_lines:  # people read stderr, programs stdout
            print(f"gd-stream: {text}", file=self.err, flush=True)

    def _json(self, message: dict) -> None:
        print(json.dumps(message), file=self.out, flush=True)

    def _at(self, timestamp_us: int) -> float:
        return (timestamp_us - (self.origin_us or 0)) / 1e6

    def line(self, event: Event) -> str | None:
        if isinstance(event, Ready):
            spec, model = event.clip, event.model
            # A person-crop model's frames go at the camera's size, the one announced first.
            h, w = event.sizes[0] if spec.person_crop else (spec.height, spec.width)
            return (
                f"ready: model {model.get('name')} {model.get('version')} "
                f"({', '.join(event.classes[1:])}); sending {w}x{h} at {spec.kept_fps:g} fps"
            )
        if isinstance(event, ActionStart):
            t = self._at(event.start_timestamp_us)
            return f"start {event.label} at {t:.1f} s ({event.confidence:.2f})"
        if isinstance(event, ActionEnd):
            t0, t1 = self._at(event.start_timestamp_us), self._at(event.end_timestamp_us)
            line = f"end   {event.label} {t0:.1f}-{t1:.1f} s ({event.confidence:.2f})"
            if self.truth is not None:
                line += f"; {self.truth.describe(self.truth.check(event.label, t0, t1))}"
            return line
        if isinstance(event, ServerWarning):
            return f"warning: {event.message}"
        if isinstance(event, End):
            line = (
                f"done: {event.clips} clips scored, {event.frames_received} frames received, "
                f"{event.frames_dropped} dropped"
            )
            return line if self.truth is None else f"{line}; {self.truth.summary()}"
        if isinstance(event, Scores) and self.verbose:
            best = event.top[0] if event.top else None
            top = f", {best.label} {best.score:.2f}" if best else ""
            t = self._at(event.start_timestamp_us)
            return f"clip {event.clip} at {t:.1f} s: activity {event.activity:.2f}{top}"
        return None


def backoff(failures: int, first_s: float) -> float:
    """Exponential, capped, with jitter so that many cameras do not come back all at once."""
    delay = min(MAX_BACKOFF_S, first_s * 2 ** (failures - 1))
    return delay * random.uniform(0.5, 1.0)


def store_room(client: Client, printer: Printer, room: np.ndarray) -> None:
    """A synthetic scene's empty room, stored as its camera's reference before it plays (a
    person-crop model needs one; gd-stream reference captures a real camera's)."""
    try:
        client.put_reference(printer.camera_id, room)
    except ApiError as e:  # the stream still runs, on whole frames: say why
        printer.client("warning", f"the scene's empty room was not stored: {e}", code=e.code)


async def run(client: Client, source: Source, args: argparse.Namespace, printer: Printer) -> int:
    """Stream until the source is played out, reconnecting on connection loss."""

    def noted(frames: Iterator[Frame]) -> Iterator[Frame]:
        for t, image in frames:
            if printer.origin_us is None:
                printer.origin_us = t
            yield t, image

    if source.on_room is not None:
        source.on_room.append(lambda room: store_room(client, printer, room))
    fast = getattr(args, "fast", False) and not source.live
    frames = noted(source.frames)
    if not source.live and not fast:
        frames = paced(frames, args.speed)
    reader = ThreadedFrames(frames)
    failures = 0
    try:
        while True:
            try:
                async for event in client.stream(
                    reader, printer.camera_id, source.fps, args.encoding, flow_control=fast
                ):
                    if isinstance(event, Ready):
                        failures = 0
                    printer.event(event)
                return options.EXIT_OK
            except RETRYABLE as e:
                failures += 1
                if args.retries is not None and failures > args.retries:
                    _fail(printer, e, f"giving up after {args.retries} reconnects: {e}")
                    return options.EXIT_ERROR
                delay = backoff(failures, args.backoff)
                printer.client(
                    "reconnecting", f"{e}; reconnecting in {delay:.1f} s", attempt=failures,
                    delay_s=round(delay, 3), code=e.code, close_code=e.close_code,
                )  # fmt: skip
                await asyncio.sleep(delay)
    except Unauthorized as e:
        _fail(printer, e, f"unauthorized: {e.message}; give a valid --token or --token-file")
        return options.EXIT_UNAUTHORIZED
    except TooManyStreams as e:
        _fail(printer, e, f"the server is at its stream limit: {e.message}")
        return options.EXIT_TOO_MANY_STREAMS
    except ApiError as e:
        _fail(printer, e, str(e))
        return options.EXIT_ERROR
    except WireError as e:  # a message this client cannot read, or a frame it cannot pack
        printer.client("error", f"protocol error: {e}", code="protocol")
        return options.EXIT_ERROR
    except ValueError as e:  # the source failed: SourceError, timestamps going back
        printer.client("error", str(e), code="source")
        return options.EXIT_USAGE
    finally:
        reader.close()


def _fail(printer: Printer, e: ApiError, text: str) -> None:
    printer.client("error", text, code=e.code, close_code=e.close_code)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "reference":
        return reference(args, sys.stdout, sys.stderr)
    try:
        check_encoding(args.encoding)
        token = options.token(args)
        client = Client(args.url, token)
        source = open_source(args)
    except ValueError as e:  # SourceError included
        print(f"gd-stream: {e}", file=sys.stderr)
        return options.EXIT_USAGE
    printer = Printer(args.json, args.camera_id or source.name, args.verbose, sys.stdout,
                      sys.stderr, source.truth)  # fmt: skip
    try:
        return asyncio.run(run(client, source, args, printer))
    except KeyboardInterrupt:
        return options.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
