"""Depth PNG folders and RGB videos, as both datasets store them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from training.datasets.errors import DatasetFormatError

_NUMBER = re.compile(r"(\d+)\D*$")  # the last run of digits in a file name


def depth_frame_paths(folder: str | os.PathLike) -> list[Path]:
    """The PNGs of a depth folder in frame order, whatever their prefix (`MDepth-00000001.png`,
    `Depth-00000001.png`, ...). Numbers must be consecutive: a gap would shift every later
    frame against the skeleton and labels."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: depth folder not found")
    numbered = []
    for path in folder.iterdir():
        if path.suffix.lower() != ".png" or path.name.startswith("."):
            continue
        match = _NUMBER.search(path.stem)
        if match is None:
            raise DatasetFormatError(path, "depth frame name has no frame number")
        numbered.append((int(match.group(1)), path))
    if not numbered:
        raise DatasetFormatError(folder, "no PNG depth frames")
    numbered.sort()
    numbers = [n for n, _ in numbered]
    expected = list(range(numbers[0], numbers[0] + len(numbers)))
    if numbers != expected:
        gap = next(e for n, e in zip(numbers, expected, strict=True) if n != e)
        raise DatasetFormatError(folder, f"depth frames are not consecutive: frame {gap} missing")
    return [path for _, path in numbered]


def iter_depth_frames(folder: str | os.PathLike) -> Iterator[np.ndarray]:
    """uint16 [H, W] millimetre frames of a depth folder, in order."""
    shape = None
    for path in depth_frame_paths(folder):
        frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if frame is None:
            raise DatasetFormatError(path, "cannot decode PNG")
        if frame.dtype != np.uint16 or frame.ndim != 2:
            raise DatasetFormatError(
                path, f"depth must be a 16-bit single-channel PNG, got {frame.dtype} {frame.shape}"
            )
        if shape is not None and frame.shape != shape:
            raise DatasetFormatError(path, f"frame size {frame.shape} differs from {shape}")
        shape = frame.shape
        yield frame


def read_depth_folder(folder: str | os.PathLike) -> np.ndarray:
    """uint16 [T, H, W] millimetres, 0 = no measurement."""
    return np.stack(list(iter_depth_frames(folder)))


def iter_video_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """uint8 [H, W, 3] RGB frames of a video file, in order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video not found")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DatasetFormatError(path, "OpenCV cannot open this video")
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if count == 0:
            raise DatasetFormatError(path, "no decodable frames")
    finally:
        capture.release()


def read_video(path: str | os.PathLike) -> np.ndarray:
    """uint8 [T, H, W, 3] RGB. A full-HD NTU video is ~6 MB a frame: prefer
    `iter_video_frames` when resizing on the fly."""
    return np.stack(list(iter_video_frames(path)))
