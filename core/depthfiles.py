"""Depth videos in files: the reading rules uploads (`server.uploads`) and file sources
(`clients.sources`) share, so a file one accepts the other accepts too (docs/api.md).

- An array is `uint16` millimetres (either byte order), `T x H x W` with T, H, W >= 1.
- An `.npz` holds the frames as `depth` (or as its only array besides the timing ones) and
  optionally `timestamps_us` (one integer per frame, increasing, within int64) or `fps`.
- PNG frames are 16-bit grayscale, all of one size, in natural name order (`frame2` before
  `frame10`).

The server reads untrusted bytes with caps of its own before these rules run; every rule
raises `DepthFileError`, which each side turns into its own error (a 422, a `SourceError`).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NPZ_TIMING = ("timestamps_us", "fps")  # the .npz arrays that are not frames


class DepthFileError(ValueError):
    """A file's frames or timing break the reading rules."""


def natural_key(name: str) -> list[Any]:
    """Sort key that orders the numbers inside names by value: `frame2` before `frame10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def check_depth_layout(dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Frames of `dtype` and `shape` are depth: uint16 (any byte order), T x H x W, all >= 1.
    Takes the layout, not the array, so a header can be checked before the data is read."""
    if dtype.kind != "u" or dtype.itemsize != 2:
        raise DepthFileError(f"depth must be uint16 millimetres, got {dtype}")
    if len(shape) != 3 or 0 in shape:
        raise DepthFileError(f"depth must be T x H x W with T, H, W >= 1, got shape {shape}")


def npz_frames_key(names: Iterable[str]) -> str:
    """Which `.npz` array holds the frames: `depth`, or the only one besides the timing."""
    names = list(names)
    if "depth" in names:
        return "depth"
    frames = [n for n in names if n not in NPZ_TIMING]
    if len(frames) != 1:
        shown = [n[:40] for n in frames[:5]]  # a list's repr escapes control characters
        raise DepthFileError(f".npz needs an array 'depth' (or a single array); has {shown}")
    return frames[0]


def check_timestamps(timestamps_us: np.ndarray, n_frames: int) -> np.ndarray:
    """An `.npz`'s `timestamps_us` for `n_frames` frames, as int64 microseconds."""
    ts = np.asarray(timestamps_us)
    if ts.dtype.kind not in "iu" or ts.shape != (n_frames,):
        raise DepthFileError(
            f"timestamps_us must be {n_frames} integers, got {ts.dtype} {ts.shape}"
        )
    if ts.dtype == np.uint64 and ts.size and ts.max() > np.iinfo(np.int64).max:
        raise DepthFileError("timestamps_us must fit in int64 microseconds")
    ts = ts.astype(np.int64)
    if np.any(np.diff(ts) <= 0):
        raise DepthFileError("timestamps_us must increase")
    return ts


def png_size(data: bytes | memoryview) -> tuple[int, int, int, int]:
    """`(height, width, bit_depth, color_type)` from a PNG's IHDR, without decoding it."""
    head = bytes(data[:26])
    if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise DepthFileError("payload is not a PNG (bad signature or no IHDR first)")
    width, height, bit_depth, color_type = struct.unpack(">IIBB", head[16:26])
    return height, width, bit_depth, color_type


def png_depth_size(data: bytes | memoryview) -> tuple[int, int]:
    """`(height, width)` of a 16-bit grayscale PNG, from its header, before decoding it."""
    height, width, bit_depth, color_type = png_size(data)
    if (bit_depth, color_type) != (16, 0):
        raise DepthFileError(
            f"PNG must be 16-bit grayscale, got bit depth {bit_depth}, color type {color_type}"
        )
    return height, width


def decode_png_depth(data: bytes | memoryview, size: tuple[int, int] | None = None) -> np.ndarray:
    """A 16-bit grayscale PNG -> uint16 `[H, W]`; `size` when `png_depth_size` gave it already."""
    import cv2  # only here: core stays numpy-only for everything else

    size = size or png_depth_size(data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint16 or image.shape != size:
        raise DepthFileError("PNG is corrupt or truncated")
    return image


def check_same_size(name: str, size: tuple[int, int], first: tuple[int, int]) -> None:
    """Every frame of a video has the first frame's `(height, width)`."""
    if size != first:
        raise DepthFileError(
            f"{name} is {size[1]}x{size[0]}, the first frame {first[1]}x{first[0]}: all frames "
            "must have one size"
        )
