import numpy as np
import pytest

from core.metrics import (
    TIOUS_2D_AP,
    classification_accuracy,
    evaluate_detection,
    tiou,
)
from tests.core import pku_official
from tests.helpers.detections import random_test_set


def official(gt, pred, num_classes, theta, by_video=False, with_2d=False):
    videos = sorted(gt)
    return pku_official.process(
        pku_official.to_lists(videos, pred),
        pku_official.to_lists(videos, gt),
        theta,
        num_classes + 1,
        by_video=by_video,
        with_2d=with_2d,
    )


@pytest.mark.parametrize("seed", range(40))
def test_equals_the_official_script_on_random_test_sets(seed):
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(1, 6))
    gt, pred = random_test_set(rng, int(rng.integers(1, 10)), num_classes)
    tious = (0.1, 0.3, 0.5, 0.7, 1.0, float(rng.uniform(0.05, 0.95)))
    m = evaluate_detection(gt, pred, num_classes, tious)
    for k, theta in enumerate(tious):
        ref = official(gt, pred, num_classes, theta, with_2d=k == 0)
        # Same arithmetic in the same order: equal, not merely close.
        assert m.map_action[k] == ref["map_action"]
        assert m.map_video[k] == ref["map_video"]
        assert m.ap[k] == ref["ap"]
        assert m.f1[k] == ref["f1"]
        assert m.ap_per_class[k].tolist() == ref["ap_per_class"]
        assert m.ap_per_video[k].tolist() == ref["ap_per_video"]
        if k == 0:
            assert m.ap_2d == ref["ap_2d"]


def test_reference_lookup_by_video_changes_nothing():
    # bench/eval.py times the reference with candidates looked up by (label, video).
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        gt, pred = random_test_set(rng, 8, 3)
        for theta in (0.1, 0.5):
            assert official(gt, pred, 3, theta) == official(gt, pred, 3, theta, by_video=True)


def test_tiou():
    s, e = np.array([0.0, 0, 0, 5, 5]), np.array([10.0, 10, 10, 5, 5])
    s2, e2 = np.array([0.0, 5, 20, 5, 0]), np.array([10.0, 15, 30, 5, 10])
    # identical; half overlap 5/15; apart (negative, as the script); same point; point inside
    np.testing.assert_array_equal(tiou(s, e, s2, e2), [1.0, 5 / 15, -10 / 30, 1.0, 0.0])


def one_video(gt_rows, pred_rows):
    return {"v": np.array(gt_rows, float)}, {"v": np.array(pred_rows, float).reshape(-1, 4)}


def test_hand_computed_one_class_three_proposals():
    # Instances g1 = [0, 100], g2 = [200, 300]. Proposals, by confidence:
    #   A [0, 100] 0.9: tIoU 1 with g1;  B [150, 250] 0.8: tIoU 50/150 = 1/3 with g2;
    #   C [10, 90] 0.7: tIoU 80/100 with g1.
    # theta 0.5: A, C -> g1, B unmatched. All 3 proposals: 1 instance matched, p = 1/3,
    #   r = 1/2. Remove C (least confident): g1 still has A, p = 1/2, r = 1/2, best p 1/2,
    #   adds 1/2 * 0. Remove B: unmatched, skipped. Remove A: nothing left, p = r = 0,
    #   adds 1/2 * (1/2 - 0). AP = 0.25. F1 = 2 (1/3)(1/2) / (1/3 + 1/2) = 0.4.
    # theta 0.3: B -> g2 too; p = 2/3, r = 1. Remove C: p = 1, r = 1, adds 0. Remove B:
    #   p = 1/1, r = 1/2, adds 1 * 1/2. Remove A: adds 1 * 1/2. AP = 1. F1 = 0.8.
    gt, pred = one_video(
        [[1, 0, 100, 1], [1, 200, 300, 1]],
        [[1, 0, 100, 0.9], [1, 150, 250, 0.8], [1, 10, 90, 0.7]],
    )
    m = evaluate_detection(gt, pred, tious=(0.5, 0.3))
    assert m.num_classes == 1
    np.testing.assert_allclose(m.ap, [0.25, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(m.map_action, [0.25, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(m.map_video, [0.25, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(m.f1, [0.4, 0.8], rtol=0, atol=1e-15)
    # 2D-AP: thresholds 0.05..1/3 give AP 1 (6 of them), 0.35..0.8 give 0.25 (10), then
    # only A (tIoU 1) matches at 0.85..1.0: p = 1/3, r = 1/2; remove A: adds 1/3 * 1/2 (4).
    assert TIOUS_2D_AP[5] < 1 / 3 < TIOUS_2D_AP[6]
    expected_2d = (6 * 1.0 + 10 * 0.25 + 4 * (1 / 6)) / 20
    assert m.ap_2d == pytest.approx(expected_2d, abs=1e-15)


def test_a_class_without_ground_truth_counts_zero_in_map_action():
    gt, pred = one_video([[1, 0, 100, 1]], [[1, 0, 100, 0.9], [2, 0, 100, 0.9]])
    m = evaluate_detection(gt, pred, num_classes=3, tious=(0.5,))
    np.testing.assert_array_equal(m.ap_per_class, [[1.0, 0.0, 0.0]])
    assert m.map_action[0] == pytest.approx(1 / 3)
    assert m.classes_without_gt == (2, 3)
    # The class-2 proposal is a false positive of the video and of the all-proposals list.
    # p = 1/2, r = 1; remove it (unmatched, skipped); remove the match: adds 1/2 * 1.
    assert m.map_video[0] == 0.5
    assert m.ap[0] == 0.5


def test_confidence_ties_keep_file_order_as_the_script():
    # g1 = [0, 10], g2 = [20, 30]; T1 -> g1 (0.9), T2 -> g2 (0.5), F unmatched (0.5).
    # File order T2, F: remove T2 first (p = 1/2 < 2/3 initial, adds 2/3 * 1/2), skip F,
    #   remove T1 (adds 2/3 * 1/2): AP = 2/3.
    # File order F, T2: skip F, remove T2 (p = 1/1, adds 1 * 1/2), remove T1: AP = 1.
    gt = [[1, 0, 10, 1], [1, 20, 30, 1]]
    t1, t2, f = [1, 0, 10, 0.9], [1, 20, 30, 0.5], [1, 50, 60, 0.5]
    assert evaluate_detection(*one_video(gt, [t1, t2, f])).ap[0] == pytest.approx(2 / 3)
    assert evaluate_detection(*one_video(gt, [t1, f, t2])).ap[0] == 1.0


def test_confidence_ties_across_videos_follow_video_names():
    # The same tie as above, with F in another video: the class list is in video-name order.
    gt = {"a": np.array([[1, 0, 10, 1], [1, 20, 30, 1]]), "b": np.zeros((0, 4))}
    t1, t2, f = [1, 0, 10, 0.9], [1, 20, 30, 0.5], [1, 50, 60, 0.5]
    f_first = {"a": np.array([t1, t2]), "b": np.array([f])}
    assert evaluate_detection(gt, f_first).map_action[0] == pytest.approx(2 / 3)
    f_first = {"a": np.array([t1, t2]), "0": np.array([f])}
    gt_0 = {"a": gt["a"], "0": gt["b"]}
    assert evaluate_detection(gt_0, f_first).map_action[0] == 1.0


def test_equal_tiou_matches_the_last_instance_of_the_file():
    # P [5, 15] has tIoU 1/3 with both [0, 10] and [10, 20]; Q [10, 20] matches [10, 20].
    # The script keeps the last of equals: with [10, 20] last, P and Q share it, 1 of 2
    # instances matched: p = 1/2, r = 1/2; remove Q: p = 1, adds 0; remove P: adds 1 * 1/2.
    # With [0, 10] last, P takes it: 2 matched, AP = 1.
    pred = [[1, 5, 15, 0.9], [1, 10, 20, 0.1]]
    m = evaluate_detection(*one_video([[1, 0, 10, 1], [1, 10, 20, 1]], pred), tious=(0.3,))
    assert m.ap[0] == 0.5
    m = evaluate_detection(*one_video([[1, 10, 20, 1], [1, 0, 10, 1]], pred), tious=(0.3,))
    assert m.ap[0] == 1.0


def test_proposal_of_other_label_or_video_never_matches():
    gt = {"a": np.array([[1, 0, 10, 1.0]]), "b": np.array([[2, 0, 10, 1.0]])}
    pred = {"a": np.array([[2, 0, 10, 0.9]]), "b": np.array([[1, 0, 10, 0.9]])}
    m = evaluate_detection(gt, pred, tious=(0.1,))
    assert (m.map_action[0], m.map_video[0], m.ap[0], m.f1[0]) == (0, 0, 0, 0)


def test_no_detections_at_all():
    gt = {"a": np.array([[1, 0, 10, 1.0]]), "b": np.array([[2, 0, 10, 1.0]])}
    m = evaluate_detection(gt, {})
    assert m.num_proposals == 0
    assert not m.map_action.any() and not m.map_video.any() and not m.f1.any()
    assert m.ap_2d == 0


def test_video_without_detection_file_is_a_video_without_detections():
    rng = np.random.default_rng(7)
    gt, pred = random_test_set(rng, 6, 3)
    pred = {v: pred.get(v, np.zeros((0, 4))) for v in gt}
    dropped = sorted(pred)[0]
    gt[dropped] = np.array([[1, 0, 10, 1.0]])
    pred[dropped] = np.zeros((0, 4))
    with_empty = evaluate_detection(gt, pred, 3)
    del pred[dropped]
    without_file = evaluate_detection(gt, pred, 3)
    np.testing.assert_array_equal(with_empty.map_action, without_file.map_action)
    np.testing.assert_array_equal(with_empty.map_video, without_file.map_video)
    assert without_file.ap_per_video[:, 0].tolist() == [0, 0, 0]
    assert without_file.num_instances == sum(map(len, gt.values()))


def test_num_classes_defaults_to_the_largest_ground_truth_label():
    gt, pred = one_video([[4, 0, 10, 1], [2, 0, 10, 1]], [[4, 0, 10, 0.5]])
    m = evaluate_detection(gt, pred)
    assert m.num_classes == 4
    assert m.classes_without_gt == (1, 3)
    assert m.map_action[0] == pytest.approx(0.25)


def test_an_empty_list_of_detections_is_a_video_without_detections():
    gt = {"v": np.array([[1, 0, 10, 1]], float), "u": np.array([[1, 0, 10, 1]], float)}
    found = {"u": np.array([[1, 0, 10, 0.9]])}  # one of the two actions: AP 1/2
    assert evaluate_detection(gt, {**found, "v": []}).map_action.tolist() == [0.5, 0.5, 0.5]


def test_bad_inputs_raise_value_errors_that_say_what():
    gt, pred = one_video([[2, 0, 10, 1]], [[3, 0, 10, 0.5]])
    with pytest.raises(ValueError, match=r"detection of video 'v' has label 3, outside 1\.\.2"):
        evaluate_detection(gt, pred)
    with pytest.raises(ValueError, match=r"ground truth of video 'v' has label 2, outside 1\.\.1"):
        evaluate_detection(gt, {}, num_classes=1)
    with pytest.raises(ValueError, match="without ground truth: w"):
        evaluate_detection(gt, {"w": np.zeros((0, 4))})
    # the first five unknown videos are named, not more
    six = {f"w{i}": np.zeros((0, 4)) for i in range(6)}
    with pytest.raises(ValueError, match=r"ground truth: w0, w1, w2, w3, w4$"):
        evaluate_detection(gt, six)
    with pytest.raises(ValueError, match=r"tIoU thresholds must be in \(0, 1\]"):
        evaluate_detection(gt, {}, tious=(0.0, 0.5))
    with pytest.raises(ValueError, match="no instances"):
        evaluate_detection({"v": np.zeros((0, 4))}, {})
    with pytest.raises(ValueError, match="no ground-truth videos"):
        evaluate_detection({}, {})


def test_as_dict_has_the_documented_keys():
    gt, pred = one_video([[1, 0, 100, 1]], [[1, 0, 100, 0.9]])
    d = evaluate_detection(gt, pred, num_classes=2).as_dict()
    assert d["num_classes"] == 2
    assert d["tiou"] == [0.1, 0.3, 0.5]
    assert d["map_action"] == {"0.1": 0.5, "0.3": 0.5, "0.5": 0.5}
    assert d["map_video"] == {"0.1": 1.0, "0.3": 1.0, "0.5": 1.0}
    assert d["ap_per_class"] == {"0.1": [1.0, 0.0], "0.3": [1.0, 0.0], "0.5": [1.0, 0.0]}
    assert d["classes_without_gt"] == [2]


def test_classification_accuracy_top1_and_topk():
    assert classification_accuracy([1, 2, 3, 3], [1, 2, 0, 3]) == 0.75
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.4, 0.4, 0.2]])
    target = np.array([1, 2, 1, 1])
    # Ranks of the target: 0; 2; 2 (class 2 higher, class 0 tied and first); 1 (tie, class 0
    # first).
    assert classification_accuracy(scores, target) == 0.25
    assert classification_accuracy(scores, target, k=2) == 0.5
    assert classification_accuracy(scores, target, k=3) == 1.0
    assert classification_accuracy(scores, target) == np.mean(scores.argmax(1) == target)


def test_classification_accuracy_rejects_bad_shapes():
    with pytest.raises(ValueError):
        classification_accuracy([], [])
    with pytest.raises(ValueError):
        classification_accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="top-k"):
        classification_accuracy([1, 2], [1, 2], k=2)
    with pytest.raises(ValueError, match="k <= C"):
        classification_accuracy(np.zeros((2, 3)), [0, 1], k=4)
    with pytest.raises(ValueError, match="class ids"):
        classification_accuracy(np.zeros((2, 3)), [0, 3])
