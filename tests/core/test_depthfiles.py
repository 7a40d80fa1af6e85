"""The file reading rules uploads and file sources share."""

import cv2
import numpy as np
import pytest

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


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def test_natural_order_compares_numbers_by_value():
    names = ["f10.png", "f2.png", "f1.png", "g.png", "f02b.png"]
    assert sorted(names, key=natural_key) == ["f1.png", "f2.png", "f02b.png", "f10.png", "g.png"]


@pytest.mark.parametrize("dtype", ["<u2", ">u2"])
def test_depth_layout_accepts_uint16_of_either_byte_order(dtype):
    check_depth_layout(np.dtype(dtype), (3, 4, 5))


@pytest.mark.parametrize(
    ("dtype", "shape", "words"),
    [
        ("u1", (3, 4, 5), "uint16 millimetres, got uint8"),
        ("i2", (3, 4, 5), "uint16 millimetres, got int16"),
        ("u2", (4, 5), "T x H x W"),
        ("u2", (0, 4, 5), "T, H, W >= 1"),
    ],
)
def test_depth_layout_refuses_what_is_not_depth(dtype, shape, words):
    with pytest.raises(DepthFileError, match=words):
        check_depth_layout(np.dtype(dtype), shape)


def test_npz_frames_are_depth_or_the_only_other_array():
    assert npz_frames_key(["fps", "depth", "other"]) == "depth"
    assert npz_frames_key(["timestamps_us", "frames"]) == "frames"
    with pytest.raises(DepthFileError, match=r"needs an array 'depth'.*\['a', 'b'\]"):
        npz_frames_key(["a", "b", "fps"])
    with pytest.raises(DepthFileError, match=r"has \[\]"):
        npz_frames_key(["fps"])


def test_timestamps_are_increasing_int64_microseconds():
    ts = check_timestamps(np.array([0, 33_333, 66_667], np.uint32), 3)
    assert ts.dtype == np.int64 and ts.tolist() == [0, 33_333, 66_667]
    with pytest.raises(DepthFileError, match="must be 3 integers, got float64"):
        check_timestamps(np.array([0.0, 1.0, 2.0]), 3)
    with pytest.raises(DepthFileError, match=r"must be 3 integers, got int64 \(2,\)"):
        check_timestamps(np.array([0, 1]), 3)
    with pytest.raises(DepthFileError, match="fit in int64"):
        check_timestamps(np.array([0, 2**63], np.uint64), 2)
    with pytest.raises(DepthFileError, match="must increase"):
        check_timestamps(np.array([0, 5, 5]), 3)


def test_png_depth_frames_are_16_bit_grayscale():
    image = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    data = png(image)
    assert png_depth_size(data) == (3, 4)
    np.testing.assert_array_equal(decode_png_depth(data), image)
    with pytest.raises(DepthFileError, match="got bit depth 8, color type 0"):
        png_depth_size(png(image.astype(np.uint8)))
    with pytest.raises(DepthFileError, match="not a PNG"):
        png_depth_size(b"GIF89a" + bytes(30))
    with pytest.raises(DepthFileError, match="corrupt or truncated"):
        decode_png_depth(data[:40])


def test_frames_of_one_video_have_one_size():
    check_same_size("b.png", (3, 4), (3, 4))
    with pytest.raises(DepthFileError, match="b.png is 5x3, the first frame 4x3"):
        check_same_size("b.png", (3, 5), (3, 4))
