import numpy as np
import pytest

from synth.render import (
    NUM_CAPSULES,
    Sensor,
    capsule_ends,
    depth_frames,
    jitter_joints,
    rasterize,
)
from synth.scene import Intrinsics
from synth.skeleton import Body, J, pose, rest

INTR = Intrinsics.from_fov(129, 97, 70.6)  # odd sizes: pixel (48, 64) is on the optical axis
QUIET = Sensor(0.002, 0.0, 0.0, 0.0, 0.0, 0.01)


def _sphere(x, y, z):
    return np.array([[[x, y, z]]], dtype=float)


def test_a_sphere_has_its_analytic_depth_and_area():
    z, r = 2.0, 0.2
    out = rasterize(_sphere(0, 0, z), _sphere(0, 0, z), [r], [r], INTR)
    assert out.z[0, 48, 64] == pytest.approx(z - r, abs=1e-4)
    assert out.capsule[0, 48, 64] == 0
    area = np.isfinite(out.z).sum()
    assert area == pytest.approx(np.pi * (INTR.fx * r / z) ** 2, rel=0.1)
    # Depth grows towards the rim, as on a sphere seen head-on.
    row = out.z[0, 48]
    assert row[64] < row[66] < row[68]


def test_the_nearer_capsule_wins_the_z_buffer():
    a = np.concatenate([_sphere(0, 0, 2.5), _sphere(0.05, 0, 2.0)], 1)
    out = rasterize(a, a, [0.2, 0.1], [0.2, 0.1], INTR)
    assert out.capsule[0, 48, 64] == 1
    assert out.z[0, 48, 64] < 2.0
    # Far from the small sphere, the big one shows.
    assert out.capsule[0, 48, 64 - 5] == 0


def test_capsules_behind_the_camera_are_not_drawn():
    a = _sphere(0, 0, -1.0)
    out = rasterize(a, a, [0.3], [0.3], INTR)
    assert np.isinf(out.z).all() and (out.capsule == -1).all()


def test_capsule_ends_follow_the_joints():
    joints = pose(rest(2), Body())[:, None]  # [T, B=1, 25, 3]
    a, b = capsule_ends(joints)
    assert a.shape == b.shape == (2, NUM_CAPSULES, 3)
    # Some capsule runs from the right shoulder to the right elbow.
    pairs = [(i, j) for i in (J["ShoulderRight"],) for j in (J["ElbowRight"],)]
    i, j = pairs[0]
    assert any(
        np.allclose(a[0, n], joints[0, 0, i]) and np.allclose(b[0, n], joints[0, 0, j])
        for n in range(NUM_CAPSULES)
    )


def test_depth_noise_grows_with_the_square_of_depth():
    rng = np.random.default_rng(0)
    dark = np.zeros((97, 129), dtype=bool)
    near = depth_frames(np.full((4, 97, 129), 1.0, np.float32), dark, QUIET, rng)
    far = depth_frames(np.full((4, 97, 129), 3.0, np.float32), dark, QUIET, rng)
    assert near.dtype == np.uint16
    assert near.mean() == pytest.approx(1000, abs=1) and far.mean() == pytest.approx(3000, abs=2)
    ratio = far.astype(float).std() / near.astype(float).std()
    assert ratio == pytest.approx(9.0, rel=0.15)


def test_invalid_depth_reads_zero():
    rng = np.random.default_rng(0)
    z = np.full((1, 97, 129), 2.0, np.float32)
    z[0, :, :20] = 6.0  # beyond range
    z[0, :, 20:30] = 0.3  # too near
    z[0, :, 30:40] = np.inf  # no return at all
    dark = np.zeros((97, 129), dtype=bool)
    dark[:, 40:50] = True
    sensor = Sensor(0.002, 1.0, 0.0, 0.0, 1.0, 0.01)
    d = depth_frames(z, dark, sensor, rng)[0]
    assert (d[:, :50] == 0).all()
    assert (d[:, 52:] > 0).all()
    # The step from 2 m to nothing is an edge: with certain edge dropout, the rim is invalid.
    z2 = np.full((1, 97, 129), 2.0, np.float32)
    z2[0, 40:60, 60:80] = 1.0
    d2 = depth_frames(z2, np.zeros((97, 129), dtype=bool), sensor, rng)[0]
    assert (d2[40:60, 60] == 0).all() and (d2[40:60, 59] == 0).all() and d2[50, 70] > 0


def test_joint_jitter_has_the_sensor_scale_and_grows_when_occluded():
    rng = np.random.default_rng(0)
    joints = np.zeros((4000, 1, 25, 3))
    free = np.zeros((4000, 1, 25), dtype=bool)
    err = jitter_joints(joints, free, QUIET, rng)
    assert err[..., J["SpineMid"], :].std() == pytest.approx(QUIET.joint_jitter, rel=0.1)
    assert err[..., J["HandTipLeft"], :].std() > 2 * err[..., J["SpineMid"], :].std()
    hidden = jitter_joints(joints, ~free, QUIET, rng)
    assert hidden[..., J["SpineMid"], :].std() > 2 * err[..., J["SpineMid"], :].std()
