"""Site recordings for `gd-prep --dataset recordings` (docs/retraining.md).

    ROOT/*.db3, *.bag      RealSense recordings (gd-record): depth, and colour when recorded
    ROOT/labels.csv        their labels (core.recording_labels): recording,label,start,end[,subset]
    ROOT/classes.txt       optional: the class names in id order (1, 2, ...); without it the
                           labels' names sorted; a labelled name missing from it is an error

Each recording is one PKU-MMD-like detection sample: `labels` rows `class id, start, end,
1` in source frames at the cache's `fps` (end inclusive, as PKU-MMD's), so training reads it
as it reads PKU-MMD. A recording without labels is all background. Depth is resampled by its
own timestamps to the kept rate and reduced with `core.clip.DepthPreprocessor`, as the server
does; colour, when present, is aligned by timestamp: the colour frame nearest to each kept
depth frame (ties to the earlier one). Recordings stream frame by frame: memory holds the kept,
reduced frames only.

Split: the label file's `subset` column where it has one; otherwise a seeded draw over
recording names (`TEST_FRACTION` of them, at least one when there are two or more, seed
`SPLIT_SEED`), so the split never depends on the order of files.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.clip import DepthPreprocessor, TimestampResampler
from core.realsense import COLOR, DEPTH, RealSenseError, has_stream, play
from core.recording_labels import (
    CLASSES_FILE,
    LABELS_FILE,
    LabelFileError,
    check_segments,
    describe,
    durations_of,
    parse_labels,
    read_class_list,
)
from training.datasets.errors import DatasetFormatError

SUFFIXES = (".db3", ".bag")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class SiteRecording:
    """One recording; `labels` float64 [N, 4]: class id (1-based), start, end (source frames
    at the cache's fps, end inclusive), confidence 1."""

    name: str
    path: Path
    labels: np.ndarray


def recording_files(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if p.suffix in SUFFIXES and p.is_file())


def class_list(root: Path, labelled: set[str]) -> list[str]:
    """The class names in id order: ROOT/classes.txt, else the labelled names sorted."""
    path = Path(root) / CLASSES_FILE
    return read_class_list(path) if path.is_file() else sorted(labelled)


def split(names: list[str], subsets: dict[str, str]) -> dict[str, str]:
    """`train` / `test` for each recording: its `subset` column, else the seeded draw."""
    free = sorted(n for n in names if n not in subsets)
    n_test = max(round(TEST_FRACTION * len(free)), 1) if len(free) > 1 else 0
    test = set(np.random.default_rng(SPLIT_SEED).permutation(free)[:n_test].tolist())
    return {n: subsets.get(n, "test" if n in test else "train") for n in names}


def list_recordings(root: Path, fps: float) -> list[tuple[SiteRecording, str]]:
    """(recording, subset) for every recording under `root`.

    Raises `LabelFileError` naming every bad row of the label file (unreadable recordings
    excepted: those stay in the list, fail when prepared, and are skipped by name).
    """
    root = Path(root)
    labels_path = root / LABELS_FILE
    if not labels_path.is_file():
        raise DatasetFormatError(root, f"no {LABELS_FILE} (docs/retraining.md)")
    files = recording_files(root)
    if not files:
        raise DatasetFormatError(root, "no .db3 / .bag recordings")
    segments, problems = parse_labels(labels_path.read_text(encoding="utf-8"))
    durations = durations_of(root, (s.recording for s in segments))
    unreadable = {name for name, d in durations.items() if isinstance(d, str)}
    readable = [s for s in segments if s.recording not in unreadable]
    classes = class_list(root, {s.label for s in segments})
    problems += check_segments(readable, durations, classes)
    if problems:
        raise LabelFileError(describe(labels_path, problems))
    rows: dict[str, list] = defaultdict(list)
    subsets = {}
    for s in readable:
        end = round(s.end * fps) - 1  # exclusive seconds -> inclusive frame
        rows[s.recording].append((classes.index(s.label) + 1, round(s.start * fps), end, 1))
        if s.subset:
            subsets[s.recording] = s.subset
    chosen = split([p.name for p in files], subsets)
    out = [
        (
            SiteRecording(p.stem, p, np.array(rows[p.name], np.float64).reshape(-1, 4)),
            chosen[p.name],
        )
        for p in files
    ]
    return out


def recording_classes(root: Path) -> list[str]:
    """The class names of a recordings folder in id order (see `class_list`)."""
    segments, _ = parse_labels((Path(root) / LABELS_FILE).read_text(encoding="utf-8"))
    return class_list(root, {s.label for s in segments})


def recording_modalities(root: Path) -> list[str]:
    """depth, and rgb and flow when every readable recording holds colour (an unreadable one
    is skipped by name later)."""
    holds = []
    for path in recording_files(root):
        with contextlib.suppress(RealSenseError):
            holds.append(has_stream(path, COLOR))
    return ["depth", "rgb", "flow"] if holds and all(holds) else ["depth"]


# --- frames ----------------------------------------------------------------------------------


def kept_depth(
    path: Path, rate_hz: float, reduce: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Depth frames kept at `rate_hz` by their timestamps, each through `reduce(frame)` (a
    `DepthPreprocessor` made for the frame size), and the timestamps of the kept frames."""
    resampler = TimestampResampler(rate_hz)
    frames, stamps = [], []

    def on_frame(t_us: int, pixels: np.ndarray) -> None:
        # A copy: librealsense recycles its buffer, and the resampler may choose this frame
        # only when the next one arrives.
        for _, (t, image) in resampler.push(t_us, (t_us, np.array(pixels))):
            frames.append(reduce(image))
            stamps.append(t)

    if play(path, DEPTH, on_frame) is None:
        raise DatasetFormatError(path, "no z16 depth stream")
    if not frames:
        raise DatasetFormatError(path, "no depth frames")
    return np.stack(frames), np.asarray(stamps, np.int64)


def nearest_color(
    path: Path, targets_us: np.ndarray, fit: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """For each target timestamp (increasing), `fit(frame)` of the colour frame nearest to it
    (ties to the earlier frame), reading the colour stream once."""
    out: list[np.ndarray] = []
    previous: list[tuple[int, np.ndarray]] = []

    def on_frame(t_us: int, pixels: np.ndarray) -> None:
        current = fit(np.array(pixels))
        # Every target up to this frame is decided: this frame or the one before.
        while len(out) < len(targets_us) and targets_us[len(out)] <= t_us:
            target = targets_us[len(out)]
            near_previous = previous and target - previous[0][0] <= t_us - target
            out.append(previous[0][1] if near_previous else current)
        previous[:] = [(t_us, current)]

    if play(path, COLOR, on_frame) is None:
        raise DatasetFormatError(path, "no rgb8 colour stream (record with --color)")
    if not previous:
        raise DatasetFormatError(path, "no colour frames")
    out += [previous[0][1]] * (len(targets_us) - len(out))  # targets after the last frame
    return np.stack(out)


def prepare_recording(
    sample: SiteRecording,
    settings: Any,
    fit_rgb: Callable[[np.ndarray, Any], np.ndarray],
    optical_flow: Callable[[np.ndarray, str], np.ndarray],
) -> dict[str, np.ndarray]:
    """Depth (and RGB, flow) of one recording at the kept rate, for `gd-prep` (which passes
    its `PrepSettings` and its RGB fitting and flow, so that every dataset shares them)."""
    s = settings
    wanted = set(s.modalities)
    if wanted - {"depth", "rgb", "flow"}:
        raise DatasetFormatError(sample.path, f"holds depth and colour only, not {sorted(wanted)}")
    reducer: list[DepthPreprocessor] = []  # made for the recording's frame size

    def reduce(frame: np.ndarray) -> np.ndarray:
        if not reducer:
            reducer.append(DepthPreprocessor(s.spec, *frame.shape))
        return reducer[0].to_millimetres(frame)

    depth, stamps = kept_depth(sample.path, s.fps / s.downsample, reduce)
    arrays = {"depth": depth} if "depth" in wanted else {}
    if wanted & {"rgb", "flow"}:
        rgb = nearest_color(sample.path, stamps, lambda frame: fit_rgb(frame, s))
        if "rgb" in wanted:
            arrays["rgb"] = rgb
        if "flow" in wanted:
            arrays["flow"] = optical_flow(rgb, s.flow)
    return arrays
