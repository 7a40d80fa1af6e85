"""Writers of the NTU RGB+D and PKU-MMD layouts: exact text, files and atomicity."""

import cv2
import numpy as np
import pytest

from synth import formats


def bodies(t=3, b=2, seed=0):
    rng = np.random.default_rng(seed)
    joints = rng.uniform(-1, 1, (t, b, 25, 3)).astype(np.float32)
    joints[..., 2] += 3.0
    depth_xy = rng.uniform(0, 512, (t, b, 25, 2)).astype(np.float32)
    color_xy = rng.uniform(0, 1920, (t, b, 25, 2)).astype(np.float32)
    return joints, np.ones((t, b), bool), depth_xy, color_xy


# A joint line of a real NTU RGB+D file (shahroudy/NTURGB-D issue #48).
REAL_JOINT_LINE = (
    "0.2410551 -0.171228 4.294691 283.0309 224.2974 1027.245 581.2726 "
    "-0.2574076 0.123495 0.9539005 -0.09254229 2"
)


def test_net_float_reproduces_real_file_numbers():
    for token in REAL_JOINT_LINE.split()[:-1]:
        assert formats.net_float(np.float32(float(token))) == token


def test_net_float_special_cases():
    assert formats.net_float(-0.0) == "0"
    assert formats.net_float(0.0) == "0"
    assert formats.net_float(1e-5) == "1E-05"
    assert formats.net_float(0.00915651) == "0.00915651"
    assert formats.net_float(12345678.0) == "1.234568E+07"


def test_ntu_name():
    assert formats.ntu_name(1, 2, 3, 2, 13) == "S001C002P003R002A013"
    with pytest.raises(ValueError, match="camera"):
        formats.ntu_name(1, 0, 3, 2, 13)


def test_ntu_skeleton_text_layout():
    joints, tracked, depth_xy, color_xy = bodies(t=3, b=2)
    tracked[1] = [False, False]  # a frame without bodies
    tracked[2] = [False, True]  # a frame with only the second body
    text = formats.format_ntu_skeleton(joints, tracked, depth_xy, color_xy, body_ids=[7, 9])
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    lines = text.split("\r\n")[:-1]
    assert lines[0] == "3"
    assert lines[1] == "2"
    assert lines[2].split()[0] == "7" and len(lines[2].split()) == 10
    assert lines[3] == "25"
    joint = lines[4].split()
    assert len(joint) == 12 and joint[-5:] == ["0", "0", "0", "0", "2"]
    assert float(joint[0]) == pytest.approx(joints[0, 0, 0, 0], rel=1e-6)
    assert float(joint[5]) == pytest.approx(color_xy[0, 0, 0, 0], rel=1e-6)
    second_frame = 1 + 1 + 2 * 27
    assert lines[second_frame] == "0"
    assert lines[second_frame + 1] == "1"
    assert lines[second_frame + 2].split()[0] == "9"
    assert len(lines) == second_frame + 2 + 27


def test_ntu_skeleton_rejects_bad_shapes():
    joints, tracked, depth_xy, color_xy = bodies()
    with pytest.raises(ValueError, match="tracked"):
        formats.format_ntu_skeleton(joints, tracked[:, :1], depth_xy, color_xy)
    with pytest.raises(ValueError, match="color_xy"):
        formats.format_ntu_skeleton(joints, tracked, depth_xy, color_xy[..., :1])
    joints[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        formats.format_ntu_skeleton(joints, tracked, depth_xy, color_xy)


def test_pku_skeleton_text_layout():
    joints, tracked, _, _ = bodies(t=2, b=1)
    text = formats.format_pku_skeleton(joints, tracked)
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 3
    fields = lines[0].split(" ")  # single spaces, no leading or trailing space
    assert len(fields) == 150
    assert fields[0] == f"{joints[0, 0, 0, 0]:f}"
    assert fields[75:] == ["0.000000"] * 75  # absent second body


def test_pku_skeleton_zeros_untracked_bodies():
    joints, tracked, _, _ = bodies(t=2, b=3)
    tracked[1, 0] = False
    rows = [line.split() for line in formats.format_pku_skeleton(joints, tracked).splitlines()]
    assert rows[1][:75] == ["0.000000"] * 75
    assert float(rows[1][75]) == pytest.approx(joints[1, 1, 0, 0], abs=1e-6)


def test_pku_split_text_reads_with_the_released_parser(tmp_path):
    path = tmp_path / "cross-view.txt"
    formats.write_pku_split(path, ["0002-M", "0002-R"], ["0002-L"])
    text = path.read_text()
    assert text == "Training videos: \n0002-M, 0002-R, \nValidataion videos: \n0002-L, \n"
    # google/graph_distillation data_pipeline/pku_mmd.py reads line 2 / line 4 like this:
    lines = text.split("\n")
    assert lines[1].split(", ")[:-1] == ["0002-M", "0002-R"]
    assert lines[3].split(", ")[:-1] == ["0002-L"]
    with pytest.raises(ValueError, match="not a PKU-MMD video name"):
        formats.write_pku_split(path, ["2-L"], [])


def test_depth_pngs_are_exact_16_bit_and_numbered_from_one(tmp_path):
    depth = np.random.default_rng(0).integers(0, 65535, (3, 6, 8), dtype=np.uint16)
    folder = tmp_path / "S001C001P001R001A001"
    formats.write_depth_pngs(folder, depth)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["MDepth-00000001.png", "MDepth-00000002.png", "MDepth-00000003.png"]
    frame = cv2.imread(str(folder / names[1]), cv2.IMREAD_UNCHANGED)
    assert frame.dtype == np.uint16 and np.array_equal(frame, depth[1])
    formats.write_depth_pngs(folder, depth[:1])  # overwriting replaces the whole folder
    assert sorted(p.name for p in folder.iterdir()) == ["MDepth-00000001.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # no temporaries left


def test_avi_is_readable_in_rgb_order(tmp_path):
    rgb = np.zeros((4, 16, 24, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = tmp_path / "v.avi"
    formats.write_avi(path, rgb)
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 4 and frames[0].shape == (16, 24, 3)
    blue, green, red = frames[0].reshape(-1, 3).mean(axis=0)
    assert red > 150 and blue < 50 and green < 50
    assert [p.name for p in tmp_path.iterdir()] == ["v.avi"]


def test_ntu_sample_masks_depth_and_writes_each_modality(tmp_path):
    joints, tracked, depth_xy, color_xy = bodies(t=2, b=1)
    depth = np.full((2, 4, 4), 1500, np.uint16)
    mask = np.zeros((2, 4, 4), bool)
    mask[:, 1:3, 1:3] = True
    rgb = np.zeros((2, 16, 16, 3), np.uint8)
    name = "S002C003P004R001A005"
    formats.write_ntu_sample(tmp_path, name, joints, tracked, depth_xy, color_xy, depth, mask, rgb)
    assert (tmp_path / "nturgb+d_skeletons" / f"{name}.skeleton").is_file()
    assert (tmp_path / "nturgb+d_rgb" / f"{name}_rgb.avi").is_file()
    png = tmp_path / "nturgb+d_depth_masked" / name / "MDepth-00000002.png"
    frame = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(frame, np.where(mask[1], 1500, 0))
    with pytest.raises(ValueError, match="NTU RGB\\+D name"):
        formats.write_ntu_sample(tmp_path, "S1C1", joints, tracked, depth_xy, color_xy)


def test_pku_video_label_file_and_layout(tmp_path):
    joints, tracked, _, _ = bodies(t=5, b=2)
    depth = np.ones((5, 4, 4), np.uint16)
    formats.write_pku_video(tmp_path, "0002-L", joints, tracked, [(3, 0, 2), (51, 3, 4)], depth)
    assert (tmp_path / "label" / "0002-L.txt").read_text() == "3,0,2,2\n51,3,4,2\n"
    assert len((tmp_path / "skeleton" / "0002-L.txt").read_text().splitlines()) == 5
    assert (tmp_path / "depth" / "0002-L" / "Depth-00000005.png").is_file()
    assert not (tmp_path / "rgb").exists()


def test_writers_are_deterministic(tmp_path):
    arrays = bodies(t=2, b=2, seed=3)
    for run in ("a", "b"):
        formats.write_ntu_sample(tmp_path / run, "S001C001P001R001A001", *arrays)
    path = "nturgb+d_skeletons/S001C001P001R001A001.skeleton"
    assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()
