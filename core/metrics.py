"""Detection metrics of the PKU-MMD protocol, and classification accuracy.

`evaluate_detection` computes what the official PKU-MMD `evaluate.py` computes (the version
with `match()` and `calc_pr()`, ECHO960/PKU-MMD, also shipped by the paper's code as
`third_party/pku_mmd/evaluate.py`), with numpy instead of its per-proposal loops:

- a proposal matches the ground-truth instance of its video and label with the largest tIoU
  `(min(e) - max(s)) / (max(e) - min(s))`, if that tIoU is >= theta; among equal tIoUs the
  script keeps the last instance of the file (it replaces on `>=`);
- `ap()`: proposals sorted by confidence (a stable sort, so ties keep list order) are removed
  from the least confident; each matched one updates precision = matched instances /
  proposals left and recall = matched instances / instances; an instance stays matched while
  any of its proposals is left; AP = sum of (running max precision) * (recall drop);
- mAP_action: _mean of `ap()` over classes 1..L, a class without ground truth counting 0;
  mAP_video: _mean of `ap()` over videos (all classes of the video in one list);
  AP and F1: all proposals in one list; 2D-AP: _mean AP over tIoU 0.05, 0.10, ..., 1.00.

Where the script's list order breaks confidence ties, the same order is used here: videos
sorted by name, instances in file order, and for the all-proposals list, class first.
Sums run in the script's order (sequentially), so the numbers are equal, not merely close.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.labels import CONFIDENCE, END, LABEL, START

DEFAULT_TIOUS = (0.1, 0.3, 0.5)
# The script's 2DAP thresholds, `(ratio + 1) * 0.05`, computed the same way (same floats).
TIOUS_2D_AP = tuple((i + 1) * 0.05 for i in range(20))


@dataclass(frozen=True)
class _Instances:
    """Label-file rows of many videos, flattened; `video` indexes the evaluation's video list."""

    video: np.ndarray  # int64 [N]
    label: np.ndarray  # int64 [N]
    start: np.ndarray  # float64 [N]
    end: np.ndarray  # float64 [N]
    confidence: np.ndarray  # float64 [N]

    @classmethod
    def from_videos(cls, per_video: Sequence[np.ndarray]) -> _Instances:
        """Concatenates `[N_v, 4]` arrays in list order (so index order = video, then row)."""
        counts = [len(rows) for rows in per_video]
        rows = np.concatenate(per_video).reshape(-1, 4)
        return cls(
            video=np.repeat(np.arange(len(per_video)), counts),
            label=rows[:, LABEL].astype(np.int64),
            start=rows[:, START],
            end=rows[:, END],
            confidence=rows[:, CONFIDENCE],
        )

    def __len__(self) -> int:
        return len(self.label)


@dataclass(frozen=True)
class DetectionMetrics:
    """All figures of the protocol; arrays are indexed like `tiou` (first axis)."""

    num_classes: int
    videos: tuple[str, ...]
    tiou: tuple[float, ...]
    map_action: np.ndarray  # [T]
    map_video: np.ndarray  # [T]
    ap: np.ndarray  # [T] all proposals in one list
    f1: np.ndarray  # [T]
    ap_per_class: np.ndarray  # [T, L], column c is class c + 1
    ap_per_video: np.ndarray  # [T, V]
    ap_2d: float
    num_instances: int
    num_proposals: int
    classes_without_gt: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; per-tIoU figures keyed by `repr(tiou)` ("0.1", "0.5")."""

        def by_tiou(values: np.ndarray) -> dict[str, Any]:
            return {repr(t): v.tolist() for t, v in zip(self.tiou, values, strict=True)}

        return {
            "num_classes": self.num_classes,
            "tiou": list(self.tiou),
            "map_action": by_tiou(self.map_action),
            "map_video": by_tiou(self.map_video),
            "ap_per_class": by_tiou(self.ap_per_class),
            "ap": by_tiou(self.ap),
            "f1": by_tiou(self.f1),
            "ap_2d": self.ap_2d,
            "num_videos": len(self.videos),
            "num_instances": self.num_instances,
            "num_proposals": self.num_proposals,
            "classes_without_gt": list(self.classes_without_gt),
        }


def tiou(
    start_a: np.ndarray, end_a: np.ndarray, start_b: np.ndarray, end_b: np.ndarray
) -> np.ndarray:
    """Temporal IoU as the script computes it; negative when the segments are apart.

    Two identical zero-length segments (where the script divides by zero) get 1.
    """
    inter = np.minimum(end_a, end_b) - np.maximum(start_a, start_b)
    union = np.maximum(end_a, end_b) - np.minimum(start_a, start_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 1.0)


def _best_matches(gt: _Instances, pred: _Instances) -> tuple[np.ndarray, np.ndarray]:
    """Per proposal: the largest tIoU with an instance of its video and label, and that
    instance (the last one in file order among equals); -inf and -1 where there is none.

    Matching at a threshold theta is then `where(best_tiou >= theta, best_gt, -1)`.
    """
    stride = max(int(gt.label.max(initial=0)), int(pred.label.max(initial=0))) + 1
    gt_key = gt.video * stride + gt.label
    gt_order = np.argsort(gt_key, kind="stable")  # by (video, label), file order kept
    pred_key = pred.video * stride + pred.label
    first = np.searchsorted(gt_key[gt_order], pred_key, side="left")
    count = np.searchsorted(gt_key[gt_order], pred_key, side="right") - first
    # One pair per (proposal, candidate instance).
    pair_pred = np.repeat(np.arange(len(pred)), count)
    within = np.arange(len(pair_pred)) - np.repeat(np.cumsum(count) - count, count)
    pair_gt = gt_order[first[pair_pred] + within]
    overlap = tiou(pred.start[pair_pred], pred.end[pair_pred], gt.start[pair_gt], gt.end[pair_gt])
    best_tiou = np.full(len(pred), -np.inf)
    np.maximum.at(best_tiou, pair_pred, overlap)
    at_best = overlap == best_tiou[pair_pred]
    # Instance indices grow with file order inside a video, so the last is the largest.
    best_gt = np.full(len(pred), -1, dtype=np.int64)
    np.maximum.at(best_gt, pair_pred[at_best], pair_gt[at_best])
    return best_tiou, best_gt


def _precision_recall(positive, proposals, instances) -> tuple[np.ndarray, np.ndarray]:
    """The script's `calc_pr`, elementwise: (0, 0) when there are no proposals or instances."""
    positive, proposals, instances = np.broadcast_arrays(positive, proposals, instances)
    ok = (proposals > 0) & (instances > 0)
    zeros = np.zeros(positive.shape)
    precision = np.divide(positive, proposals, out=zeros.copy(), where=ok)
    recall = np.divide(positive, instances, out=zeros, where=ok)
    return precision, recall


def _segmented_cummax(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Running maximum that restarts where `group` (non-decreasing) changes."""
    out = values.copy()
    for part in np.split(out, np.flatnonzero(np.diff(group)) + 1):
        np.maximum.accumulate(part, out=part)
    return out


def _grouped_ap(
    group: np.ndarray,
    gt_group: np.ndarray,
    matched: np.ndarray,
    order: np.ndarray,
    num_groups: int,
) -> np.ndarray:
    """The script's `ap()` for each group of proposals, all groups at once.

    `group[i]`: the group of proposal i; `gt_group[j]`: the group of instance j; `matched[i]`:
    the instance proposal i matches, or -1; `order`: the proposals sorted by (group, confidence,
    the script's list order). Returns AP per group, float64 `[num_groups]`.
    """
    n_proposals = np.bincount(group, minlength=num_groups)
    n_instances = np.bincount(gt_group, minlength=num_groups)
    group_start = np.cumsum(n_proposals) - n_proposals
    g, m = group[order], matched[order]
    # The script scores a removal only when the proposal is matched.
    hit = np.flatnonzero(m >= 0)
    gh = g[hit]
    # An instance stops being matched when its last (most confident) proposal is removed.
    last = np.full(len(gt_group), -1, dtype=np.int64)
    np.maximum.at(last, m[hit], hit)
    unmatches = np.zeros(len(order), dtype=bool)
    unmatches[last[last >= 0]] = True
    positive_all = np.bincount(g[unmatches], minlength=num_groups)
    unmatched_so_far = np.cumsum(unmatches)
    unmatched_before_group = np.concatenate(([0], unmatched_so_far))[group_start]
    positive = positive_all[gh] - (unmatched_so_far[hit] - unmatched_before_group[gh])
    left = n_proposals[gh] - (hit - group_start[gh] + 1)
    precision, recall = _precision_recall(positive, left, n_instances[gh])
    precision0, recall0 = _precision_recall(positive_all, n_proposals, n_instances)
    # The script keeps the best precision seen so far, starting from all proposals.
    best_precision = np.maximum(precision0[gh], _segmented_cummax(precision, gh))
    first = np.ones(len(gh), dtype=bool)
    first[1:] = gh[1:] != gh[:-1]
    previous_recall = np.where(first, recall0[gh], np.roll(recall, 1))
    terms = best_precision * (previous_recall - recall)
    # bincount adds the terms of a group one after the other, as the script's `score +=`.
    return np.bincount(gh, weights=terms, minlength=num_groups)


def _f1_score(matched: np.ndarray, num_instances: int) -> float:
    """The script's `f1()`: matched instances over proposals and over instances (0 if none)."""
    positive = len(np.unique(matched[matched >= 0]))
    precision, recall = map(float, _precision_recall(positive, len(matched), num_instances))
    # The script divides by zero here; no match means F1 = 0.
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _mean(values: np.ndarray) -> float:
    """The script's `sum([...]) / n` (Python's sum, in order)."""
    return sum(values.tolist()) / len(values)


def _rows(video: str, rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    if rows.size == 0:
        return rows.reshape(0, 4)
    if rows.ndim != 2 or rows.shape[1] != 4:
        raise ValueError(f"video {video!r}: need rows [N, 4] (label, start, end, confidence)")
    return rows


def _check_tious(tious: Sequence[float]) -> tuple[float, ...]:
    tious = tuple(float(t) for t in tious)
    if not tious or not all(0 < t <= 1 for t in tious):
        raise ValueError(f"tIoU thresholds must be in (0, 1], got {list(tious)}")
    return tious


def _check_labels(
    instances: _Instances, videos: Sequence[str], num_classes: int, what: str
) -> None:
    bad = np.flatnonzero((instances.label < 1) | (instances.label > num_classes))
    if len(bad):
        i = bad[0]
        raise ValueError(
            f"{what} of video {videos[instances.video[i]]!r} has label {instances.label[i]}, "
            f"outside 1..{num_classes} ({len(bad)} such instances); set the number of classes "
            "(gd-eval --num-classes)"
        )


class _ProposalLists:
    """The script's three kinds of proposal lists, as (groups, sort order) for `_grouped_ap`."""

    def __init__(self, gt: _Instances, pred: _Instances, num_classes: int, num_videos: int):
        index = np.arange(len(pred))  # the script's list order: video, then file order
        self.gt, self.pred = gt, pred
        self.num_classes, self.num_videos = num_classes, num_videos
        self.by_class = np.lexsort((index, pred.confidence, pred.label))
        self.by_video = np.lexsort((index, pred.confidence, pred.video))
        # all_props = sum(a_props): class first, then video and file order.
        self.all = np.lexsort((index, pred.label, pred.confidence))

    def ap_per_class(self, matched: np.ndarray) -> np.ndarray:
        return _grouped_ap(
            self.pred.label - 1, self.gt.label - 1, matched, self.by_class, self.num_classes
        )

    def ap_per_video(self, matched: np.ndarray) -> np.ndarray:
        return _grouped_ap(self.pred.video, self.gt.video, matched, self.by_video, self.num_videos)

    def ap_all(self, matched: np.ndarray) -> float:
        one = np.zeros(len(self.pred), dtype=np.int64)
        return float(_grouped_ap(one, np.zeros_like(self.gt.video), matched, self.all, 1)[0])


def evaluate_detection(
    gt: Mapping[str, np.ndarray],
    pred: Mapping[str, np.ndarray],
    num_classes: int | None = None,
    tious: Sequence[float] = DEFAULT_TIOUS,
) -> DetectionMetrics:
    """Every figure of the PKU-MMD protocol for `{video: [N, 4] rows}` ground truth and
    detections (label-file rows, `core.labels`). The videos are those of `gt`; one missing from
    `pred` has no proposals. `num_classes` defaults to the largest ground-truth label.
    """
    videos = tuple(sorted(gt))
    if not videos:
        raise ValueError("no ground-truth videos")
    unknown = sorted(set(pred) - set(gt))
    if unknown:
        raise ValueError(f"detections for videos without ground truth: {', '.join(unknown[:5])}")
    empty = np.empty((0, 4))
    gt_all = _Instances.from_videos([_rows(v, gt[v]) for v in videos])
    pred_all = _Instances.from_videos([_rows(v, pred.get(v, empty)) for v in videos])
    if num_classes is None:
        if len(gt_all) == 0:
            raise ValueError("the ground truth has no instances; give the number of classes")
        num_classes = int(gt_all.label.max())
    if num_classes < 1:
        raise ValueError(f"the number of classes must be >= 1, got {num_classes}")
    _check_labels(gt_all, videos, num_classes, "ground truth")
    _check_labels(pred_all, videos, num_classes, "detection")
    tious = _check_tious(tious)

    best_tiou, best_gt = _best_matches(gt_all, pred_all)
    lists = _ProposalLists(gt_all, pred_all, num_classes, len(videos))

    def matched_at(theta: float) -> np.ndarray:
        return np.where(best_tiou >= theta, best_gt, -1)

    per_class, per_video, ap_all, f1 = [], [], [], []
    for theta in tious:
        matched = matched_at(theta)
        per_class.append(lists.ap_per_class(matched))
        per_video.append(lists.ap_per_video(matched))
        ap_all.append(lists.ap_all(matched))
        f1.append(_f1_score(matched, len(gt_all)))
    ap_2d = _mean(np.array([lists.ap_all(matched_at(t)) for t in TIOUS_2D_AP]))
    has_gt = np.bincount(gt_all.label, minlength=num_classes + 1)[1:] > 0
    return DetectionMetrics(
        num_classes=num_classes,
        videos=videos,
        tiou=tious,
        map_action=np.array([_mean(ap) for ap in per_class]),
        map_video=np.array([_mean(ap) for ap in per_video]),
        ap=np.array(ap_all),
        f1=np.array(f1),
        ap_per_class=np.array(per_class).reshape(len(tious), num_classes),
        ap_per_video=np.array(per_video).reshape(len(tious), len(videos)),
        ap_2d=ap_2d,
        num_instances=len(gt_all),
        num_proposals=len(pred_all),
        classes_without_gt=tuple(int(c) + 1 for c in np.flatnonzero(~has_gt)),
    )


def classification_accuracy(pred: np.ndarray, target: np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose target class is among the top `k`.

    `pred`: predicted class ids `[N]` (top-1 only) or scores `[N, C]`; `target`: class ids
    `[N]`. With scores, ties rank the lower class id first, as `argmax` does.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if target.ndim != 1 or len(target) == 0 or len(pred) != len(target):
        raise ValueError(
            f"need N > 0 targets [N] and predictions [N] or [N, C], got "
            f"{pred.shape} and {target.shape}"
        )
    if pred.ndim == 1:
        if k != 1:
            raise ValueError("top-k accuracy needs scores [N, C], not class ids")
        return float(np.mean(pred == target))
    if pred.ndim != 2 or not 1 <= k <= pred.shape[1]:
        raise ValueError(f"need scores [N, C] and 1 <= k <= C, got {pred.shape} and k={k}")
    if target.min() < 0 or target.max() >= pred.shape[1]:
        raise ValueError(f"targets must be class ids in 0..{pred.shape[1] - 1}")
    target_score = pred[np.arange(len(target)), target][:, None]
    lower_id = np.arange(pred.shape[1]) < target[:, None]
    rank = np.sum((pred > target_score) | ((pred == target_score) & lower_id), axis=1)
    return float(np.mean(rank < k))
