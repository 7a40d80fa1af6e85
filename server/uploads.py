"""Uploaded depth videos -> uint16 frames + timestamps, in memory, with limits.

Formats are told by their first bytes, not their names:

| format | magic | frames | timing |
|---|---|---|---|
| `.npy` | `\\x93NUMPY` | uint16 `[T, H, W]` | `fps` query |
| `.npz` | zip of `.npy` | `depth` (or the only array) | `timestamps_us`, `fps` or `fps` query |
| `.zip` | zip of `.png` | 16-bit gray PNGs, natural name order | `fps` query |
| `.db3` | `SQLite format 3` | the z16 depth stream | the recording's timestamps |
| `.bag` | `#ROSBAG V2.0` | idem | idem |

Every byte is hostile until checked, and `decode` fails closed: whatever goes wrong while
parsing an upload becomes an `UploadError` (a 4xx), never another exception. Limits hold
before anything is allocated or inflated: `.npy` headers are parsed here, not by numpy (at
most `NPY_MAX_HEADER` bytes, a strict grammar, every dimension checked), a zip's directory
entries are counted before `zipfile` parses them, members' names, encryption, declared sizes
and count are checked from the directory, and each member is
inflated (stored, deflate, bzip2, lzma) with its output capped at its declared size, so a
member that lies is stopped at the cap, not after. PNG headers are checked (size, bit depth)
before any pixel is decoded. RealSense recordings are read by librealsense in a child process
(`server.recording_worker`), never in the server's own.
"""

from __future__ import annotations

import bz2
import ctypes
import io
import logging
import lzma
import math
import re
import struct
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass

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
    png_depth_size,
)
from core.limits import MAX_SIDE, fps_message, valid_fps
from server.recording_worker import RecordingDecoder, RecordingRejected

log = logging.getLogger("gd.server.uploads")

NPY_MAX_HEADER = 4096  # numpy writes ~128 bytes; a long header is only there to hurt the parser
MAX_NAME = 255  # zip member names
MAX_DIM_DIGITS = 18  # a dimension with more digits is over any limit (and over int64)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return None


_LIBC = _libc()


def release_freed_memory() -> None:
    """Hand the memory an upload freed back to the system. glibc keeps freed heap pages for
    reuse, so without this a server's memory stays at the peak of its largest upload (the
    soak measured it: docs/security.md)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class UploadError(ValueError):
    """An upload the server cannot use; `status` is the HTTP status, `code` a short name."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _invalid(message: str) -> UploadError:
    return UploadError(422, "invalid_video", message)


def _too_large(message: str) -> UploadError:
    return UploadError(413, "too_large", message)


def _unsupported(message: str) -> UploadError:
    return UploadError(415, "unsupported_media_type", message)


@dataclass(frozen=True)
class Limits:
    max_frames: int
    max_pixel_bytes: int  # decoded uint16 frames, all together
    recordings: RecordingDecoder  # where .bag / .db3 uploads are read


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
    raise _unsupported(
        "not a supported depth video: send .npy or .npz (uint16 T x H x W), a .zip of 16-bit "
        "PNG frames, or a RealSense .bag / .db3 recording"
    )


def decode(data: bytes, fps: float | None, limits: Limits) -> Video:
    """Decode an upload's bytes (blocking: run it off the event loop); raises `UploadError`."""
    try:
        return _decode(data, fps, limits)
    except UploadError:
        raise
    except RecordingRejected as e:
        raise UploadError(e.status, e.code, e.message) from e
    except MemoryError as e:
        raise _too_large("the upload needs more memory to decode than the server has") from e
    except Exception as e:  # a parser's fault on hostile bytes is the upload's, not the server's
        log.warning("upload refused on an unexpected decoder error", exc_info=True)
        raise _invalid(f"the upload cannot be decoded ({type(e).__name__})") from e


def _decode(data: bytes, fps: float | None, limits: Limits) -> Video:
    kind = sniff(data)
    if kind == "npy":
        frames = _load_frames(data, "the .npy upload", limits)
        return Video(frames, _timestamps(len(frames), fps, kind), kind)
    if kind == "zip":
        return _decode_zip(data, fps, limits)
    frames, timestamps = limits.recordings.decode(
        data, kind, limits.max_frames, limits.max_pixel_bytes
    )
    return Video(_check_frames(frames, limits), timestamps, kind)


def _timestamps(n: int, fps: float | None, kind: str) -> np.ndarray:
    if fps is None:
        raise UploadError(422, "fps_required", f"a .{kind} upload needs the fps query parameter")
    return frame_timestamps_us(n, check_fps(fps))


def check_fps(fps: float) -> float:
    """A usable frame rate (`core.limits.valid_fps`)."""
    if not valid_fps(fps):
        raise UploadError(422, "invalid_fps", fps_message(fps))
    return fps


def _check_layout(dtype: np.dtype, shape: tuple[int, ...], limits: Limits) -> None:
    try:
        check_depth_layout(dtype, shape)
    except DepthFileError as e:
        raise _invalid(str(e)) from None
    t, h, w = shape  # check_depth_layout accepted it: T x H x W
    _check_size(t, h, w, limits)


def _check_frames(frames: np.ndarray, limits: Limits) -> np.ndarray:
    _check_layout(frames.dtype, frames.shape, limits)
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


# --- .npy ------------------------------------------------------------------------------------

# The header is a Python dict literal; only numpy's own flat form is accepted. Every repeat
# is anchored by a mandatory separator, so matching is linear in the (capped) header length.
_NPY_VALUE = r"'[^'\\]{0,64}'|True|False|\(\s*(?:-?\d+\s*,\s*)*(?:-?\d+\s*)?\)"
_NPY_ENTRY = rf"'(\w{{1,16}})'\s*:\s*({_NPY_VALUE})"
_NPY_DICT = re.compile(rf"\{{\s*{_NPY_ENTRY}\s*,\s*{_NPY_ENTRY}\s*,\s*{_NPY_ENTRY}\s*,?\s*\}}\s*")
_NPY_DESCR = re.compile(r"[<>|=]?[iuf][1248]")


@dataclass(frozen=True)
class NpyHeader:
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool
    offset: int  # where the data starts


def npy_header(data: bytes, name: str) -> NpyHeader:
    """Parse an `.npy` header without numpy's parser (which evaluates it with `ast`).

    Refuses (422) anything but a plain integer or float array, and negative dimensions (413
    for dimensions over any limit); zero dimensions and sizes are the caller's to check.
    """
    if not data.startswith(b"\x93NUMPY") or len(data) < 10:
        raise _invalid(f"{name}: not a .npy array")
    major = data[6]
    if major not in (1, 2, 3):
        raise _invalid(f"{name}: unsupported .npy format version {major}")
    size_bytes = 2 if major == 1 else 4
    length = int.from_bytes(data[8 : 8 + size_bytes], "little")
    start = 8 + size_bytes
    if length > NPY_MAX_HEADER:
        raise _invalid(f"{name}: a .npy header of {length} bytes; at most {NPY_MAX_HEADER}")
    if len(data) < start + length:
        raise _invalid(f"{name}: the .npy header is truncated")
    text = bytes(data[start : start + length]).decode("latin-1")
    match = _NPY_DICT.fullmatch(text)
    if match is None:
        raise _invalid(f"{name}: not a valid .npy header (a plain numeric array is needed)")
    fields = dict(zip(match.groups()[::2], match.groups()[1::2], strict=True))
    if sorted(fields) != ["descr", "fortran_order", "shape"]:
        raise _invalid(f"{name}: the .npy header needs descr, fortran_order and shape")
    descr, fortran = fields["descr"].strip("'"), fields["fortran_order"]
    if not _NPY_DESCR.fullmatch(descr) or fortran not in ("True", "False"):
        raise _invalid(f"{name}: only plain integer or float arrays are accepted, got {descr!r}")
    return NpyHeader(
        np.dtype(descr), _shape(fields["shape"], name), fortran == "True", start + length
    )


def _shape(text: str, name: str) -> tuple[int, ...]:
    if not text.startswith("("):
        raise _invalid(f"{name}: the .npy shape must be a tuple, got {text[:40]}")
    dims = re.findall(r"-?\d+", text)
    if any(len(d.lstrip("-")) > MAX_DIM_DIGITS for d in dims):
        raise _too_large(f"{name}: a dimension of the .npy shape is over any limit")
    shape = tuple(int(d) for d in dims)
    if any(d < 0 for d in shape):
        raise _invalid(f"{name}: negative dimension in the .npy shape {shape}")
    return shape


def _npy_data(data: bytes, header: NpyHeader, name: str) -> np.ndarray:
    """The array a checked header describes, read without a copy (dimensions checked)."""
    count = math.prod(header.shape)
    available = len(data) - header.offset
    if available < count * header.dtype.itemsize:
        raise _invalid(f"{name}: .npy data is truncated: {available} bytes for {header.shape}")
    flat = np.frombuffer(data, dtype=header.dtype, count=count, offset=header.offset)
    return flat.reshape(header.shape, order="F" if header.fortran else "C")


def _load_frames(data: bytes, name: str, limits: Limits) -> np.ndarray:
    header = npy_header(data, name)
    _check_layout(header.dtype, header.shape, limits)  # before reading any data
    return _check_frames(_npy_data(data, header, name), limits)


# --- zip ------------------------------------------------------------------------------------


def _decode_zip(data: bytes, fps: float | None, limits: Limits) -> Video:
    # zipfile parses the whole directory up front, ~20 µs and ~300 bytes per entry: 45 MiB of
    # 1-byte-named entries would cost it 20 s and 350 MiB. Each entry starts with this
    # signature, so counting it bounds the entries before zipfile sees any (the slack is for
    # chance occurrences in members' data).
    entries = data.count(b"PK\x01\x02")
    if entries > limits.max_frames + 2 + 64:
        raise _too_large(
            f"the zip's directory has up to {entries} files; the limit is {limits.max_frames}"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError, struct.error) as e:
        raise _invalid(f"not a valid zip file: {e}") from e
    except NotImplementedError as e:  # a zip format version zipfile does not know
        raise _unsupported(f"unsupported zip file: {e}") from e
    for i, info in enumerate(infos):  # before any use of a name
        _member_name(info, i)
    members = [m for m in infos if not m.is_dir()]
    if len(members) > limits.max_frames + 2:  # frames plus the .npz extras at most
        raise _too_large(f"the zip holds {len(members)} files; the limit is {limits.max_frames}")
    declared = sum(m.file_size for m in members)
    if declared > limits.max_pixel_bytes + (1 << 20):
        raise _too_large(
            f"the zip inflates to {declared} bytes, over the limit of {limits.max_pixel_bytes}"
        )
    names = [m.filename for m in members]
    if members and all(n.endswith(".npy") for n in names):
        return _decode_npz(data, members, fps, limits)
    not_png = [n for n in names if not n.lower().endswith(".png")]
    if not_png or not members:
        raise _unsupported(
            "a zip must hold only .png frames (or be an .npz); found "
            + (", ".join(_printable(n) for n in not_png[:5]) if not_png else "no files")
        )
    frames = _read_pngs(data, sorted(members, key=lambda m: natural_key(m.filename)), limits)
    return Video(frames, _timestamps(len(frames), fps, "zip"), "png-zip")


def _member_name(info: zipfile.ZipInfo, index: int) -> str:
    """The member's name, refused (422) unless 1 to MAX_NAME printable characters."""
    name = info.orig_filename  # zipfile cuts `filename` at a NUL
    if not 0 < len(name) <= MAX_NAME or any(unicodedata.category(c) == "Cc" for c in name):
        raise _invalid(
            f"zip member {index + 1} has the name {_printable(name)!r}: names must be 1 to "
            f"{MAX_NAME} printable characters"
        )
    return name


def _printable(name: str, limit: int = 80) -> str:
    """A name safe to put in a message: control characters replaced, length bounded."""
    clean = "".join("?" if unicodedata.category(c) == "Cc" else c for c in name[:limit])
    return clean + ("..." if len(name) > limit else "")


def _read(data: bytes, member: zipfile.ZipInfo) -> bytes:
    """A member's bytes, inflated with the output capped at its declared size."""
    name = _printable(member.filename)
    if member.flag_bits & 0x1:
        raise _unsupported(f"{name}: encrypted zip members are not supported")
    if member.compress_type not in _INFLATE:
        raise _unsupported(
            f"{name}: unsupported zip compression method {member.compress_type} (use stored, "
            "deflate, bzip2 or lzma)"
        )
    raw = _raw_member(data, member, name)
    try:
        out, complete = _INFLATE[member.compress_type](raw, member.file_size + 1)
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError) as e:
        raise _invalid(f"{name}: corrupt zip member ({e})") from e
    if len(out) > member.file_size:
        raise _too_large(f"{name} inflates past its declared {member.file_size} bytes")
    if not complete or len(out) != member.file_size or zlib.crc32(out) != member.CRC:
        raise _invalid(f"{name}: corrupt zip member (size or CRC do not match)")
    return out


def _raw_member(data: bytes, member: zipfile.ZipInfo, name: str) -> memoryview:
    """The compressed bytes of a member: after its local header, `compress_size` long."""
    at = member.header_offset
    header = bytes(data[at : at + 30])
    if len(header) != 30 or not header.startswith(b"PK\x03\x04"):
        raise _invalid(f"{name}: corrupt zip member (bad local header)")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = at + 30 + name_len + extra_len
    raw = memoryview(data)[start : start + member.compress_size]
    if len(raw) != member.compress_size:
        raise _invalid(f"{name}: the zip member is truncated")
    return raw


def _stored(raw: memoryview, cap: int) -> tuple[bytes, bool]:
    return bytes(raw[:cap]), True


def _deflated(raw: memoryview, cap: int) -> tuple[bytes, bool]:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # zip holds raw deflate streams
    return inflater.decompress(raw, cap), inflater.eof


def _bzip2(raw: memoryview, cap: int) -> tuple[bytes, bool]:
    inflater = bz2.BZ2Decompressor()
    return inflater.decompress(raw, cap), inflater.eof


def _lzma(raw: memoryview, cap: int) -> tuple[bytes, bool]:
    # zip's lzma: 2 bytes of version, 2 of properties size, then LZMA1 properties
    # (one byte of lc/lp/pb, four of dictionary size) and the raw stream.
    if len(raw) < 9:
        raise ValueError("lzma header is truncated")
    (size,) = struct.unpack("<H", raw[2:4])
    props = bytes(raw[4 : 4 + size])
    if size != 5 or props[0] >= 9 * 5 * 5:
        raise ValueError("bad lzma properties")
    lc, lp, pb = props[0] % 9, props[0] // 9 % 5, props[0] // 45
    lzma1 = {"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb}
    lzma1["dict_size"] = int.from_bytes(props[1:5], "little")
    inflater = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma1])
    # The stream may lack an end marker: size and CRC (checked by the caller) tell.
    return inflater.decompress(raw[4 + size :], cap), True


_INFLATE = {
    zipfile.ZIP_STORED: _stored,
    zipfile.ZIP_DEFLATED: _deflated,
    zipfile.ZIP_BZIP2: _bzip2,
    zipfile.ZIP_LZMA: _lzma,
}


def _read_pngs(data: bytes, members: list, limits: Limits) -> np.ndarray:
    frames = None
    for i, member in enumerate(members):
        png = _read(data, member)
        name = _printable(member.filename)
        try:
            size = png_depth_size(png)
            if frames is None:
                _check_size(len(members), *size, limits)  # the whole video, before decoding any
                frames = np.empty((len(members), *size), np.uint16)
            check_same_size(name, size, frames.shape[1:])
            frames[i] = decode_png_depth(png, size)
        except DepthFileError as e:
            raise _invalid(f"{name}: {e}") from None
    assert frames is not None  # the caller refuses a zip without members
    return frames


# --- .npz -----------------------------------------------------------------------------------


def _decode_npz(data: bytes, members: list, fps: float | None, limits: Limits) -> Video:
    arrays = {m.filename[:-4]: m for m in members}
    try:
        key = npz_frames_key(arrays)
    except DepthFileError as e:
        raise _invalid(str(e)) from None
    name = _printable(arrays[key].filename)
    frames = _load_frames(_read(data, arrays[key]), name, limits)
    if "timestamps_us" in arrays:
        ts = _load_small(data, arrays["timestamps_us"], len(frames))
        try:
            return Video(frames, check_timestamps(ts, len(frames)), "npz")
        except DepthFileError as e:
            raise _invalid(str(e)) from None
    if "fps" in arrays and fps is None:
        value = _load_small(data, arrays["fps"], 1)
        if value.size != 1:
            raise _invalid(f"fps in the .npz must be one number, got shape {value.shape}")
        fps = check_fps(float(value.reshape(())))
    return Video(frames, _timestamps(len(frames), fps, "npz"), "npz")


def _load_small(data: bytes, member: zipfile.ZipInfo, max_items: int) -> np.ndarray:
    """A number or a vector of at most `max_items`: the .npz's timing arrays."""
    name = _printable(member.filename)
    if member.file_size > NPY_MAX_HEADER + 16 + 8 * max_items:  # before inflating it
        raise _invalid(f"{name}: {member.file_size} bytes for at most {max_items} numbers")
    raw = _read(data, member)
    header = npy_header(raw, name)
    if math.prod(header.shape) > max_items:
        raise _invalid(f"{name}: shape {header.shape}, at most {max_items} numbers")
    return _npy_data(raw, header, name)
