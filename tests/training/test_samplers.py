import dataclasses

import numpy as np
import pytest

from core.clip import ClipSpec
from training.samplers import (
    N_TEST_CLIPS,
    class_weights,
    classification_clip_starts,
    clip_frames,
    clip_labels,
    window_clip_starts,
)

SPEC = ClipSpec()  # downsample 3, clip_len 10, clip_step 10, window 10


def released_clip_label(segments, kept_start, spec):
    """The released code's loop (data_pipeline/pku_mmd.py), transcribed."""
    frame_ids = np.arange(kept_start, kept_start + spec.clip_len) * spec.downsample
    target = 0
    for action, start, end in segments:
        overlap = max(0, min(frame_ids[-1] - 1, end - 1) - max(frame_ids[0], start))
        if overlap / (frame_ids[-1] - frame_ids[0]) > 0.5:
            target = action
    return target


def test_clip_labels_match_the_released_loop():
    rng = np.random.default_rng(1)
    for _ in range(50):
        bounds = np.sort(rng.choice(np.arange(0, 900), size=8, replace=False)).reshape(4, 2)
        segments = np.column_stack([rng.integers(1, 6, 4), bounds])
        starts = np.arange(0, 290, 7)
        expected = [released_clip_label(segments, s, SPEC) for s in starts]
        np.testing.assert_array_equal(clip_labels(segments, starts, SPEC), expected)


def test_clip_labels_by_hand():
    # Clip 0 spans source frames 0..27: action 4 over frames 10..40 covers 16/27 of it.
    assert clip_labels(np.array([[4, 10, 40]]), np.array([0]), SPEC).tolist() == [4]
    # Frames 15..40 cover (26 - 15) / 27 < 0.5 of it: background.
    assert clip_labels(np.array([[4, 15, 40]]), np.array([0]), SPEC).tolist() == [0]
    assert clip_labels(np.zeros((0, 3)), np.array([0, 10]), SPEC).tolist() == [0, 0]


def test_classification_starts():
    test_starts = classification_clip_starts(50, SPEC)
    np.testing.assert_array_equal(test_starts, [0, 10, 20, 30, 40])
    assert len(classification_clip_starts(3, SPEC)) == N_TEST_CLIPS
    rng = np.random.default_rng(0)
    seen = {int(classification_clip_starts(50, SPEC, rng)[0]) for _ in range(400)}
    assert seen == set(range(41))


def test_short_video_repeats_last_frame():
    np.testing.assert_array_equal(clip_frames(0, SPEC, 4), [0, 1, 2, 3, 3, 3, 3, 3, 3, 3])
    with pytest.raises(ValueError, match="at least one frame"):
        clip_frames(0, SPEC, 0)


def test_window_starts_train_and_test():
    np.testing.assert_array_equal(window_clip_starts(35, SPEC), [0, 10, 20])
    rng = np.random.default_rng(0)
    starts = window_clip_starts(120, SPEC, rng)
    assert len(starts) == SPEC.window and np.all(np.diff(starts) == SPEC.clip_step)
    assert 0 <= starts[0] and starts[-1] + SPEC.clip_len <= 120
    offsets = {int(window_clip_starts(120, SPEC, rng)[0]) for _ in range(300)}
    assert offsets == set(range(21))  # every kept frame offset, not only the clip grid
    with pytest.raises(ValueError, match="shorter than a window"):
        window_clip_starts(99, SPEC, rng)


def test_person_crop_windows_start_on_the_clip_grid():
    """Each grid clip is cached cropped to its own box: a training window must read whole
    grid clips, as the server's windows do."""
    spec = dataclasses.replace(SPEC, person_crop=True)
    rng = np.random.default_rng(0)
    n_kept = 125  # 12 whole grid clips and 5 frames: windows of 10 clips start at clip 0..2
    firsts = set()
    for _ in range(300):
        starts = window_clip_starts(n_kept, spec, rng)
        assert np.all(starts % spec.clip_step == 0) and np.all(np.diff(starts) == spec.clip_step)
        assert starts[-1] + spec.clip_len <= n_kept
        firsts.add(int(starts[0]))
    assert firsts == {0, 10, 20}  # every grid start that fits, and only those


def test_class_weights():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 0])  # 3 clips of class 1, 1 of class 2, none of 3
    w = class_weights(labels, n_classes=3, background_weight=0.5)
    np.testing.assert_allclose(w, [0.5, 4 / (2 * 3), 4 / (2 * 1), 1.0])
    # Weighted mean over action clips is 1.
    assert np.mean(w[labels[labels > 0]]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\]"):
        class_weights(np.array([4]), 3, 0.5)
