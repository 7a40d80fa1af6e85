import numpy as np
import pytest

from synth.skeleton import JOINTS, PARENTS, Body, J, mirror, pose, rest, two_bone

# Kinect v2 joint order, as in the SDK's JointType enumeration.
KINECT_V2 = [
    "SpineBase",
    "SpineMid",
    "Neck",
    "Head",
    "ShoulderLeft",
    "ElbowLeft",
    "WristLeft",
    "HandLeft",
    "ShoulderRight",
    "ElbowRight",
    "WristRight",
    "HandRight",
    "HipLeft",
    "KneeLeft",
    "AnkleLeft",
    "FootLeft",
    "HipRight",
    "KneeRight",
    "AnkleRight",
    "FootRight",
    "SpineShoulder",
    "HandTipLeft",
    "ThumbLeft",
    "HandTipRight",
    "ThumbRight",
]


def test_joint_order_is_kinect_v2():
    assert list(JOINTS) == KINECT_V2
    assert PARENTS[J["HandTipRight"]] == J["HandRight"]
    assert PARENTS[J["Neck"]] == J["SpineShoulder"]


def test_two_bone_reaches_reachable_targets_with_exact_lengths():
    rng = np.random.default_rng(0)
    root = np.zeros((50, 3))
    target = rng.normal(size=(50, 3))
    target *= (rng.uniform(0.1, 0.55, 50) / np.linalg.norm(target, axis=1))[:, None]
    pole = rng.normal(size=(50, 3))
    mid, end = two_bone(root, target, pole, 0.3, 0.28)
    np.testing.assert_allclose(end, target, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(mid - root, axis=1), 0.3, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(end - mid, axis=1), 0.28, atol=1e-9)
    # The joint bends towards the pole (both taken across the limb's axis).
    u = target / np.linalg.norm(target, axis=1, keepdims=True)
    across = lambda v: v - np.sum(v * u, axis=1, keepdims=True) * u  # noqa: E731
    assert (np.sum(across(mid) * across(pole), axis=1) > 0).all()


def test_two_bone_stretches_towards_unreachable_targets():
    mid, end = two_bone(np.zeros((1, 3)), np.array([[0, 0, 5.0]]), np.array([[0, 1.0, 0]]), 1, 1)
    np.testing.assert_allclose(end, [[0, 0, 2.0]], atol=1e-5)
    assert abs(mid[0, 1]) < 0.01  # nearly straight


def test_mirror_is_an_involution_and_rest_is_symmetric():
    c = rest(4)
    c["wrist_r"][:] = (-0.2, 0.1, 0.3)
    c["spine"][:] = (0.1, 0.2, 0.3)
    c["yaw"][:] = 0.5
    before = {k: v.copy() for k, v in c.items()}
    mirror(c)
    assert np.allclose(c["wrist_l"], (0.2, 0.1, 0.3))
    assert np.allclose(c["spine"], (0.1, -0.2, -0.3))
    mirror(c)
    for k in c:
        np.testing.assert_array_equal(c[k], before[k])
    joints = pose(rest(1), Body())[0]
    for side in ("Shoulder", "Elbow", "Wrist", "Hand", "Hip", "Knee", "Ankle", "Foot", "Thumb"):
        left, right = joints[J[side + "Left"]], joints[J[side + "Right"]]
        np.testing.assert_allclose(left * [-1, 1, 1], right, atol=1e-9)


@pytest.mark.parametrize("height", [1.5, 1.7, 1.95])
def test_rest_pose_is_an_upright_person_of_the_given_height(height):
    joints = pose(rest(1), Body(height=height))[0]
    assert joints[J["Head"], 1] == pytest.approx(height * 0.935, rel=0.03)  # head centre
    assert joints[:, 1].argmax() == J["Head"]
    assert joints[[J["FootLeft"], J["FootRight"]], 1].max() < 0.05 * height
    assert joints[J["HandRight"], 0] < 0 < joints[J["HandLeft"], 0]  # x is the person's left
    thigh = np.linalg.norm(joints[J["KneeLeft"]] - joints[J["HipLeft"]])
    assert thigh == pytest.approx(0.245 * height, rel=1e-6)


def test_bone_lengths_stay_fixed_while_moving():
    n = 30
    c = rest(n)
    c["wrist_r"][:] = np.linspace((-0.12, -0.31, 0.03), (-0.03, 0.03, 0.12), n)
    c["spine"][:, 0] = np.linspace(0, 1.0, n)
    c["root"][:, 1] = np.linspace(0, -0.1, n)
    joints = pose(c, Body(height=1.8, arm=1.05))
    for a, b, length in (
        ("ShoulderRight", "ElbowRight", 0.17 * 1.05),
        ("KneeLeft", "AnkleLeft", 0.245),
    ):
        bone = np.linalg.norm(joints[:, J[a]] - joints[:, J[b]], axis=-1)
        np.testing.assert_allclose(bone, length * 1.8, rtol=1e-6)
