"""Decoding uploads (server.uploads) without a server: formats, limits, bombs."""

import io

import cv2
import numpy as np
import pytest

from core.clip import frame_timestamps_us
from core.realsense import record_depth
from server.recording_worker import RecordingDecoder
from server.uploads import Limits, UploadError, decode, sniff
from tests.helpers.live import npy_bytes, npz_of, png, zip_of


def recordings(spool_dir):
    return RecordingDecoder(spool_dir, timeout_s=60, memory_bytes=2 << 30, max_processes=1)


@pytest.fixture
def limits(tmp_path):
    return Limits(100, 100 * 48 * 64 * 2, recordings(tmp_path))


@pytest.fixture
def frames():
    return np.random.default_rng(0).integers(0, 5000, (20, 48, 64)).astype(np.uint16)


def error(data, fps, limits):
    with pytest.raises(UploadError) as e:
        decode(data, fps, limits)
    return e.value


def test_npy(frames, limits):
    video = decode(npy_bytes(frames), 30, limits)
    assert np.array_equal(video.frames, frames) and video.format == "npy"
    assert np.array_equal(video.timestamps_us, frame_timestamps_us(20, 30))


def test_big_endian_and_fortran_npy_are_read_right(frames, limits):
    for variant in (frames.astype(">u2"), np.asfortranarray(frames)):
        assert np.array_equal(decode(npy_bytes(variant), 30, limits).frames, frames)


def test_npy_errors(frames, limits):
    e = error(npy_bytes(frames.astype(np.float32)), 30, limits)
    assert (e.status, e.code) == (422, "invalid_video") and "uint16" in e.message
    e = error(npy_bytes(frames[0]), 30, limits)
    assert e.status == 422 and "T x H x W" in e.message
    e = error(npy_bytes(frames)[:-100], 30, limits)
    assert e.status == 422 and "truncated" in e.message
    e = error(npy_bytes(frames), None, limits)
    assert (e.status, e.code) == (422, "fps_required")
    e = error(npy_bytes(frames), 0, limits)
    assert (e.status, e.code) == (422, "invalid_fps")


def test_npy_over_the_frame_limit_is_413_before_reading(limits):
    # header claims 10^6 frames; the data is not even there
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<u2", "fortran_order": False, "shape": (10**6, 48, 64)}
    )
    data = b"\x93NUMPY\x01\x00" + header.getvalue()[8:]
    e = error(data, 30, limits)
    assert (e.status, e.code) == (413, "too_large") and "1000000 frames" in e.message


def test_npz_with_fps_or_timestamps(frames, limits):
    ts = np.cumsum(np.full(20, 40_000))
    video = decode(npz_of(depth=frames, timestamps_us=ts), None, limits)
    assert np.array_equal(video.frames, frames) and np.array_equal(video.timestamps_us, ts)
    video = decode(npz_of(depth=frames, fps=np.array(15.0)), None, limits)
    assert np.array_equal(video.timestamps_us, frame_timestamps_us(20, 15))
    video = decode(npz_of(anything=frames), 30, limits)  # a single array of any name
    assert np.array_equal(video.frames, frames)


def test_npz_errors(frames, limits):
    e = error(npz_of(a=frames, b=frames), 30, limits)
    assert e.status == 422 and "'depth'" in e.message
    e = error(npz_of(depth=frames, timestamps_us=np.arange(5)), None, limits)
    assert e.status == 422 and "timestamps_us must be 20 integers" in e.message
    e = error(npz_of(depth=frames, timestamps_us=np.zeros(20, np.int64)), None, limits)
    assert e.status == 422 and "timestamps_us must increase" in e.message  # as a client says


def test_zip_of_pngs_in_natural_order(frames, limits):
    members = {f"f{i}.png": png(f) for i, f in enumerate(frames)}  # f10 after f9, not after f1
    video = decode(zip_of(dict(reversed(members.items()))), 30, limits)
    assert np.array_equal(video.frames, frames) and video.format == "png-zip"


def test_zip_errors(frames, limits):
    e = error(zip_of({"a.png": png(frames[0]), "notes.txt": b"hi"}), 30, limits)
    assert e.status == 415 and "notes.txt" in e.message
    rgb = cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))[1].tobytes()
    e = error(zip_of({"a.png": png(frames[0]), "b.png": rgb}), 30, limits)
    assert e.status == 422 and "b.png: PNG must be 16-bit grayscale" in e.message
    e = error(zip_of({"a.png": png(frames[0]), "b.png": png(frames[1, :10])}), 30, limits)
    assert e.status == 422 and "one size" in e.message
    good = png(frames[0])
    e = error(zip_of({"a.png": good, "b.png": good[: len(good) // 2]}), 30, limits)
    assert e.status == 422 and "b.png: PNG is corrupt or truncated" in e.message
    e = error(zip_of({"a.png": b"not a png at all, really"}), 30, limits)
    assert e.status == 422 and "not a PNG" in e.message
    e = error(zip_of({"a.png": good})[:-30], 30, limits)
    assert e.status == 422 and "zip" in e.message


@pytest.mark.integration  # a decoder process
def test_zip_bomb_is_refused_from_the_directory(limits):
    bomb = zip_of({"a.png": b"\0" * (50 << 20)})  # 50 MiB of zeros, ~50 kB compressed
    assert len(bomb) < 100_000
    e = error(bomb, 30, limits)
    assert (e.status, e.code) == (413, "too_large") and "inflates to 52428800" in e.message


def test_zip_with_too_many_frames(frames, limits):
    one = png(frames[0])
    e = error(zip_of({f"{i}.png": one for i in range(150)}), 30, limits)
    assert e.status == 413 and "150 files" in e.message


def test_png_bomb_is_refused_from_its_header(limits):
    huge = png(np.zeros((2000, 2000), np.uint16))  # compresses to almost nothing
    e = error(zip_of({f"{i}.png": huge for i in range(10)}), 30, limits)
    assert e.status == 413 and "10 frames of 2000x2000" in e.message


@pytest.mark.integration  # a decoder process
def test_db3_recording(frames, limits, tmp_path):
    ts = 7_000_000 + np.cumsum(np.random.default_rng(1).integers(30_000, 36_000, 20))
    record_depth(tmp_path / "r.db3", frames, ts, fps=30)
    video = decode((tmp_path / "r.db3").read_bytes(), None, limits)
    assert np.array_equal(video.frames, frames) and np.array_equal(video.timestamps_us, ts)
    assert video.format == "db3"
    spooled = [p for p in tmp_path.iterdir() if p.name.startswith("gd-upload-")]
    assert spooled == []  # the spool file is gone


@pytest.mark.integration  # decoder processes
def test_db3_over_the_limit_and_corrupt(frames, tmp_path):
    record_depth(tmp_path / "r.db3", frames, frame_timestamps_us(20, 30), fps=30)
    small = Limits(5, 1 << 30, recordings(tmp_path))
    e = error((tmp_path / "r.db3").read_bytes(), None, small)
    assert e.status == 413 and "more than 5 depth frames" in e.message
    assert "gd-upload-" not in e.message  # the spool file's name is not shown
    e = error(b"SQLite format 3\x00" + b"\0" * 500, None, small)
    assert e.status == 422 and "not a readable RealSense recording" in e.message
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("gd-upload-")]


def test_unknown_formats_are_415(limits):
    for data in (b"GIF89a....", b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 50):
        e = error(data, 30, limits)
        assert (e.status, e.code) == (415, "unsupported_media_type")


def test_sniff():
    assert sniff(b"#ROSBAG V2.0\n...") == "bag"
    assert sniff(b"PK\x03\x04...") == "zip"
