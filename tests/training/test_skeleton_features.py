"""JJD / JJV / JLD: dimensions, hand-checked values and a loop-by-loop reference."""

from itertools import combinations

import numpy as np
import pytest

from training.skeleton_features import DIMS, FEATURES, KEPT_JOINTS, jjd, jjv, jld


def kept_joints_zeros(t=1):
    return np.zeros((t, 2, 25, 3), np.float32)


def set_point(joints, body, index, xyz):
    """Sets the `index`-th kept joint (0..10) of `body`."""
    joints[:, body, KEPT_JOINTS[index] - 1] = xyz


def test_dimensions():
    joints = np.random.default_rng(0).normal(size=(4, 2, 25, 3))
    assert {name: f(joints).shape for name, f in FEATURES.items()} == {
        "jjd": (4, 253),  # 22 * 23 / 2 pairs i <= j
        "jjv": (4, 759),
        "jld": (4, 990),  # 2 bodies * 11 joints * C(10, 2) lines
    }
    assert DIMS == {"jjd": 253, "jjv": 759, "jld": 990}
    assert all(f(joints).dtype == np.float32 for f in FEATURES.values())


def test_hand_checked_values():
    joints = kept_joints_zeros()
    set_point(joints, 0, 0, (0, 0, 0))  # spine base
    set_point(joints, 0, 1, (0, 3, 4))  # head
    set_point(joints, 0, 2, (2, 0, 0))  # left elbow
    joints[:, 1] = joints[:, 0]
    joints[:, 1, :, 0] += 1.0  # body 2 = body 1 moved 1 m along x
    d, v, lines = jjd(joints)[0], jjv(joints)[0], jld(joints)[0]
    assert d[0] == 0  # pair (0, 0)
    assert d[1] == pytest.approx(5.0)  # pair (0, 1): |(0, 3, 4)|
    assert d[11] == pytest.approx(1.0)  # pair (0, 11): spine base to body 2's spine base
    assert d[22] == 0  # pair (1, 1) opens the second row
    assert v[3:6].tolist() == [0, -3, -4]  # p0 - p1
    # p0 to the line through p1 and p2: |(p0 - p1) x (p2 - p1)| / |p2 - p1| = 10 / sqrt(29)
    assert lines[0] == pytest.approx(10 / np.sqrt(29))
    # p1 to the "line" through kept joints 3 and 4, both at the origin: the distance to it, 5
    assert lines[45 + 9 + 8] == pytest.approx(5.0)


def reference(joints):
    """The definitions, one loop at a time."""
    points = np.concatenate([joints[:, b, [j - 1 for j in KEPT_JOINTS]] for b in (0, 1)], axis=1)
    out = {"jjd": [], "jjv": [], "jld": []}
    for p in points.astype(np.float64):
        pairs = [(i, j) for i in range(22) for j in range(i, 22)]
        out["jjd"].append([np.sqrt(np.sum((p[i] - p[j]) ** 2)) for i, j in pairs])
        out["jjv"].append(np.concatenate([p[i] - p[j] for i, j in pairs]))
        row = []
        for body in (0, 11):
            for k in range(11):
                others = [j for j in range(11) if j != k]
                for a, b in combinations(others, 2):
                    pa, pb, pk = p[body + a], p[body + b], p[body + k]
                    u = (pb - pa) / np.linalg.norm(pb - pa)
                    w = pk - pa
                    row.append(np.linalg.norm(w - np.dot(w, u) * u))
        out["jld"].append(row)
    return {name: np.array(rows) for name, rows in out.items()}


def test_matches_the_loop_reference():
    joints = np.random.default_rng(1).normal(size=(3, 2, 25, 3)).astype(np.float32)
    expected = reference(joints)
    for name, feature in FEATURES.items():
        np.testing.assert_allclose(feature(joints), expected[name], rtol=1e-5, atol=1e-5)


def test_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\[T, 2, 25, 3\]"):
        jjd(np.zeros((3, 1, 25, 3)))
