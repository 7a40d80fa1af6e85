"""Writers for the NTU RGB+D and PKU-MMD file layouts, so that synthetic data reads exactly
like the real datasets (docs/datasets.md, design.md §6).

NTU RGB+D (classification), one sample `SsssCcccPpppRrrrAaaa`:
    nturgb+d_skeletons/<name>.skeleton          text, the format of read_skeleton_file.m
    nturgb+d_depth_masked/<name>/MDepth-%08d.png uint16 mm, background 0, frames from 1
    nturgb+d_rgb/<name>_rgb.avi                 colour video
PKU-MMD phase 1 (detection), one video `NNNN-V` (V in L, M, R):
    label/<video>.txt      `label,start,end,confidence` per action instance
    skeleton/<video>.txt   per frame 150 floats: 25 joints x (x, y, z) x 2 bodies
    depth/<video>/Depth-%08d.png, rgb/<video>.avi
    split/cross-subject.txt, split/cross-view.txt
Both layouts, written by gd-synth only (the real datasets have no such folder):
    reference/<name>.png   the sample's camera's empty-room depth, uint16 mm (0 = no reading),
                           the depth frames' size (gd-prep --person-crop, core.foreground)

Inputs are the generator's plain arrays: joints float32 [T, B, 25, 3] camera-space metres in
Kinect v2 joint order, tracked bool [T, B], depth_xy / color_xy float32 [T, B, 25, 2] pixels,
depth uint16 [T, H, W] mm, body_mask bool [T, H, W], rgb uint8 [T, H, W, 3] in RGB order.
Every file (and depth folder) is written under a temporary name and renamed, so an interrupted
run never leaves a truncated file that looks complete; parent folders are created as needed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from core.files import atomic_output, atomic_write_bytes, make_temp_dir
from core.labels import write_label_file
from core.splits import VIDEO_NAME

NUM_JOINTS = 25
FPS = 30.0

NTU_SKELETON_DIR = "nturgb+d_skeletons"
NTU_DEPTH_DIR = "nturgb+d_depth_masked"
NTU_RGB_DIR = "nturgb+d_rgb"
NTU_SKELETON_SUFFIX = ".skeleton"
NTU_RGB_SUFFIX = "_rgb.avi"
NTU_DEPTH_PATTERN = "MDepth-{:08d}.png"
NTU_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
# The .skeleton files come from the Kinect v2 SDK on Windows: CRLF line ends (see docs).
NTU_NEWLINE = "\r\n"
# Real body ids are 64-bit Kinect tracking ids; this one is from S001C001P001R001A001.
NTU_FIRST_BODY_ID = 72057594037931101

REFERENCE_DIR = "reference"  # <root>/reference/<sample name>.png (both layouts)

PKU_LABEL_DIR = "label"
PKU_SKELETON_DIR = "skeleton"
PKU_DEPTH_DIR = "depth"
PKU_RGB_DIR = "rgb"
PKU_SPLIT_DIR = "split"
PKU_DEPTH_PATTERN = "Depth-{:08d}.png"
PKU_VIEWS = ("L", "M", "R")
PKU_VIDEO_NAME = VIDEO_NAME  # one home: core.splits, which reads what this module writes
# Titles of lines 1 and 3 of the released split files, typo included.
PKU_SPLIT_TITLES = ("Training videos: ", "Validataion videos: ")
PKU_CONFIDENCE = 2  # PKU-MMD: 1 = slight, 2 = strong recommendation
SYNTH_MARKER = "gd-synth.json"  # at the root of a tree gd-synth wrote: provenance, class names
# Cross-subject training performers (NTU RGB+D paper; NTU RGB+D 120 paper for 120).
# fmt: off
XSUB_TRAIN_60 = frozenset((
    1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38,
))
XSUB_TRAIN_120 = XSUB_TRAIN_60 | frozenset((
    45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86,
    89, 91, 92, 93, 94, 95, 97, 98, 100, 103,
))
# fmt: on


def ntu_name(setup: int, camera: int, performer: int, replication: int, action: int) -> str:
    """`SsssCcccPpppRrrrAaaa`, every field 1..999."""
    fields = {
        "setup": setup,
        "camera": camera,
        "performer": performer,
        "replication": replication,
        "action": action,
    }
    for key, value in fields.items():
        if not 1 <= value <= 999:
            raise ValueError(f"NTU {key} must be in 1..999, got {value}")
    return f"S{setup:03d}C{camera:03d}P{performer:03d}R{replication:03d}A{action:03d}"


def pku_video_name(number: int, view: str) -> str:
    """`NNNN-V`, e.g. `0002-L`."""
    if not 1 <= number <= 9999 or view not in PKU_VIEWS:
        raise ValueError(
            f"PKU-MMD video needs number 1..9999 and view in L/M/R, got {number}, {view}"
        )
    return f"{number:04d}-{view}"


# ---------------------------------------------------------------- NTU RGB+D skeleton text


def net_float(x: float) -> str:
    """A float as .NET's Single.ToString() prints it (7 significant digits), like the SDK."""
    text = f"{float(x) + 0.0:.7g}"  # + 0.0 turns -0.0 into 0.0
    return text.replace("e", "E")


def format_ntu_skeleton(
    joints: np.ndarray,
    tracked: np.ndarray,
    depth_xy: np.ndarray,
    color_xy: np.ndarray,
    body_ids: Sequence[int] | None = None,
) -> str:
    """The `.skeleton` text of one sample; a frame lists its tracked bodies in slot order.

    Per body: `bodyID clippedEdges handLeftConfidence handLeftState handRightConfidence
    handRightState isRestricted leanX leanY trackingState`, `25`, then per joint `x y z depthX
    depthY colorX colorY orientationW orientationX orientationY orientationZ trackingState`.
    The generator has no hand states or joint orientations: hands are written as tracked
    and open-confidence 1 (as in most real files) and orientations as `0 0 0 0`, which real
    files use for joints without an orientation.
    """
    joints, tracked, depth_xy, color_xy = _check_bodies(joints, tracked, depth_xy, color_xy)
    n_bodies = joints.shape[1]
    ids = [NTU_FIRST_BODY_ID + b for b in range(n_bodies)] if body_ids is None else body_ids
    if len(ids) != n_bodies:
        raise ValueError(f"need {n_bodies} body ids, got {len(ids)}")
    lean = _lean(joints)
    joint_cols = np.concatenate([joints, depth_xy, color_xy], axis=-1)  # [T, B, 25, 7]
    lines = [str(len(joints))]
    for t in range(len(joints)):
        bodies = np.flatnonzero(tracked[t])
        lines.append(str(len(bodies)))
        for b in bodies:
            lean_x, lean_y = (net_float(v) for v in lean[t, b])
            lines.append(f"{ids[b]} 0 1 1 1 1 0 {lean_x} {lean_y} 2")
            lines.append(str(NUM_JOINTS))
            for row in joint_cols[t, b]:
                lines.append(" ".join(net_float(v) for v in row) + " 0 0 0 0 2")
    return NTU_NEWLINE.join(lines) + NTU_NEWLINE


def write_ntu_skeleton(
    path: str | os.PathLike,
    joints: np.ndarray,
    tracked: np.ndarray,
    depth_xy: np.ndarray,
    color_xy: np.ndarray,
    body_ids: Sequence[int] | None = None,
) -> None:
    """Writes `format_ntu_skeleton(...)` to `path` atomically."""
    text = format_ntu_skeleton(joints, tracked, depth_xy, color_xy, body_ids)
    atomic_write_bytes(Path(path), text.encode("ascii"))


def _lean(joints: np.ndarray) -> np.ndarray:
    """Kinect-style body lean in [-1, 1]: the spine's tilt sideways (x) and forwards (-z)."""
    spine = joints[..., 20, :] - joints[..., 0, :]  # spine base -> spine shoulder
    norm = np.linalg.norm(spine, axis=-1, keepdims=True)
    unit = np.divide(spine, norm, out=np.zeros_like(spine), where=norm > 0)
    return np.clip(np.stack([unit[..., 0], -unit[..., 2]], axis=-1), -1.0, 1.0)


# ---------------------------------------------------------------- PKU-MMD skeleton, labels, splits


def format_pku_skeleton(joints: np.ndarray, tracked: np.ndarray) -> str:
    """One line per frame: 150 `%f` floats, bodies 1 and 2 (zeros where a body is absent)."""
    joints, tracked = _check_joints(joints, tracked)
    two = np.zeros((len(joints), 2, NUM_JOINTS, 3), dtype=np.float64)
    n = min(2, joints.shape[1])
    two[:, :n] = np.where(tracked[:, :n, None, None], joints[:, :n], 0.0)
    rows = two.reshape(len(joints), -1) + 0.0  # + 0.0 turns -0.0 into 0.0
    return "".join(" ".join(f"{v:f}" for v in row) + "\n" for row in rows)


def format_pku_split(train: Sequence[str], test: Sequence[str]) -> str:
    """A split file: title, training videos, title, test videos; each name followed by `, `."""
    train_title, test_title = PKU_SPLIT_TITLES
    return (
        f"{train_title}\n{''.join(v + ', ' for v in train)}\n"
        f"{test_title}\n{''.join(v + ', ' for v in test)}\n"
    )


def write_pku_split(path: str | os.PathLike, train: Sequence[str], test: Sequence[str]) -> None:
    """Writes one split file (`split/cross-subject.txt` or `split/cross-view.txt`)."""
    for name in (*train, *test):
        if not PKU_VIDEO_NAME.fullmatch(name):
            raise ValueError(f"{path}: {name!r} is not a PKU-MMD video name NNNN-V")
    atomic_write_bytes(Path(path), format_pku_split(train, test).encode("ascii"))


def pku_label_rows(segments: Sequence[tuple[int, int, int]], confidence: int) -> np.ndarray:
    """`[N, 4]` rows `label, start, end, confidence` from `(label, start, end)` segments."""
    rows = [(label, start, end, confidence) for label, start, end in segments]
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


# ---------------------------------------------------------------- depth PNGs, RGB AVI


def write_depth_pngs(
    folder: str | os.PathLike, depth: np.ndarray, pattern: str = NTU_DEPTH_PATTERN
) -> None:
    """One 16-bit PNG per frame, numbered from 1; the folder appears complete or not at all."""
    depth = np.asarray(depth)
    if depth.dtype != np.uint16 or depth.ndim != 3:
        raise ValueError(f"depth must be uint16 [T, H, W], got {depth.dtype} {depth.shape}")
    folder = Path(folder)

    def fill(tmp: Path) -> None:
        for i, frame in enumerate(depth, start=1):
            if not cv2.imwrite(str(tmp / pattern.format(i)), frame):
                raise OSError(f"{folder}: OpenCV could not write frame {i}")

    _write_dir_atomic(folder, fill)


def reference_path(root: str | os.PathLike, name: str) -> Path:
    """Where the empty-room reference of sample or video `name` lives under `root`."""
    return Path(root) / REFERENCE_DIR / f"{name}.png"


def write_reference(root: str | os.PathLike, name: str, depth: np.ndarray) -> Path:
    """`reference_path(root, name)`: a 16-bit single-channel PNG of uint16 [H, W] mm."""
    depth = np.asarray(depth)
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise ValueError(f"a reference must be uint16 [H, W], got {depth.dtype} {depth.shape}")
    ok, png = cv2.imencode(".png", depth)
    if not ok:
        raise OSError(f"{name}: OpenCV could not encode the reference")
    path = reference_path(root, name)
    atomic_write_bytes(path, png.tobytes())
    return path


def write_avi(path: str | os.PathLike, rgb: np.ndarray, fps: float = FPS) -> None:
    """An MJPG `.avi` (decodable by every OpenCV/FFmpeg build) from RGB frames."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 4 or rgb.shape[-1] != 3 or len(rgb) == 0:
        raise ValueError(f"rgb must be uint8 [T>0, H, W, 3], got {rgb.dtype} {rgb.shape}")
    # OpenCV picks the container from the suffix, so the temporary name ends in .avi too.
    with atomic_output(path, suffix=".avi") as tmp:
        height, width = rgb.shape[1:3]
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
        if not writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot open an MJPG video writer")
        for frame in rgb:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()


# ---------------------------------------------------------------- whole samples


def write_ntu_sample(
    root: str | os.PathLike,
    name: str,
    joints: np.ndarray,
    tracked: np.ndarray,
    depth_xy: np.ndarray,
    color_xy: np.ndarray,
    depth: np.ndarray | None = None,
    body_mask: np.ndarray | None = None,
    rgb: np.ndarray | None = None,
    fps: float = FPS,
) -> None:
    """One NTU RGB+D sample under `root`; depth is masked to `body_mask` like the released
    `nturgb+d_depth_masked`; a modality passed as None is not written."""
    if not NTU_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not an NTU RGB+D name SsssCcccPpppRrrrAaaa")
    root = Path(root)
    skeleton = format_ntu_skeleton(joints, tracked, depth_xy, color_xy)
    if depth is not None:
        if body_mask is not None:
            if body_mask.shape != depth.shape:
                raise ValueError(f"body_mask {body_mask.shape} != depth {depth.shape}")
            depth = np.where(body_mask, depth, 0).astype(np.uint16)
        write_depth_pngs(root / NTU_DEPTH_DIR / name, depth, NTU_DEPTH_PATTERN)
    if rgb is not None:
        write_avi(root / NTU_RGB_DIR / f"{name}{NTU_RGB_SUFFIX}", rgb, fps)
    # Last, so that a sample with a skeleton file has all its other modalities.
    skeleton_path = root / NTU_SKELETON_DIR / f"{name}{NTU_SKELETON_SUFFIX}"
    atomic_write_bytes(skeleton_path, skeleton.encode("ascii"))


def write_pku_video(
    root: str | os.PathLike,
    video: str,
    joints: np.ndarray,
    tracked: np.ndarray,
    segments: Sequence[tuple[int, int, int]],
    depth: np.ndarray | None = None,
    rgb: np.ndarray | None = None,
    fps: float = FPS,
    confidence: int = PKU_CONFIDENCE,
) -> None:
    """One PKU-MMD video under `root`: label, skeleton, and depth / RGB when given.

    `segments` are `(label, start_frame, end_frame)`, labels 1..51, frames as the generator
    counts them (written unchanged)."""
    if not PKU_VIDEO_NAME.fullmatch(video):
        raise ValueError(f"{video!r} is not a PKU-MMD video name NNNN-V")
    root = Path(root)
    labels = pku_label_rows(segments, confidence)
    skeleton = format_pku_skeleton(joints, tracked)
    atomic_write_bytes(root / PKU_SKELETON_DIR / f"{video}.txt", skeleton.encode("ascii"))
    if depth is not None:
        write_depth_pngs(root / PKU_DEPTH_DIR / video, depth, PKU_DEPTH_PATTERN)
    if rgb is not None:
        write_avi(root / PKU_RGB_DIR / f"{video}.avi", rgb, fps)
    # Last, so that a video with a label file has all its other modalities.
    (root / PKU_LABEL_DIR).mkdir(parents=True, exist_ok=True)
    write_label_file(root / PKU_LABEL_DIR / f"{video}.txt", labels)


def write_pku_splits(
    root: str | os.PathLike,
    cross_subject: tuple[Sequence[str], Sequence[str]],
    cross_view: tuple[Sequence[str], Sequence[str]],
) -> None:
    """`split/cross-subject.txt` and `split/cross-view.txt`, each from (train, test) names."""
    split_dir = Path(root) / PKU_SPLIT_DIR
    write_pku_split(split_dir / "cross-subject.txt", *cross_subject)
    write_pku_split(split_dir / "cross-view.txt", *cross_view)


# ---------------------------------------------------------------- helpers


def _check_joints(joints: np.ndarray, tracked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    joints = np.asarray(joints, dtype=np.float64)
    tracked = np.asarray(tracked, dtype=bool)
    if joints.ndim != 4 or joints.shape[2:] != (NUM_JOINTS, 3):
        raise ValueError(f"joints must be [T, B, 25, 3], got {joints.shape}")
    if tracked.shape != joints.shape[:2]:
        raise ValueError(f"tracked must be [T, B] = {joints.shape[:2]}, got {tracked.shape}")
    if not np.all(np.isfinite(joints)):
        raise ValueError("joints must be finite")
    return joints, tracked


def _check_bodies(
    joints: np.ndarray, tracked: np.ndarray, depth_xy: np.ndarray, color_xy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    joints, tracked = _check_joints(joints, tracked)
    pixels = []
    for key, xy in (("depth_xy", depth_xy), ("color_xy", color_xy)):
        xy = np.asarray(xy, dtype=np.float64)
        shape = (*joints.shape[:3], 2)
        if xy.shape != shape:
            raise ValueError(f"{key} must be {shape}, got {xy.shape}")
        if not np.all(np.isfinite(xy)):
            raise ValueError(f"{key} must be finite")
        pixels.append(xy)
    return joints, tracked, pixels[0], pixels[1]


def _write_dir_atomic(folder: Path, fill: Callable[[Path], None]) -> None:
    """Fills a temporary sibling folder, then swaps it in place of `folder`."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(folder.parent, prefix=f".{folder.name}.")
    try:
        fill(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
