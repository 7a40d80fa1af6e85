"""Depth PNG folders and videos: round trips and errors that name the file."""

import cv2
import numpy as np
import pytest

from synth.formats import write_avi, write_depth_pngs
from training.datasets.errors import DatasetFormatError
from training.datasets.media import depth_frame_paths, read_depth_folder, read_video


def test_depth_round_trip_is_exact(tmp_path):
    depth = np.random.default_rng(1).integers(0, 8000, (3, 5, 7), dtype=np.uint16)
    write_depth_pngs(tmp_path / "d", depth, "Depth-{:08d}.png")
    assert np.array_equal(read_depth_folder(tmp_path / "d"), depth)


def test_frames_are_ordered_by_number_not_by_name(tmp_path):
    for number in (9, 10, 11):
        frame = np.full((2, 2), number, np.uint16)
        cv2.imwrite(str(tmp_path / f"MDepth-{number}.png"), frame)
    assert read_depth_folder(tmp_path)[:, 0, 0].tolist() == [9, 10, 11]


def test_depth_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        depth_frame_paths(tmp_path / "missing")
    with pytest.raises(DatasetFormatError, match="no PNG"):
        depth_frame_paths(tmp_path)
    for number in (1, 2, 4):
        cv2.imwrite(str(tmp_path / f"Depth-{number:08d}.png"), np.zeros((2, 2), np.uint16))
    with pytest.raises(DatasetFormatError, match="frame 3 missing"):
        depth_frame_paths(tmp_path)


def test_corrupt_and_8_bit_pngs_are_named(tmp_path):
    cv2.imwrite(str(tmp_path / "Depth-00000001.png"), np.zeros((2, 2), np.uint8))
    with pytest.raises(DatasetFormatError, match="Depth-00000001.png.*16-bit"):
        read_depth_folder(tmp_path)
    (tmp_path / "Depth-00000001.png").write_bytes(b"not a png")
    with pytest.raises(DatasetFormatError, match="Depth-00000001.png.*decode"):
        read_depth_folder(tmp_path)


def test_video_round_trip(tmp_path):
    rgb = np.zeros((5, 16, 16, 3), np.uint8)
    rgb[:, :8] = (30, 120, 220)
    write_avi(tmp_path / "v.avi", rgb)
    frames = read_video(tmp_path / "v.avi")
    assert frames.shape == rgb.shape and frames.dtype == np.uint8
    assert np.abs(frames.astype(int) - rgb).mean() < 8  # MJPG is lossy


def test_video_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.avi"):
        read_video(tmp_path / "none.avi")
    (tmp_path / "bad.avi").write_bytes(b"\x00" * 100)
    with pytest.raises(DatasetFormatError, match="bad.avi"):
        read_video(tmp_path / "bad.avi")
