"""Time of the PKU-MMD protocol (core.metrics) on a full-size test set, against plain loops.

A seeded synthetic test set the size of PKU-MMD's largest (1,000 videos x 20 instances of 51
classes, 10 detections per instance, confidences rounded to 3 digits so that ties occur) is
scored at tIoU 0.1, 0.3, 0.5 plus 2D-AP by:
- `core.metrics (numpy)`: what gd-eval uses;
- `official loops`: tests/core/pku_official.py, the official evaluate.py's algorithm as plain
  Python loops (candidates looked up by label and video; the script's label-only lookup
  scans every instance of the class in the test set for each detection, far slower still);
and, end to end, `gd-eval` reading the 2,000 files. Both must give identical numbers.

Run: .venv/bin/python bench/eval.py [--videos 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.core.pku_official

from core import evaluate
from core.labels import write_label_file
from core.metrics import evaluate_detection
from tests.core import pku_official

NUM_CLASSES = 51
TIOUS = (0.1, 0.3, 0.5)


def synthetic_test_set(
    rng: np.random.Generator, videos: int, instances: int = 20, per_instance: int = 10
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Ground truth and detections: instances one after another, detections jittered around
    them (sometimes with a wrong class), better ones more confident."""
    gt, pred = {}, {}
    for v in range(videos):
        length = rng.integers(30, 300, instances)
        start = np.cumsum(rng.integers(20, 200, instances) + np.r_[0, length[:-1]])
        label = rng.integers(1, NUM_CLASSES + 1, instances)
        gt[f"{v:04d}-M"] = np.stack([label, start, start + length, np.ones(instances)], axis=1)

        jitter = rng.normal(0, 0.3, (instances, per_instance, 2)) * length[:, None, None]
        p_start = np.round(start[:, None] + jitter[..., 0])
        p_end = np.maximum(np.round((start + length)[:, None] + jitter[..., 1]), p_start + 1)
        wrong = rng.random((instances, per_instance)) < 0.3
        p_label = np.where(wrong, rng.integers(1, NUM_CLASSES + 1, wrong.shape), label[:, None])
        quality = 1 - np.abs(jitter).sum(-1) / length[:, None] - 0.5 * wrong
        conf = np.round(np.clip(quality + rng.normal(0, 0.2, quality.shape), 0, 1), 3)
        rows = np.stack([p_label, p_start, p_end, conf], axis=-1).reshape(-1, 4)
        pred[f"{v:04d}-M"] = rows[rng.permutation(len(rows))]
    return gt, pred


def numpy_figures(gt, pred) -> dict[str, list[float]]:
    m = evaluate_detection(gt, pred, NUM_CLASSES, TIOUS)
    return {
        "map_action": m.map_action.tolist(),
        "map_video": m.map_video.tolist(),
        "ap": m.ap.tolist(),
        "f1": m.f1.tolist(),
        "ap_2d": [m.ap_2d],
    }


def loop_figures(gt, pred) -> dict[str, list[float]]:
    videos = sorted(gt)
    v_props = pku_official.to_lists(videos, pred)
    v_grounds = pku_official.to_lists(videos, gt)
    out = [
        pku_official.process(v_props, v_grounds, t, NUM_CLASSES + 1, by_video=True, with_2d=k == 0)
        for k, t in enumerate(TIOUS)
    ]
    figures = {key: [o[key] for o in out] for key in ("map_action", "map_video", "ap", "f1")}
    figures["ap_2d"] = [out[0]["ap_2d"]]
    return figures


def timed(fn, *args):
    t = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t


def gd_eval_seconds(gt, pred) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        for name, rows in (("gt", gt), ("pred", pred)):
            (Path(tmp) / name).mkdir()
            for video, r in rows.items():
                write_label_file(Path(tmp) / name / f"{video}.txt", r)
        argv = ["--gt", f"{tmp}/gt", "--pred", f"{tmp}/pred", "--json"]
        with contextlib.redirect_stdout(io.StringIO()):
            code, seconds = timed(evaluate.main, argv)
    assert code == 0
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    gt, pred = synthetic_test_set(np.random.default_rng(args.seed), args.videos)
    n_gt, n_pred = sum(map(len, gt.values())), sum(map(len, pred.values()))
    print(f"{args.videos} videos, {n_gt} instances, {n_pred} detections, {NUM_CLASSES} classes")
    print(f"figures: mAP_action, mAP_video, AP, F1 at tIoU {TIOUS}, and 2D-AP (20 tIoUs)\n")

    fast, t_fast = timed(numpy_figures, gt, pred)
    slow, t_slow = timed(loop_figures, gt, pred)
    t_cli = gd_eval_seconds(gt, pred)

    print(f"{'core.metrics (numpy)':<24} {t_fast:8.3f} s")
    print(f"{'official loops':<24} {t_slow:8.3f} s   ({t_slow / t_fast:.0f}x slower)")
    print(f"{'gd-eval, with file I/O':<24} {t_cli:8.3f} s\n")

    diff = max(abs(a - b) for key in fast for a, b in zip(fast[key], slow[key], strict=True))
    for key in fast:
        print(f"{key:<11} " + "  ".join(f"{x:.6f}" for x in fast[key]))
    print(f"\nlargest difference numpy vs loops: {diff:g}")
    if diff != 0:
        sys.exit("the two implementations disagree")


if __name__ == "__main__":
    main()
