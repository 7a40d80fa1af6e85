import builtins

import numpy as np
import pytest

from core.clip import frame_timestamps_us
from core.realsense import RealSenseError, read_depth, record_depth, to_millimetres


@pytest.fixture
def frames():
    return np.random.default_rng(1).integers(0, 6000, (12, 24, 32)).astype(np.uint16)


def test_record_then_read_is_lossless(tmp_path, frames):
    ts = frame_timestamps_us(len(frames), 30) + 5_000_123  # not starting at zero
    record_depth(tmp_path / "a.db3", frames, ts, fps=30)
    rec = read_depth(tmp_path / "a.db3")
    assert rec.frames.dtype == np.uint16
    assert np.array_equal(rec.frames, frames)
    assert np.array_equal(rec.timestamps_us, ts)
    assert rec.fps == 30
    assert rec.depth_units == 0.001


def test_irregular_timestamps_survive(tmp_path, frames):
    ts = np.cumsum(np.random.default_rng(2).integers(20_000, 70_000, len(frames)))
    record_depth(tmp_path / "a.db3", frames, ts, fps=30)
    assert np.array_equal(read_depth(tmp_path / "a.db3").timestamps_us, ts)


def test_other_depth_units_become_millimetres(tmp_path, frames):
    frames = frames - (frames % 10 == 5)  # no ties at 0.1 mm per unit
    record_depth(tmp_path / "a.db3", frames, frame_timestamps_us(len(frames), 30), 30, 0.0001)
    rec = read_depth(tmp_path / "a.db3")
    assert rec.depth_units == 0.0001
    assert np.array_equal(rec.frames, (frames.astype(np.int64) + 5) // 10)


def test_to_millimetres_saturates_and_keeps_invalid():
    out = to_millimetres(np.array([0, 1, 40000], np.uint16), 0.002)
    assert out.tolist() == [0, 2, 65535]


def test_frame_and_byte_limits_stop_reading(tmp_path, frames):
    record_depth(tmp_path / "a.db3", frames, frame_timestamps_us(len(frames), 30), 30)
    with pytest.raises(RealSenseError, match="more than 5 depth frames"):
        read_depth(tmp_path / "a.db3", max_frames=5)
    with pytest.raises(RealSenseError, match="more than 3 depth frames"):
        read_depth(tmp_path / "a.db3", max_bytes=3 * 24 * 32 * 2 + 1)


def test_garbage_is_not_a_recording(tmp_path):
    path = tmp_path / "x.db3"
    path.write_bytes(b"not sqlite" * 100)
    with pytest.raises(RealSenseError, match="x.db3: not a readable RealSense recording"):
        read_depth(path)


def test_recorder_writes_db3_only(tmp_path, frames):
    with pytest.raises(RealSenseError, match="records .db3 files only"):
        record_depth(tmp_path / "a.bag", frames, frame_timestamps_us(len(frames), 30), 30)


def test_record_checks_its_input(tmp_path, frames):
    with pytest.raises(RealSenseError, match="timestamps must increase"):
        record_depth(tmp_path / "a.db3", frames, np.zeros(len(frames), np.int64), 30)
    with pytest.raises(RealSenseError, match="T timestamps"):
        record_depth(tmp_path / "a.db3", frames, np.arange(3), 30)


def test_missing_pyrealsense2_is_a_clear_error(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_realsense(name, *args, **kwargs):
        if name == "pyrealsense2":
            raise ImportError("No module named 'pyrealsense2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_realsense)
    with pytest.raises(RealSenseError, match="needs pyrealsense2"):
        read_depth(tmp_path / "a.db3")
