"""Synthetic site recordings: what `gd-record --color` captures at a site, made from the
generator's detection videos, with the label file a person would write for them.

Each recording is a `.db3` written through librealsense's software device (depth, and with
`color` the RGB video on a colour clock `COLOR_LAG_US` behind depth, as a real camera's
streams are not in lockstep), named `site-NNN.db3`; `labels.csv` holds every action in the
label format of `core.recording_labels`. They feed the walk-through of docs/retraining.md
and its tests.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.clip import frame_timestamps_us
from core.files import atomic_write_text
from core.realsense import record
from core.recording_labels import CLASSES_FILE, LABELS_FILE, Segment, format_labels
from synth.generate import (
    COLOR_SIZE,
    DEPTH_SIZE,
    NUM_SUBJECTS,
    TARGET_CLASSES,
    class_names,
    detection_video,
    generate_many,
)
from synth.subjects import DEFAULT_DIFFICULTY

T0_US = 1_000_000  # recordings start at a camera's clock, not at zero
COLOR_LAG_US = 8_000  # under half a 30 fps frame: the nearest colour frame is the same instant


def recording_name(index: int) -> str:
    return f"site-{index + 1:03d}.db3"


def write_site_recording(
    out: str,
    name: str,
    color: bool,
    seed: int,
    subject: int,
    camera: int,
    n_actions: int,
    size: tuple[int, int],
    color_size: tuple[int, int],
    difficulty: float,
) -> list[Segment]:
    """Render one detection video, write it as `out/name`, return its labels (a worker job)."""
    rec = detection_video(seed, subject=subject, camera=camera, n_actions=n_actions, size=size,
                          color_size=color_size, difficulty=difficulty)  # fmt: skip
    ts = frame_timestamps_us(len(rec.depth), rec.fps) + T0_US
    record(
        Path(out) / name, rec.depth, ts, rec.fps,
        color=rec.rgb if color else None,
        color_timestamps_us=ts + COLOR_LAG_US if color else None,
    )  # fmt: skip
    names = class_names(TARGET_CLASSES)
    # Segments are frames, end inclusive; labels are seconds from the first frame, end
    # exclusive: frame f spans [f, f + 1) / fps.
    return [
        Segment(0, name, names[label - 1], start / rec.fps, (end + 1) / rec.fps)
        for label, start, end in rec.segments
    ]


def site_jobs(
    out: Path,
    count: int,
    seed: int,
    color: bool,
    actions: tuple[int, int],
    size: tuple[int, int],
    color_size: tuple[int, int],
    difficulty: float,
) -> list[dict]:
    """One job per recording: subjects and views vary as at a site with several people."""
    rng = np.random.default_rng([seed, 0x517E])
    return [
        dict(
            out=str(out), name=recording_name(i), color=color, seed=seed * 10_000 + i,
            subject=1 + i % NUM_SUBJECTS, camera=1 + i % 3,
            n_actions=int(rng.integers(actions[0], actions[1] + 1)),
            size=size, color_size=color_size, difficulty=difficulty,
        )
        for i in range(count)
    ]  # fmt: skip


def add_parser(sub: argparse._SubParsersAction, frame_size: Callable[[str], Any]) -> None:
    """`gd-synth recordings`: its arguments."""
    r = sub.add_parser(
        "recordings",
        help="site recordings (.db3, depth and optionally colour) and their label file",
        description="Synthetic site recordings as gd-record writes them (site-NNN.db3, through "
        "librealsense's software device) with labels.csv (docs/retraining.md) and classes.txt.",
    )
    r.add_argument("--out", type=Path, required=True, help="folder to write")
    r.add_argument("--count", type=int, required=True, help="number of recordings")
    r.add_argument("--color", action="store_true", help="record the RGB video too")
    r.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    r.add_argument("--size", type=frame_size, default=DEPTH_SIZE, metavar="HxW",
                   help="depth frame size (default 96x128)")  # fmt: skip
    r.add_argument("--color-size", type=frame_size, default=COLOR_SIZE, metavar="HxW",
                   help="RGB frame size (default 120x160)")  # fmt: skip
    r.add_argument("--actions", type=int, nargs=2, default=(4, 8), metavar=("MIN", "MAX"),
                   help="actions per recording (default 4 8)")  # fmt: skip
    r.add_argument("--difficulty", type=float, default=DEFAULT_DIFFICULTY,
                   help=f"0 = clean, 1 = hardest (default {DEFAULT_DIFFICULTY})")  # fmt: skip
    r.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="parallel processes (default: all cores)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """`gd-synth recordings`: write the recordings, labels.csv and classes.txt."""
    lo, hi = args.actions
    if args.count < 1 or not 1 <= lo <= hi or not 0.0 <= args.difficulty <= 1.0:
        print("gd-synth: error: need --count >= 1, 1 <= MIN <= MAX and --difficulty in [0, 1]",
              file=sys.stderr)  # fmt: skip
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = site_jobs(args.out, args.count, args.seed, args.color, args.actions, args.size,
                     args.color_size, args.difficulty)  # fmt: skip
    made = generate_many(write_site_recording, jobs, max(args.workers, 1), "gd-synth recordings")
    segments = [s for labels in made for s in labels]
    atomic_write_text(args.out / LABELS_FILE, format_labels(segments))
    atomic_write_text(args.out / CLASSES_FILE, "\n".join(class_names(TARGET_CLASSES)) + "\n")
    print(f"wrote {args.count} recordings, {LABELS_FILE} and {CLASSES_FILE} to {args.out}")
    return 0
