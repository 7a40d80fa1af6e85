"""`gd-upload`: detect actions in a whole depth video on the server.

    gd-upload FILE [--url http://host:8000] [--token T] [--fps F] [--scores] [--json]
                   [--pred DIR] [--camera-id ID [--reference PNG]]

FILE is a RealSense `.bag` / `.db3` recording, a `.npy` / `.npz` array (uint16 T x H x W, with
`--fps` unless the `.npz` carries its timing), a zip of 16-bit PNG frames or a folder of them.
Shows upload progress on stderr, then the detections as a table, or the server's JSON answer.
`--pred DIR` also writes them as DIR/<FILE's name>.txt, a PKU-MMD prediction file for
`gd-eval --pred DIR`. With a person-crop model, `--camera-id` names the camera that filmed FILE:
the server crops with its empty-room reference (`gd-stream reference`); `--reference PNG`
stores one for that camera first (a 16-bit PNG of the empty room, as gd-synth writes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm import tqdm

from clients import options
from clients.api import ApiError, Client, Detections, Unauthorized
from core.depthfiles import DepthFileError, decode_png_depth
from core.labels import SUFFIX, write_label_file
from core.limits import fps_message, valid_fps

DEFAULT_URL = "http://127.0.0.1:8000"
# The server's error codes that a flag of this command fixes: what to add to its message.
FLAG_HINTS = {
    "fps_required": "; these frames carry no timestamps: pass --fps F, their frame rate",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="gd-upload",
        description=__doc__.split("\n")[0].split(": ", 1)[1],
        epilog=options.exit_codes(streams=False),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, help="recording, .npy / .npz, PNG zip or PNG folder")
    options.add_server_options(p, DEFAULT_URL)
    p.add_argument("--fps", type=float, help="frame rate of .npy, PNG frames and untimed .npz")
    p.add_argument("--scores", action="store_true", help="ask for per-clip scores too (JSON)")
    p.add_argument(
        "--camera-id", metavar="ID",
        help="the camera that filmed FILE: a person-crop model uses its empty-room reference",
    )  # fmt: skip
    p.add_argument(
        "--reference", type=Path, metavar="PNG",
        help="store PNG (16-bit, the empty room, the camera's frame size) as --camera-id's "
        "reference before uploading",
    )  # fmt: skip
    p.add_argument(
        "--pred", type=Path, metavar="DIR",
        help="also write the detections to DIR/<FILE's name>.txt for gd-eval --pred DIR",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.fps is not None and not valid_fps(args.fps):
        p.error(fps_message(args.fps, "--fps"))
    if args.reference is not None and args.camera_id is None:
        p.error("--reference needs --camera-id: the camera it belongs to")
    return args


def read_reference(path: Path) -> np.ndarray:
    """A reference PNG's depth (uint16 [H, W] mm), or ValueError saying what is wrong."""
    try:
        return decode_png_depth(path.read_bytes())
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror or e}") from None
    except DepthFileError as e:
        raise ValueError(f"{path}: {e}") from None


def prediction_path(folder: Path, file: Path) -> Path:
    """Where `--pred` writes: named after the video, as its ground-truth file is."""
    return folder / f"{file.stem}{SUFFIX}"


def write_predictions(path: Path, result: Detections) -> None:
    """The detections as a PKU-MMD label file: `class_id,start_frame,end_frame,confidence`."""
    rows = np.array(
        [(d.class_id, d.start_frame, d.end_frame, d.confidence) for d in result.detections],
        dtype=np.float64,
    ).reshape(-1, 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_label_file(path, rows)


def table(result: Detections, name: str) -> str:
    """The detections as aligned text, under a line about the video and the model."""
    v, m = result.video, result.model
    lines = [
        f"{name}: {v['frames']} frames {v['width']}x{v['height']}, {v['duration_s']:.1f} s, "
        f"{v['clips']} clips; model {m['name']} {m['version']}; "
        f"{result.timing_ms.get('total', 0):.0f} ms"
    ]
    if not result.detections:
        return "\n".join([*lines, "no actions detected"])
    width = max(5, *(len(d.label) for d in result.detections))
    lines.append(f"{'#':>3}  {'label':<{width}}  {'start':>8}  {'end':>8}  {'frames':>11}  conf")
    for i, d in enumerate(result.detections, 1):
        frames = f"{d.start_frame}-{d.end_frame}"
        lines.append(
            f"{i:>3}  {d.label:<{width}}  {d.start_s:>6.2f} s  {d.end_s:>6.2f} s  {frames:>11}  "
            f"{d.confidence:.2f}"
        )
    return "\n".join(lines)


def upload(client: Client, args: argparse.Namespace, err: TextIO) -> Detections:
    with tqdm(
        desc=args.file.name, unit="B", unit_scale=True, unit_divisor=1024, file=err, disable=None
    ) as bar:

        def progress(sent: int, total: int) -> None:
            bar.total = total
            bar.update(sent - bar.n)
            if sent == total:
                bar.set_postfix_str("detecting")

        return client.upload(args.file, args.fps, clip_scores=args.scores, progress=progress,
                             camera_id=args.camera_id)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        client = Client(args.url, options.token(args))
        if not args.file.exists():
            raise ValueError(f"{args.file}: no such file or folder")
        if args.reference is not None:
            client.put_reference(args.camera_id, read_reference(args.reference))
        result = upload(client, args, sys.stderr)
    except Unauthorized as e:
        print(f"gd-upload: unauthorized: {e.message}; give a valid --token", file=sys.stderr)
        return options.EXIT_UNAUTHORIZED
    except ApiError as e:
        hint = FLAG_HINTS.get(e.code, "")
        print(f"gd-upload: {e}{hint}", file=sys.stderr)
        return options.EXIT_ERROR
    except ValueError as e:
        print(f"gd-upload: {e}", file=sys.stderr)
        return options.EXIT_USAGE
    except KeyboardInterrupt:
        return options.EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(result.raw))
    else:
        print(table(result, args.file.name))
    if args.pred is not None:
        path = prediction_path(args.pred, args.file)
        try:
            write_predictions(path, result)
        except OSError as e:
            print(f"gd-upload: --pred: cannot write {path}: {e}", file=sys.stderr)
            return options.EXIT_USAGE
        print(f"gd-upload: wrote {len(result.detections)} detections to {path}", file=sys.stderr)
    return options.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
