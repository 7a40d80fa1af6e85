"""Valid seed inputs of every upload format, the byte-level mutations the fuzzers apply to
them, and the saved corpus of hostile inputs (`corpus/`, with `CASES` saying how each is sent).

Seeds are small (tens of frames of 24x32) so that one case costs milliseconds; they are real
files of each format, built with the same libraries a client would use (numpy, zipfile,
OpenCV, librealsense through `core.realsense.record_depth`).
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.clip import frame_timestamps_us
from tests.helpers.live import png, zip_of
from tests.helpers.tiny_bundle import scene

CORPUS = Path(__file__).parent / "corpus"
SEED_FRAMES = 16  # at 30 fps: 6 frames at the tiny model's 10 fps, one clip
SEED_FPS = 30.0
NPY_MAGIC = b"\x93NUMPY"


def seed_frames(n: int = SEED_FRAMES, height: int = 24, width: int = 32) -> np.ndarray:
    return scene(n, height, width, actions=((4, 12, 0.3),), seed=1)


# --- .npy / .npz -----------------------------------------------------------------------------


def npy(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, frames, allow_pickle=False)
    return buf.getvalue()


def npy_with_header(header: bytes, payload: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    """An .npy file with `header` (the dict text) as given, padded the way numpy pads it."""
    length = "<H" if version[0] == 1 else "<I"
    prefix = len(NPY_MAGIC) + 2 + struct.calcsize(length)
    padded = header + b" " * (-(prefix + len(header) + 1) % 64) + b"\n"
    return NPY_MAGIC + bytes(version) + struct.pack(length, len(padded)) + padded + payload


def npz(compressed: bool = True, **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


# --- zip of PNGs ---------------------------------------------------------------------------


def png_zip(frames: np.ndarray, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    return zip_of({f"{i:04d}.png": png(f) for i, f in enumerate(frames)}, compression)


@dataclass(frozen=True)
class Chunk:
    type: bytes
    data: bytes


def png_chunks(data: bytes) -> list[Chunk]:
    """The chunks of a well-formed PNG, after its 8-byte signature."""
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append(Chunk(data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_from_chunks(chunks: list[Chunk], fix_crc: bool = True) -> bytes:
    """A PNG of `chunks`; with `fix_crc` every CRC is right, so a mutation gets past the CRC
    check and reaches the parser behind it."""
    out = [b"\x89PNG\r\n\x1a\n"]
    for c in chunks:
        crc = zlib.crc32(c.type + c.data) if fix_crc else 0
        out.append(struct.pack(">I", len(c.data)) + c.type + c.data + struct.pack(">I", crc))
    return b"".join(out)


# --- zip structure -------------------------------------------------------------------------

# Fields of the zip records a mutation may overwrite: (name, offset in the record, struct format).
LOCAL_FIELDS = (
    ("version", 4, "<H"), ("flags", 6, "<H"), ("method", 8, "<H"), ("crc", 14, "<I"),
    ("compressed_size", 18, "<I"), ("file_size", 22, "<I"), ("name_length", 26, "<H"),
    ("extra_length", 28, "<H"),
)  # fmt: skip
CENTRAL_FIELDS = (
    ("version", 6, "<H"), ("flags", 8, "<H"), ("method", 10, "<H"), ("crc", 16, "<I"),
    ("compressed_size", 20, "<I"), ("file_size", 24, "<I"), ("name_length", 28, "<H"),
    ("extra_length", 30, "<H"), ("comment_length", 32, "<H"), ("disk", 34, "<H"),
    ("external_attr", 38, "<I"), ("local_offset", 42, "<I"),
)  # fmt: skip
END_FIELDS = (
    ("disk", 4, "<H"), ("cd_disk", 6, "<H"), ("entries_here", 8, "<H"), ("entries", 10, "<H"),
    ("cd_size", 12, "<I"), ("cd_offset", 16, "<I"), ("comment_length", 20, "<H"),
)  # fmt: skip


@dataclass(frozen=True)
class ZipField:
    record: str  # local[i], central[i], end
    name: str
    offset: int  # in the file
    fmt: str


def zip_records(data: bytes) -> list[tuple[str, int]]:
    """`(record, offset)` of the end record and of each member's central and local record."""
    end = data.rindex(b"PK\x05\x06")
    records = [("end", end)]
    (count,) = struct.unpack_from("<H", data, end + 10)
    (pos,) = struct.unpack_from("<I", data, end + 16)
    for i in range(count):
        (local,) = struct.unpack_from("<I", data, pos + 42)
        records += [(f"central[{i}]", pos), (f"local[{i}]", local)]
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        pos += 46 + name_len + extra_len + comment_len
    return records


FIELDS = {"end": END_FIELDS, "central": CENTRAL_FIELDS, "local": LOCAL_FIELDS}
NAME_AT = {"central": (28, 46), "local": (26, 30)}  # offsets of the name's length and of the name


def zip_fields(data: bytes) -> list[ZipField]:
    """Every header field of every record of a well-formed zip, with its place in the file."""
    return [
        ZipField(record, name, pos + offset, fmt)
        for record, pos in zip_records(data)
        for name, offset, fmt in FIELDS[record.split("[")[0]]
    ]


def set_field(data: bytes, f: ZipField, value: int) -> bytes:
    value %= 1 << (8 * struct.calcsize(f.fmt))
    out = bytearray(data)
    struct.pack_into(f.fmt, out, f.offset, value)
    return bytes(out)


def zip_names(data: bytes) -> list[tuple[int, int]]:
    """`(offset, length)` of each member name, in the central and the local records."""
    spans = []
    for record, pos in zip_records(data):
        kind = record.split("[")[0]
        if kind in NAME_AT:
            length_at, name_at = NAME_AT[kind]
            spans.append((pos + name_at, struct.unpack_from("<H", data, pos + length_at)[0]))
    return spans


# --- byte flips ----------------------------------------------------------------------------


def flip(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    """`data` with byte `pos % len(data)` set to `value` for each edit."""
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out)


def record_seed(path: Path, n_frames: int = 40) -> bytes:
    """A valid ROS2 `.db3` RealSense recording of `n_frames` at 30 fps, written by
    librealsense; returns its bytes."""
    from core.realsense import record_depth

    frames = seed_frames(n_frames)
    record_depth(path, frames, frame_timestamps_us(n_frames, SEED_FPS) + 1_000_000, SEED_FPS)
    return path.read_bytes()


# --- the saved corpus ----------------------------------------------------------------------


@dataclass(frozen=True)
class Saved:
    """How a corpus file is uploaded: the multipart file name and the query parameters."""

    filename: str
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    may_succeed: bool = False  # a 200 of bounded cost is a right answer too


# Every file in corpus/ and how it is sent. Known cases of issue 12 and what the fuzzers found;
# each must be answered with a JSON 4xx (or a 200 of bounded cost) by a server that stays up.
CASES: dict[str, Saved] = {
    "npy-negative-dims.npy": Saved("clip.npy", {"fps": 30}, "issue 12: ValueError -> 500"),
    "npy-minus-one-dim.npy": Saved("clip.npy", {"fps": 30}, "issue 12: shape (-1, 1, 1) accepted"),
    "npy-huge-dims.npy": Saved("clip.npy", {"fps": 30}, "issue 12: OverflowError -> 500"),
    "npy-unclosed-header.npy": Saved("clip.npy", {"fps": 30}, "issue 12: TokenError -> 500"),
    "npy-many-minus-signs.npy": Saved("clip.npy", {"fps": 30}, "issue 12: RecursionError"),
    "npz-member-is-a-zip.npz": Saved("clip.npz", {"fps": 30}, "issue 12: AttributeError"),
    "zip-encrypted.zip": Saved("frames.zip", {"fps": 30}, "issue 12: RuntimeError -> 500"),
    "zip-png-corrupt-deflate.zip": Saved("frames.zip", {"fps": 30}, "issue 12: zlib.error"),
    "zip-nul-member-name.zip": Saved("frames.zip", {"fps": 30}, "issue 12: IndexError -> 500"),
    "zip-bzip2-bomb.zip": Saved("frames.zip", {"fps": 30}, "issue 12: 1 GiB inflated"),
    "npy-2-frames.npy": Saved("clip.npy", {"fps": 0.00001}, "issue 12: 100,000 clips", True),
    "db3-flipped-freeze.db3": Saved("clip.db3", {}, "issue 12: librealsense hangs, GIL held"),
    "npz-timestamps-span.npz": Saved("clip.npz", {"fps": 0.001}, "fuzz: 37,500 clips", True),
}


def load(name: str) -> bytes:
    return (CORPUS / name).read_bytes()
