import numpy as np

from synth.performance import Performance
from synth.recording import record
from synth.scene import background_depth, make_camera, make_room
from synth.skeleton import pose, rest
from synth.subjects import subject_profile


def _standing(n: int = 6) -> Performance:
    person = subject_profile(1)
    joints = pose(rest(n), person.body)[:, None]  # at the spot, facing camera 1
    return Performance(joints, [(1, 1, 4)], [person], (0.0, -0.3, 0.0), False, 30.0)


def test_person_pixels_are_valid_and_in_front_of_the_empty_room():
    room = make_room(2, 0.5)
    camera = make_camera(1, 2, np.random.default_rng(0), 0.5, (60, 80), (60, 80))
    rec = record(_standing(), room, camera, np.random.default_rng(1), 0.5, view=1, setup=2)
    empty, _ = background_depth(room, camera)
    noise = 3 * 0.0015 * (1 + 4 * 0.5) * 4.5**2  # 3 sigma of the depth noise at the far end
    for t in range(rec.num_frames):
        mask = rec.body_mask[t]
        assert mask.sum() > 50
        depth = rec.depth[t][mask] / 1000.0
        assert (depth > 0).all()
        assert (depth < empty[mask] + noise).all()
        # Most person pixels stand well clear of the room behind them.
        assert np.median(empty[mask] - depth) > 0.5
    # Where nobody is, the depth is the room's (within noise) or a hole.
    far = ~rec.body_mask[0] & (rec.depth[0] > 0) & np.isfinite(empty)
    assert np.median(np.abs(rec.depth[0][far] / 1000.0 - empty[far])) < 0.05


def test_a_person_facing_the_camera_has_their_left_hand_on_the_image_left():
    """Kinect images are mirror-like: the performer's left hand appears on the left."""
    room = make_room(2, 0.0)
    camera = make_camera(1, 2, np.random.default_rng(0), 0.0, (60, 80), (60, 80))
    rec = record(_standing(2), room, camera, np.random.default_rng(1), 0.0, view=1, setup=2)
    left, right = rec.depth_xy[0, 0, 7, 0], rec.depth_xy[0, 0, 11, 0]  # HandLeft, HandRight
    assert left < right
    assert rec.joints[0, 0, 7, 0] < rec.joints[0, 0, 11, 0]  # camera x grows to the sensor's left
