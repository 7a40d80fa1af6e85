"""gd-eval: score temporal action detections with the PKU-MMD protocol (core.metrics).

Also `gd-eval split` (the test split's ground truth of a PKU-MMD tree, to score against) and
`gd-eval plot` (one video's detections against its ground truth, as a timeline picture).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.labels import CONFIDENCE, END, LABEL, START, SUFFIX, read_label_dir
from core.metrics import DEFAULT_TIOUS, DetectionMetrics, evaluate_detection
from core.splits import SPLITS, read_split
from core.truth import TrueAction, TruthCheck

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
example: a gd-train pipeline's workdir, whose predictions are of the test split:
  gd-eval split --data runs/quick/data/pku --out runs/quick/gt-test
  gd-eval --gt runs/quick/gt-test --pred runs/quick/predictions
  gd-eval --gt runs/quick/gt-test --pred runs/quick/predictions --tiou 0.5 --json
  gd-eval plot --gt runs/quick/gt-test --pred runs/quick/predictions --video 0002-M \\
      --classes runs/quick/data/pku/gd-synth.json --out timeline.png

commands:
  gd-eval split --data DIR --out GT [--split cross-subject|cross-view]
      copy the label files of a PKU-MMD tree's test videos (DIR/split/<split>.txt, DIR/label)
      to GT: the ground truth to score a model's test-split predictions against
  gd-eval plot --gt GT --pred PRED --video NAME --out PNG [--classes JSON] [--fps F]
      a timeline of one video: ground truth above, detections below, hits and misses marked
      (needs matplotlib)

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


def split_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="gd-eval split",
        description="Copy the ground truth of a PKU-MMD tree's test videos (DIR/label/<video>.txt "
        "for each test video of DIR/split/<split>.txt) to a folder, for gd-eval --gt.",
    )
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="PKU-MMD tree")
    p.add_argument("--out", type=Path, required=True, metavar="GT", help="folder to write")
    p.add_argument("--split", choices=SPLITS, default=SPLITS[0], help="benchmark protocol")
    args = p.parse_args(argv)
    try:
        _, test = read_split(args.data / "split" / f"{args.split}.txt")
        sources = [args.data / "label" / f"{video}{SUFFIX}" for video in test]
        missing = [s.name for s in sources if not s.is_file()]
        if missing:
            raise FileNotFoundError(f"{args.data / 'label'}: no label file for {missing[:5]}")
        args.out.mkdir(parents=True, exist_ok=True)
        for source in sources:
            shutil.copyfile(source, args.out / source.name)
    except (OSError, ValueError) as e:
        print(f"gd-eval: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote the ground truth of {len(test)} {args.split} test videos to {args.out}")
    return 0


def label_names(path: Path | None, labels: np.ndarray) -> dict[int, str]:
    """Class id -> name from a JSON file's `classes` (gd-synth.json: ids 1..L; a model's
    model.json: with `background` first), else the ids themselves."""
    names = json.loads(path.read_text())["classes"] if path is not None else []
    names = names[1:] if names[:1] == ["background"] else names
    return {int(c): names[int(c) - 1] if int(c) <= len(names) else str(int(c)) for c in labels}


def plot_timeline(
    gt: np.ndarray, pred: np.ndarray, names: dict[int, str], fps: float, title: str, out: Path
) -> str:
    """Draws ground truth (top row) and detections (bottom row, most confident first, each
    marked hit or miss by `core.truth`) on one time axis; returns the tally line."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    truth = TruthCheck()
    truth.add(TrueAction(names[int(r[LABEL])], r[START] / fps, (r[END] + 1) / fps) for r in gt)
    order = np.argsort(-pred[:, CONFIDENCE], kind="stable")  # the protocol's ranking
    verdicts = {
        int(i): truth.check(
            names[int(pred[i, LABEL])], pred[i, START] / fps, (pred[i, END] + 1) / fps
        )
        for i in order
    }
    colours = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(12, 2.6), layout="constrained")
    for rows, y in ((gt, 1), (pred, 0)):
        for i, r in enumerate(rows):
            start, end = r[START] / fps, (r[END] + 1) / fps
            hit = y == 1 or verdicts[i].hit  # ground truth is drawn plain
            ax.barh(  # colours by class; 7 steps apart so that neighbouring ids differ
                y, end - start, left=start, height=0.6, color=colours(7 * int(r[LABEL]) % 20),
                alpha=1.0 if y == 1 else 0.4 + 0.6 * float(r[CONFIDENCE]),
                edgecolor="black" if hit else "red", linewidth=0.8 if hit else 2.0,
            )  # fmt: skip
            ax.text(
                (start + end) / 2, y, names[int(r[LABEL])].replace(" ", "\n"), ha="center",
                va="center", fontsize=7,
            )  # fmt: skip
    ax.set_yticks([0, 1], ["detections", "ground truth"])
    ax.set_xlabel("time (s)")
    ax.set_title(f"{title}: {truth.summary()}; red outline: not a hit", fontsize=9)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return truth.summary()


def plot_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="gd-eval plot",
        description="Draw one video's detections against its ground truth on a timeline (PNG). "
        "A detection is a hit when the true action it overlaps most has its label, a tIoU of "
        "at least 0.5, and no more confident detection took that action.",
    )
    p.add_argument("--gt", type=Path, required=True, metavar="DIR", help="ground-truth folder")
    p.add_argument("--pred", type=Path, required=True, metavar="DIR", help="detections folder")
    p.add_argument("--video", required=True, help="the video's name (its file without .txt)")
    p.add_argument("--out", type=Path, required=True, metavar="PNG", help="picture to write")
    p.add_argument(
        "--classes", type=Path, metavar="JSON",
        help="class names: gd-synth.json or a model.json (default: class ids)",
    )  # fmt: skip
    p.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    args = p.parse_args(argv)
    try:
        if not args.fps > 0:
            raise ValueError(f"--fps must be positive, got {args.fps}")
        gt = read_label_dir(args.gt).get(args.video)
        if gt is None:
            raise FileNotFoundError(f"{args.gt}: no {args.video}{SUFFIX}")
        pred = read_label_dir(args.pred, need_confidence=True).get(args.video, np.zeros((0, 4)))
        names = label_names(args.classes, np.concatenate([gt[:, LABEL], pred[:, LABEL]]))
        summary = plot_timeline(gt, pred, names, args.fps, args.video, args.out)
    except ImportError as e:
        print(
            f"gd-eval: error: plot needs matplotlib ({e}); pip install matplotlib", file=sys.stderr
        )
        return 2
    except (OSError, ValueError, KeyError, IndexError) as e:
        print(f"gd-eval: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {summary}")
    return 0


COMMANDS = {"split": split_main, "plot": plot_main}


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
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
