import itertools

import numpy as np
import pytest

from synth.actions import CATALOGUE
from synth.generate import (
    ACTIONS,
    SOURCE_CLASSES,
    TARGET_CLASSES,
    SynthError,
    class_names,
    classification_sample,
    detection_video,
    generate_many,
    subject_profile,
)

SMALL = dict(size=(48, 64), color_size=(60, 80))
TINY = dict(size=(24, 32), color_size=(24, 32))
ALL = tuple(range(len(ACTIONS)))
ISSUE_ACTIONS = """drink water|brush teeth|hand waving|clapping|pointing to something|phone call|
bow|sit down|stand up|falling down|kicking something|jump up|pick up|throw|cross hands in front|
touch head|touch chest|touch back|put on hat|wipe face|staggering|push other person|hugging"""


@pytest.fixture(scope="module")
def sample():
    return classification_sample(1, 1, 1, seed=5, **SMALL)  # drink water


def test_class_sets_overlap_only_in_part():
    assert len(ACTIONS) >= 24 and len(set(ACTIONS)) == len(ACTIONS)
    for name in ISSUE_ACTIONS.replace("\n", "").split("|"):
        assert name in ACTIONS, name
    source, target = set(SOURCE_CLASSES), set(TARGET_CLASSES)
    assert len(source) >= 24 and len(target) >= 12
    assert source & target and target - source and source - target
    assert any(CATALOGUE[i].two_person for i in target)
    assert class_names(SOURCE_CLASSES)[0] == ACTIONS[SOURCE_CLASSES[0]]


def test_recording_shapes_types_and_ranges(sample):
    t = sample.num_frames
    assert 2.0 * 30 <= t <= 5.5 * 30 and sample.fps == 30.0
    assert sample.joints.shape == (t, 1, 25, 3) and sample.joints.dtype == np.float32
    assert sample.tracked.shape == (t, 1) and sample.tracked.dtype == bool
    assert sample.depth_xy.shape == sample.color_xy.shape == (t, 1, 25, 2)
    assert sample.depth.shape == (t, 48, 64) and sample.depth.dtype == np.uint16
    assert sample.body_mask.shape == (t, 48, 64) and sample.body_mask.dtype == bool
    assert sample.rgb.shape == (t, 60, 80, 3) and sample.rgb.dtype == np.uint8
    valid = sample.depth[sample.depth > 0]
    assert valid.min() >= 500 and valid.max() <= 4500
    assert 0.0 < (sample.depth == 0).mean() < 0.5  # holes exist, but most pixels are valid
    assert (sample.camera, sample.subject, sample.setup, sample.replication) == (1, 1, 1, 1)
    [(label, start, end)] = sample.segments
    assert label == 1 and 0 < start < end < t - 1
    assert sample.rgb.std() > 10  # not a blank image


def test_same_arguments_give_identical_recordings_and_other_seeds_do_not(sample):
    again = classification_sample(1, 1, 1, seed=5, **SMALL)
    for field in ("joints", "depth", "body_mask", "rgb", "depth_xy", "tracked"):
        np.testing.assert_array_equal(getattr(again, field), getattr(sample, field))
    assert again.segments == sample.segments
    other = classification_sample(1, 1, 1, seed=6, **SMALL)
    assert other.num_frames != sample.num_frames or not np.array_equal(other.depth, sample.depth)


def test_the_three_views_film_one_performance(sample):
    side = classification_sample(1, 1, 2, seed=5, **SMALL)
    assert side.segments == sample.segments and side.num_frames == sample.num_frames

    # Bone lengths are view-independent (up to sensor jitter): same person, same motion.
    def forearm(rec):
        return np.linalg.norm(rec.joints[:, 0, 9] - rec.joints[:, 0, 10], axis=-1).mean()

    assert forearm(side) == pytest.approx(forearm(sample), abs=0.02)

    # Camera 2 stands 45 degrees around from camera 1 (plus jitter): the shoulder line turns.
    def heading(rec):
        line = (rec.joints[:, 0, 4] - rec.joints[:, 0, 8]).mean(0)
        return np.degrees(np.arctan2(line[2], line[0]))

    turn = (heading(side) - heading(sample) + 180) % 360 - 180
    assert abs(abs(turn) - 45) < 30


def test_joint_pixels_are_the_kinect_projection_of_the_joints(sample):
    fx, fy, cx, cy = sample.depth_intrinsics
    j = sample.joints[sample.tracked]
    u = cx + fx * j[..., 0] / j[..., 2]
    v = cy - fy * j[..., 1] / j[..., 2]
    np.testing.assert_allclose(sample.depth_xy[sample.tracked][..., 0], u, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(sample.depth_xy[sample.tracked][..., 1], v, rtol=1e-4, atol=1e-3)
    # A tracked performer is in view: their trunk joints land inside both images.
    for xy, (h, w) in ((sample.depth_xy, (48, 64)), (sample.color_xy, (60, 80))):
        trunk = xy[sample.tracked][:, [0, 1, 2, 20]]
        assert (trunk[..., 0] >= 0).all() and (trunk[..., 0] <= w - 1).all()
        assert (trunk[..., 1] >= 0).all() and (trunk[..., 1] <= h - 1).all()
    # Joints are in camera space, in front of the sensor, metres away.
    assert (j[..., 2] > 1.0).all() and (j[..., 2] < 4.5).all()


def test_body_mask_is_valid_depth_near_the_joints(sample):
    for t in range(0, sample.num_frames, 10):
        mask = sample.body_mask[t]
        assert mask.sum() > 20
        depth = sample.depth[t][mask] / 1000.0
        assert (depth > 0).all()
        z = sample.joints[t, 0, :, 2]
        assert depth.min() > z.min() - 0.4 and depth.max() < z.max() + 0.4
        # The mask sits where the joints are.
        ys, xs = np.nonzero(mask)
        jx, jy = sample.depth_xy[t, 0, :, 0], sample.depth_xy[t, 0, :, 1]
        assert (
            jx.min() - 6 <= xs.mean() <= jx.max() + 6 and jy.min() - 6 <= ys.mean() <= jy.max() + 6
        )


@pytest.mark.parametrize("index", ALL, ids=lambda i: ACTIONS[i])
def test_every_action_renders(index):
    rec = classification_sample(index + 1, 2, 1, seed=1, classes=ALL, **TINY)
    assert rec.segments[0][0] == index + 1
    bodies = 2 if CATALOGUE[index].two_person else 1
    assert rec.num_bodies == bodies
    assert rec.tracked.mean() > 0.9
    assert rec.body_mask.any(axis=(1, 2)).mean() > 0.9


@pytest.mark.slow  # 0.4 CPU s
def test_detection_video_segments_are_ordered_with_gaps():
    rec = detection_video(seed=2, subject=3, camera=2, n_actions=6, interactions=True, **TINY)
    assert rec.num_bodies == 2 and rec.tracked.mean() > 0.9
    segs = rec.segments
    assert len(segs) >= 6
    assert all(1 <= label <= len(TARGET_CLASSES) for label, _, _ in segs)
    assert segs[0][1] > 0 and segs[-1][2] < rec.num_frames - 1
    for (_, s0, e0), (_, s1, e1) in itertools.pairwise(segs):
        assert s0 <= e0 < s1 - 1 <= e1  # ordered, with at least one background frame between
    labelled = np.zeros(rec.num_frames, bool)
    for _, s, e in segs:
        labelled[s : e + 1] = True
    assert 0.3 < labelled.mean() < 0.9  # background between actions


def test_detection_video_draws_only_from_its_classes():
    classes = [ACTIONS.index(n) for n in ("clapping", "hand waving", "hugging")]
    rec = detection_video(seed=1, subject=1, camera=1, n_actions=4, classes=classes,
                          interactions=False, **TINY)  # fmt: skip
    assert rec.num_bodies == 1
    assert {label for label, _, _ in rec.segments} <= {1, 2}


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(SynthError, match="action"):
        classification_sample(len(SOURCE_CLASSES) + 1, 1, 1, **TINY)
    with pytest.raises(SynthError, match="camera"):
        classification_sample(1, 1, 4, **TINY)
    with pytest.raises(SynthError, match="difficulty"):
        classification_sample(1, 1, 1, difficulty=1.5, **TINY)
    with pytest.raises(SynthError, match="indices into ACTIONS"):
        detection_video(1, 1, 1, classes=["drink water"], **TINY)
    with pytest.raises(SynthError, match="n_actions"):
        detection_video(1, 1, 1, n_actions=0, **TINY)


def test_subject_profiles_are_fixed_and_difficulty_widens_them():
    assert subject_profile(7) == subject_profile(7)
    assert subject_profile(7) != subject_profile(8)
    heights = [[subject_profile(s, d).body.height for s in range(1, 41)] for d in (0.0, 1.0)]
    assert np.std(heights[1]) > 1.5 * np.std(heights[0])
    with pytest.raises(ValueError, match="subject"):
        subject_profile(0)


def _frames(action: int, seed: int) -> tuple[int, int]:
    return seed, classification_sample(action, 1, 1, seed=seed, **TINY).num_frames


@pytest.mark.slow
def test_generate_many_keeps_job_order_across_workers():
    jobs = [dict(action=1 + i % 3, seed=i) for i in range(5)]
    serial = list(generate_many(_frames, jobs, workers=1, progress=False))
    parallel = list(generate_many(_frames, jobs, workers=2, progress=False))
    assert serial == parallel and [s for s, _ in serial] == list(range(5))
