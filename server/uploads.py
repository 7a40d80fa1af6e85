"""Uploaded depth videos -> uint16 frames + timestamps, in memory, with limits.

Formats are told by their first bytes, not their names:

| format | magic | frames | timing |
|---|---|---|---|
| `.npy` | `\\x93NUMPY` | uint16 `[T, H, W]` | `fps` query |
| `.npz` | zip of `.npy` | `depth` (or the only array) | `timestamps_us`, `fps` or `fps` query |
| `.zip` | zip of `.png` | 16-bit gray PNGs, natural name order | `fps` query |
| `.db3` | `SQLite format 3` | the z16 depth stream | the recording's timestamps |
| `.bag` | `#ROSBAG V2.0` | idem | idem |

Limits are checked before anything is inflated: zip members' declared sizes and count, PNG
headers (size, bit depth), npy headers (dtype, shape). librealsense reads recordings only
from a path, so a recording is written to a private file in `spool_dir` (RAM-backed
`/dev/shm` by default) and deleted as soon as it is read.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.clip import frame_timestamps_us
from core.realsense import RealSenseError, RecordingTooLarge, read_depth
from core.wire import WireError, png_size

log = logging.getLogger("gd.server.uploads")

MAX_SIDE = 4096


class UploadError(ValueError):
    """An upload the server cannot use; `status` is the HTTP status, `code` a short name."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _invalid(message: str) -> UploadError:
    return UploadError(422, "invalid_video", message)


def _too_large(message: str) -> UploadError:
    return UploadError(413, "too_large", message)


@dataclass(frozen=True)
class Limits:
    max_frames: int
    max_pixel_bytes: int  # decoded uint16 frames, all together
    spool_dir: Path


@dataclass(frozen=True)
class Video:
    frames: np.ndarray  # uint16[T, H, W] millimetres
    timestamps_us: np.ndarray  # int64[T]
    format: str


def sniff(data: bytes) -> str:
    if data.startswith(b"\x93NUMPY"):
        return "npy"
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if data.startswith(b"SQLite format 3\x00"):
        return "db3"
    if data.startswith(b"#ROSBAG V2.0"):
        return "bag"
    raise UploadError(
        415,
        "unsupported_media_type",
        "not a supported depth video: send .npy or .npz (uint16 T x H x W), a .zip of 16-bit "
        "PNG frames, or a RealSense .bag / .db3 recording",
    )


def decode(data: bytes, fps: float | None, limits: Limits) -> Video:
    """Decode an upload's bytes (blocking: run it off the event loop)."""
    kind = sniff(data)
    if kind == "npy":
        frames = _check_frames(_load_npy(data, limits), limits)
        return Video(frames, _timestamps(len(frames), fps, kind), kind)
    if kind == "zip":
        return _decode_zip(data, fps, limits)
    return _decode_recording(data, kind, limits)


def _timestamps(n: int, fps: float | None, kind: str) -> np.ndarray:
    if fps is None:
        raise UploadError(422, "fps_required", f"a .{kind} upload needs the fps query parameter")
    return frame_timestamps_us(n, _check_fps(fps))


def _check_frames(frames: np.ndarray, limits: Limits) -> np.ndarray:
    if frames.dtype.kind != "u" or frames.dtype.itemsize != 2:
        raise _invalid(f"depth must be uint16 millimetres, got {frames.dtype}")
    if frames.ndim != 3 or 0 in frames.shape:
        raise _invalid(f"depth must be T x H x W with T, H, W >= 1, got shape {frames.shape}")
    _check_size(*frames.shape, limits)
    return frames.astype(np.uint16, copy=False)  # big-endian input becomes native


def _check_size(t: int, h: int, w: int, limits: Limits) -> None:
    if h > MAX_SIDE or w > MAX_SIDE:
        raise _invalid(f"frames of {w}x{h} exceed {MAX_SIDE} pixels a side")
    if t > limits.max_frames:
        raise _too_large(f"{t} frames exceed the limit of {limits.max_frames}")
    if 2 * t * h * w > limits.max_pixel_bytes:
        raise _too_large(
            f"{t} frames of {w}x{h} decode to {2 * t * h * w} bytes, over the limit of "
            f"{limits.max_pixel_bytes}"
        )


def _load_npy(data: bytes, limits: Limits) -> np.ndarray:
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
    except ValueError as e:
        raise _invalid(f"not a valid .npy file: {e}") from e
    if dtype.kind != "u" or dtype.itemsize != 2:  # before reading any data
        raise _invalid(f"depth must be uint16 millimetres, got {dtype}")
    if len(shape) != 3:
        raise _invalid(f"depth must be T x H x W, got shape {shape}")
    _check_size(*shape, limits)
    count = int(np.prod(shape))
    offset = f.tell()
    if len(data) - offset < 2 * count:
        raise _invalid(f".npy data is truncated: {len(data) - offset} bytes for shape {shape}")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran else "C")


def _decode_zip(data: bytes, fps: float | None, limits: Limits) -> Video:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, ValueError) as e:
        raise _invalid(f"not a valid zip file: {e}") from e
    if len(members) > limits.max_frames + 2:  # frames plus the .npz extras at most
        raise _too_large(f"the zip holds {len(members)} files; the limit is {limits.max_frames}")
    declared = sum(m.file_size for m in members)
    if declared > limits.max_pixel_bytes + (1 << 20):
        raise _too_large(
            f"the zip inflates to {declared} bytes, over the limit of {limits.max_pixel_bytes}"
        )
    names = [m.filename for m in members]
    if members and all(n.endswith(".npy") for n in names):
        return _decode_npz(archive, fps, limits)
    not_png = [n for n in names if not n.lower().endswith(".png")]
    if not_png or not members:
        raise UploadError(
            415,
            "unsupported_media_type",
            "a zip must hold only .png frames (or be an .npz); found "
            + (", ".join(not_png[:5]) if not_png else "no files"),
        )
    frames = _read_pngs(archive, sorted(members, key=lambda m: _natural(m.filename)), limits)
    return Video(frames, _timestamps(len(frames), fps, "zip"), "png-zip")


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _read(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(member)  # at most member.file_size bytes, CRC-checked
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise _invalid(f"{member.filename}: corrupt zip member ({e})") from e
    except NotImplementedError as e:
        raise _invalid(f"{member.filename}: unsupported compression ({e})") from e


def _read_pngs(archive: zipfile.ZipFile, members: list, limits: Limits) -> np.ndarray:
    import cv2

    frames = None
    for i, member in enumerate(members):
        png = _read(archive, member)
        try:
            h, w, bit_depth, color_type = png_size(png)
        except WireError as e:
            raise _invalid(f"{member.filename}: {e}") from e
        if (bit_depth, color_type) != (16, 0):
            raise _invalid(
                f"{member.filename}: PNG must be 16-bit grayscale, got bit depth {bit_depth}, "
                f"color type {color_type}"
            )
        if frames is None:
            _check_size(len(members), h, w, limits)  # the whole video, before decoding any
            frames = np.empty((len(members), h, w), np.uint16)
        elif (h, w) != frames.shape[1:]:
            raise _invalid(
                f"{member.filename} is {w}x{h}, the first frame {frames.shape[2]}x"
                f"{frames.shape[1]}: all frames must have one size"
            )
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None or image.shape != (h, w) or image.dtype != np.uint16:
            raise _invalid(f"{member.filename}: corrupt or truncated PNG")
        frames[i] = image
    return frames


def _decode_npz(archive: zipfile.ZipFile, fps: float | None, limits: Limits) -> Video:
    arrays = {m.filename[:-4]: m for m in archive.infolist() if not m.is_dir()}
    extras = {"timestamps_us", "fps"}
    candidates = [k for k in arrays if k not in extras]
    key = "depth" if "depth" in arrays else (candidates[0] if len(candidates) == 1 else None)
    if key is None:
        raise _invalid(f".npz must hold an array 'depth' (or a single array); has {candidates}")
    frames = _check_frames(_load_npy(_read(archive, arrays[key]), limits), limits)
    if "timestamps_us" in arrays:
        ts = _load_small(archive, arrays["timestamps_us"])
        if ts.dtype.kind not in "iu" or ts.shape != (len(frames),):
            raise _invalid(
                f"timestamps_us must be {len(frames)} integers, got {ts.dtype} {ts.shape}"
            )
        return Video(frames, ts.astype(np.int64), "npz")
    if "fps" in arrays and fps is None:
        value = _load_small(archive, arrays["fps"])
        if value.size != 1 or value.dtype.kind not in "iuf":
            raise _invalid(f"fps in the .npz must be one number, got {value.dtype} {value.shape}")
        fps = _check_fps(float(value.reshape(())))
    return Video(frames, _timestamps(len(frames), fps, "npz"), "npz")


def _load_small(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> np.ndarray:
    try:
        return np.load(io.BytesIO(_read(archive, member)), allow_pickle=False)
    except ValueError as e:
        raise _invalid(f"{member.filename}: not a valid .npy array ({e})") from e


def _check_fps(fps: float) -> float:
    if not 0 < fps <= 1000:
        raise UploadError(422, "invalid_fps", f"fps must be in (0, 1000], got {fps}")
    return fps


def _decode_recording(data: bytes, kind: str, limits: Limits) -> Video:
    """librealsense plays back from a path only: a private file in RAM, deleted at once."""
    spool = limits.spool_dir if limits.spool_dir.is_dir() else Path(tempfile.gettempdir())
    if spool != limits.spool_dir:
        log.warning("spool_dir %s does not exist; using %s", limits.spool_dir, spool)
    fd, name = tempfile.mkstemp(suffix=f".{kind}", prefix="gd-upload-", dir=spool)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            rec = read_depth(name, max_frames=limits.max_frames, max_bytes=limits.max_pixel_bytes)
        except RealSenseError as e:  # its message names the spool file: say "upload" instead
            message = str(e).replace(name, "upload").replace(os.path.basename(name), "upload")
            if isinstance(e, RecordingTooLarge):
                raise _too_large(message) from e
            raise _invalid(message) from e
    finally:
        os.unlink(name)
    frames = _check_frames(rec.frames, limits)
    return Video(frames, rec.timestamps_us, kind)
