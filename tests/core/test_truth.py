"""core.truth: detections checked against a synthetic scene's true actions."""

import pytest

from core.truth import TrueAction, TruthCheck, true_actions

NAMES = ("drink water", "sit down", "falling down")


def test_true_actions_are_timed_as_the_server_times_detections():
    # Frames 30..59 inclusive at 30 fps: [1.0, 2.0) s, as the server's start_s / end_s; the
    # offset places a looped video's actions after the previous one's.
    assert true_actions([(3, 30, 59), (1, 0, 14)], NAMES, 30.0, offset_s=10.0) == [
        TrueAction("falling down", 11.0, 12.0),
        TrueAction("drink water", 10.0, 10.5),
    ]


@pytest.fixture
def check():
    c = TruthCheck()
    c.add([TrueAction("sit down", 2.0, 4.0), TrueAction("falling down", 6.0, 8.0)])
    return c


def test_a_detection_over_its_action_is_a_hit(check):
    v = check.check("sit down", 2.0, 3.5)  # tIoU 1.5 / 2.0
    assert (v.truth.label, v.tiou, v.hit) == ("sit down", 0.75, True)
    assert check.describe(v) == ("truth: sit down 2.0-4.0 s (tIoU 0.75), hit; hit rate 1/1")


def test_wrong_label_low_overlap_repeat_and_background_are_misses(check):
    assert not check.check("sit down", 6.0, 8.0).hit  # the falling down's span, wrong label
    low = check.check("sit down", 3.0, 5.0)  # tIoU 1 / 3: under 0.5
    assert low.truth.label == "sit down" and low.tiou == pytest.approx(1 / 3) and not low.hit
    assert check.check("sit down", 2.0, 4.0).hit
    assert not check.check("sit down", 2.0, 4.0).hit  # that action was taken already
    none = check.check("sit down", 10.0, 11.0)
    assert (none.truth, none.tiou, none.hit) == (None, 0.0, False)
    assert check.describe(none) == "truth: no action there; hit rate 1/5"
    assert (check.hits, check.detections) == (1, 5)


def test_tiou_at_the_threshold_is_a_hit(check):
    # [2, 3) against [2, 4): tIoU exactly 1 / 2.
    assert check.check("sit down", 2.0, 3.0).hit


def test_summary_counts_found_actions_that_have_ended(check):
    check.check("falling down", 6.0, 8.0)
    assert check.found(until_s=5.0) == (0, 1)  # the falling down had not ended by then
    assert check.found(until_s=8.0) == (1, 2)  # an action ending exactly then has ended
    assert check.found() == (1, 2)
    assert check.summary() == ("1 of 1 detections hit, 1 of 2 true actions found (tIoU >= 0.5)")


def test_a_detection_that_only_touches_an_action_has_no_truth(check):
    # [4, 5) starts where the sit down [2, 4) ends: tIoU exactly 0, nothing there.
    assert check.check("sit down", 4.0, 5.0).truth is None


def test_no_truth_yet_means_no_hit():
    c = TruthCheck()
    assert c.check("sit down", 0.0, 1.0).truth is None and c.detections == 1
