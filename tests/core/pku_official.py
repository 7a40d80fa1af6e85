"""Independent reference for core.metrics: the official PKU-MMD evaluate.py as plain loops.

A rewrite (same algorithm and arithmetic, Python 3, our names) of the script's `calc_pr`,
`match`, `f1`, `ap` and `process` (ECHO960/PKU-MMD, the version with `match()`; the paper's
code ships it as third_party/pku_mmd/evaluate.py). Kept as loops on purpose: it shares no code
with core.metrics. Differences from the script, none of which changes a number it prints:

- inputs are lists instead of folders, and `number_label` is L + 1 instead of 52;
- `f1` returns 0 where the script divides by zero (no proposal matches);
- `match(..., by_video=True)` looks candidates up by (label, video) instead of label only. The
  script's `overlap()` returns 0 for an instance of another video, which never reaches a
  threshold > 0, so only the speed changes; bench/eval.py needs it to finish at full size.

A proposal or instance is `[label, start, end, confidence, video_name]`.
"""

from __future__ import annotations

import itertools
from collections import defaultdict


def calc_pr(positive, proposals, instances):
    if proposals == 0 or instances == 0:
        return 0, 0
    return (1.0 * positive) / proposals, (1.0 * positive) / instances


def overlap(prop, inst):
    if int(prop[0]) != int(inst[0]) or prop[4] != inst[4]:
        return 0
    return (min(prop[2], inst[2]) - max(prop[1], inst[1])) / (
        max(prop[2], inst[2]) - min(prop[1], inst[1])
    )


def match(props, ratio, ground, by_video=False):
    """For each proposal the index of its instance (-1: none), matches per instance, and the
    number of matched instances."""

    def key(row):
        return (int(row[0]), row[4]) if by_video else int(row[0])

    matched = [-1] * len(props)
    count = [0] * len(ground)
    candidates = defaultdict(list)
    for j, inst in enumerate(ground):
        candidates[key(inst)].append(j)
    for i, prop in enumerate(props):
        for j in candidates[key(prop)]:
            if overlap(prop, ground[j]) < ratio:
                continue
            # As in the script: with no match yet, matched[i] == -1 compares with ground[-1].
            if overlap(prop, ground[j]) < overlap(prop, ground[matched[i]]):
                continue
            matched[i] = j
        if matched[i] != -1:
            count[matched[i]] += 1
    positive = sum(c > 0 for c in count)
    return matched, count, positive


def f1(props, ratio, ground, by_video=False):
    _, _, positive = match(props, ratio, ground, by_video)
    precision, recall = calc_pr(positive, len(props), len(ground))
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def ap(props, ratio, ground, by_video=False):
    props.sort(key=lambda x: x[3])
    matched, count, positive = match(props, ratio, ground, by_video)
    score = 0
    n_props = len(props)
    n_ground = len(ground)
    old_precision, old_recall = calc_pr(positive, n_props, n_ground)
    for i in range(len(props)):
        n_props -= 1
        if matched[i] == -1:
            continue
        count[matched[i]] -= 1
        if count[matched[i]] == 0:
            positive -= 1
        precision, recall = calc_pr(positive, n_props, n_ground)
        if precision > old_precision:
            old_precision = precision
        score += old_precision * (old_recall - recall)
        old_recall = recall
    return score


def by_class(v_rows, number_label):
    a_rows = [[] for _ in range(number_label)]
    for rows in v_rows:
        for row in rows:
            a_rows[int(row[0])].append(row)
    return a_rows


def process(v_props, v_grounds, theta, number_label, by_video=False, with_2d=False):
    """Everything the script prints for one theta, plus the per-class and per-video APs."""
    a_props = by_class(v_props, number_label)
    a_grounds = by_class(v_grounds, number_label)
    all_props = list(itertools.chain.from_iterable(a_props))  # the script's sum(a_props, [])
    all_grounds = list(itertools.chain.from_iterable(a_grounds))
    out = {
        "f1": f1(all_props, theta, all_grounds, by_video),
        "ap": ap(all_props, theta, all_grounds, by_video),
        "ap_per_class": [
            ap(a_props[x + 1], theta, a_grounds[x + 1], by_video) for x in range(number_label - 1)
        ],
        "ap_per_video": [
            ap(list(v_props[x]), theta, v_grounds[x], by_video) for x in range(len(v_props))
        ],
    }
    out["map_action"] = sum(out["ap_per_class"]) / (number_label - 1)
    out["map_video"] = sum(out["ap_per_video"]) / len(v_props)
    if with_2d:
        out["ap_2d"] = (
            sum([ap(all_props, (ratio + 1) * 0.05, all_grounds, by_video) for ratio in range(20)])
            / 20
        )
    return out


def to_lists(videos, rows_by_video):
    """`{video: [N, 4] array}` to the script's per-video lists, in `videos` order."""
    return [
        [[float(x) for x in row] + [video] for row in rows_by_video.get(video, [])]
        for video in videos
    ]
