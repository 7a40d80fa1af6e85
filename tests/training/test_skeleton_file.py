"""Skeleton text parsing: round trips with the writers, body selection, edge cases, errors."""

import numpy as np
import pytest

from synth import formats
from training.datasets.errors import DatasetFormatError
from training.datasets.skeleton_file import (
    copy_first_where_absent,
    main_bodies,
    parse_ntu_skeleton,
    parse_pku_skeleton,
    read_ntu_skeleton,
    read_pku_skeleton,
)

# Lines of a real file (shahroudy/NTURGB-D issue #48); the joint line stands for all 25.
JOINT = (
    "0.2410551 -0.171228 4.294691 283.0309 224.2974 1027.245 581.2726 "
    "-0.2574076 0.123495 0.9539005 -0.09254229 2"
)
BODY = "72057594037932358 0 0 0 0 0 0 0.33916 -0.5899565 2"


def body_text(joint=JOINT, n_joints=25):
    return [BODY, "25", *[joint] * n_joints]


def file_text(frames, newline="\r\n"):
    lines = [str(len(frames))]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for body in bodies:
            lines.extend(body)
    return newline.join(lines) + newline


def random_bodies(t, b, seed=0):
    rng = np.random.default_rng(seed)
    joints = rng.uniform(-1, 1, (t, b, 25, 3)).astype(np.float32)
    depth_xy = rng.uniform(0, 512, (t, b, 25, 2)).astype(np.float32)
    color_xy = rng.uniform(0, 1920, (t, b, 25, 2)).astype(np.float32)
    return joints, np.ones((t, b), bool), depth_xy, color_xy


def test_real_looking_file_with_crlf_and_trailing_spaces():
    text = file_text([[body_text()]]).replace("\r\n", " \r\n", 3)
    frames = parse_ntu_skeleton(text, "x.skeleton")
    (body,) = frames[0]
    assert body.body_id == 72057594037932358
    assert body.flags[-3:].tolist() == [0.33916, -0.5899565, 2.0]
    assert body.joints.shape == (25, 11) and body.joint_states.tolist() == [2] * 25
    assert body.xyz[0].tolist() == [0.2410551, -0.171228, 4.294691]
    assert body.joints[0, 3:7].tolist() == [283.0309, 224.2974, 1027.245, 581.2726]


def test_ntu_round_trip_within_file_precision(tmp_path):
    joints, tracked, depth_xy, color_xy = random_bodies(t=4, b=2)
    tracked[1, 1] = False
    path = tmp_path / "S001C001P001R001A001.skeleton"
    formats.write_ntu_skeleton(path, joints, tracked, depth_xy, color_xy, body_ids=[11, 12])
    frames = read_ntu_skeleton(path)
    assert [len(bodies) for bodies in frames] == [2, 1, 2, 2]
    assert [b.body_id for b in frames[1]] == [11]
    for t in (0, 2):
        for b in (0, 1):
            got = frames[t][b].joints
            np.testing.assert_allclose(got[:, :3], joints[t, b], rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(got[:, 3:5], depth_xy[t, b], rtol=1e-6)
            np.testing.assert_allclose(got[:, 5:7], color_xy[t, b], rtol=1e-6)


def test_zero_body_frames_give_zeros():
    frames = parse_ntu_skeleton(file_text([[], [body_text()], []]))
    joints = main_bodies(frames)
    assert joints.shape == (3, 2, 25, 3) and joints.dtype == np.float32
    assert not joints[0].any() and not joints[2].any()
    assert np.array_equal(joints[1, 0], joints[1, 1])  # body 2 copies body 1


def test_empty_file_of_zero_frames():
    assert main_bodies(parse_ntu_skeleton("0\r\n")).shape == (0, 2, 25, 3)


def test_three_bodies_keep_the_two_most_active(tmp_path):
    t = 5
    joints = np.zeros((t, 3, 25, 3), np.float32)
    joints[:, 0] = 1.0  # still
    joints[:, 1] = np.arange(t)[:, None, None] * 0.1  # slow
    joints[:, 2] = np.arange(t)[:, None, None] * 0.5  # fast
    joints[..., 2] += 3.0
    _, tracked, depth_xy, color_xy = random_bodies(t, 3)
    path = tmp_path / "s.skeleton"
    formats.write_ntu_skeleton(path, joints, tracked, depth_xy, color_xy)
    kept = main_bodies(read_ntu_skeleton(path))
    np.testing.assert_allclose(kept[:, 0], joints[:, 2], rtol=1e-6)
    np.testing.assert_allclose(kept[:, 1], joints[:, 1], rtol=1e-6)


def test_copy_first_where_absent():
    joints = np.arange(2 * 2 * 25 * 3, dtype=np.float32).reshape(2, 2, 25, 3)
    joints[1, 1] = 0
    filled = copy_first_where_absent(joints)
    assert np.array_equal(filled[1, 1], joints[1, 0])
    assert np.array_equal(filled[0], joints[0])
    assert not joints[1, 1].any()  # the input is left alone


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("\r\n".join(file_text([[body_text()]]).split("\r\n")[:26]), 27, "end of file"),
        ("2\r\n0\r\n", 3, "unexpected end of file, expected the body count of frame 2"),
        ("x\r\n", 1, "frame count"),
        (file_text([[body_text(joint=JOINT.replace("4.294691", "4.2x"))]]), 5, "not a number"),
        (file_text([[body_text(joint=JOINT + " 7")]]), 5, "12 fields"),
        (file_text([[[BODY, "24", *[JOINT] * 24]]]), 4, "expected 25 joints"),
        (file_text([[]]) + "1\r\n", 3, "after the last frame"),
    ],
)
def test_malformed_files_name_file_and_line(text, line, reason):
    with pytest.raises(DatasetFormatError, match=reason) as error:
        parse_ntu_skeleton(text, "bad.skeleton")
    assert error.value.path == "bad.skeleton" and error.value.line == line
    assert str(error.value).startswith(f"bad.skeleton:{line}: ")


def test_bad_line_is_found_inside_a_joint_block():
    lines = body_text()
    lines[2 + 10] = JOINT.replace("283.0309", "oops")
    with pytest.raises(DatasetFormatError) as error:
        parse_ntu_skeleton(file_text([[lines]]), "b.skeleton")
    assert error.value.line == 2 + 2 + 10 + 1


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.skeleton"):
        read_ntu_skeleton(tmp_path / "nope.skeleton")
    (tmp_path / "bin.skeleton").write_bytes(b"\x00\xff\x00")
    with pytest.raises(DatasetFormatError, match="bin.skeleton"):
        read_ntu_skeleton(tmp_path / "bin.skeleton")


def test_pku_round_trip_and_absent_second_body(tmp_path):
    joints, tracked, _, _ = random_bodies(t=3, b=2)
    tracked[2, 1] = False
    path = tmp_path / "0002-L.txt"
    path.write_text(formats.format_pku_skeleton(joints, tracked))
    got = read_pku_skeleton(path)
    assert got.shape == (3, 2, 25, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got[:2], joints[:2], atol=5e-7)
    np.testing.assert_allclose(got[2, 1], joints[2, 0], atol=5e-7)


def test_pku_parse_tolerates_crlf_and_trailing_blank_lines():
    row = " ".join(["1.5"] * 75 + ["0.000000"] * 75)
    joints = parse_pku_skeleton(f"{row} \r\n{row}\r\n\r\n")
    assert joints.shape == (2, 2, 25, 3) and (joints == 1.5).all()


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("1 " * 150 + "\n" + "1 " * 149 + "\n", 2, "expected 150 numbers"),
        ("1 " * 149 + "a\n", 1, "not a number"),
        ("\n\n", None, "no frames"),
    ],
)
def test_pku_malformed(text, line, reason):
    with pytest.raises(DatasetFormatError, match=reason) as error:
        parse_pku_skeleton(text, "0002-L.txt")
    assert error.value.line == line and "0002-L.txt" in str(error.value)
