"""gd-eval: score temporal action detections with the PKU-MMD protocol (core.metrics)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from core.labels import SUFFIX, read_label_dir
from core.metrics import DEFAULT_TIOUS, DetectionMetrics, evaluate_detection

DESCRIPTION = """\
Score temporal action detections against ground truth with the PKU-MMD detection protocol,
giving exactly the numbers of the dataset's official evaluate.py.

Each directory holds one file per video, named <video>.txt (the PKU-MMD label format), one
action instance per line:

    label,start,end,confidence        e.g.  12,1043,1187,0.83

label is a class id 1..L, start and end are frames, confidence the detection's score (the
ground truth may have it or not; it is ignored there). Fields are separated by commas (with
or without spaces) or by spaces. The videos evaluated are those of --gt: a video without a
file in --pred has no detections, so point --gt at the test videos only.

Printed: mAP_action (mean AP over classes 1..L; a class without ground truth counts 0),
mAP_video (mean AP over videos), AP and F1 over all detections at each tIoU threshold, and
2D-AP (mean AP over tIoU 0.05, 0.10, ..., 1.00). See docs/evaluation.md.
"""

EPILOG = """\
example:
  gd-eval --gt data/PKU-MMD/label --pred runs/detections
  gd-eval --gt data/PKU-MMD/label --pred runs/detections --num-classes 51 --tiou 0.5 --json

exit status: 0 on success, 2 on bad arguments or unreadable/malformed files.
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gd-eval",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--gt", required=True, metavar="DIR", help="ground truth: one <video>.txt per test video"
    )
    parser.add_argument(
        "--pred", required=True, metavar="DIR", help="detections: one <video>.txt per video"
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        metavar="L",
        help="number of classes (default: the largest label in the ground truth)",
    )
    parser.add_argument(
        "--tiou",
        type=float,
        nargs="+",
        default=list(DEFAULT_TIOUS),
        metavar="T",
        help="tIoU thresholds in (0, 1] (default: 0.1 0.3 0.5)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    return parser.parse_args(argv)


def format_table(m: DetectionMetrics, missing: int) -> str:
    lines = [
        f"PKU-MMD detection protocol: {len(m.videos)} videos ({missing} without a detection file), "
        f"{m.num_classes} classes, {m.num_instances} instances, {m.num_proposals} detections",
        "",
        f"{'tIoU':>6}  {'mAP_action':>10}  {'mAP_video':>10}  {'AP':>8}  {'F1':>8}",
    ]
    for k, t in enumerate(m.tiou):
        lines.append(
            f"{t:>6g}  {m.map_action[k]:>10.4f}  {m.map_video[k]:>10.4f}"
            f"  {m.ap[k]:>8.4f}  {m.f1[k]:>8.4f}"
        )
    lines += ["", f"2D-AP (mean AP over tIoU 0.05, 0.10, ..., 1.00): {m.ap_2d:.4f}"]
    if m.classes_without_gt:
        ids = ", ".join(str(c) for c in m.classes_without_gt)
        lines.append(f"classes without ground truth (AP 0 in mAP_action): {ids}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        gt = read_label_dir(args.gt)
        pred = read_label_dir(args.pred, need_confidence=True)
        if not gt:
            raise ValueError(f"{args.gt}: no ground-truth files (*{SUFFIX})")
        metrics = evaluate_detection(gt, pred, args.num_classes, args.tiou)
    except (OSError, ValueError) as e:
        print(f"gd-eval: error: {e}", file=sys.stderr)
        return 2
    missing = len(set(gt) - set(pred))
    if missing:
        print(
            f"gd-eval: warning: {missing} of {len(gt)} videos of {args.gt} have no file in "
            f"{args.pred}; they count as videos without detections",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(metrics.as_dict() | {"videos_without_detection_file": missing}))
    else:
        print(format_table(metrics, missing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
