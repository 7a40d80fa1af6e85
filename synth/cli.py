"""`gd-synth`: write the synthetic benchmark in the real datasets' layouts.

`classification` writes an NTU RGB+D tree (source: many short single-action samples, all
modalities); `detection` writes a PKU-MMD tree (target: long videos of 10-25 actions with
background between them). The trees are byte-for-byte in the real formats, so `gd-prep` and
`gd-train` treat them exactly like the real datasets. `gd-synth.json` at the root records what
was generated, and the class names. `sample` writes one depth recording to upload (a RealSense
`.db3`, or `.npz`) with its ground truth, for the quick start. `recordings` writes site
recordings and their label file (`synth.site`, docs/retraining.md).

Every sample of `classification`, `detection` and `sample` also gets `reference/<name>.png`:
its camera's empty room (the person-centric crop's reference, gd-prep --person-crop).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from core.clip import frame_timestamps_us, parse_size
from core.files import atomic_write_text
from core.labels import write_label_file
from synth import site
from synth.cameras import CAMERAS, camera_profile
from synth.formats import (
    PKU_CONFIDENCE,
    PKU_LABEL_DIR,
    PKU_VIEWS,
    REFERENCE_DIR,
    SYNTH_MARKER,
    XSUB_TRAIN_60,
    ntu_name,
    pku_label_rows,
    pku_video_name,
    reference_path,
    write_ntu_sample,
    write_pku_splits,
    write_pku_video,
    write_reference,
)
from synth.generate import (
    COLOR_SIZE,
    DEPTH_SIZE,
    NUM_SUBJECTS,
    SOURCE_CLASSES,
    TARGET_CLASSES,
    class_names,
    classification_shot,
    detection_shot,
    generate_many,
)
from synth.scene import SceneError
from synth.subjects import DEFAULT_DIFFICULTY

NTU_SETUPS = 17
PKU_CROSS_VIEW_TRAIN = ("M", "R")  # PKU-MMD cross-view: train on middle and right views
# The quick start's sample: what the default model was trained on (difficulty 0.1, README's
# models/default), but a seed and a test subject it never saw.
SAMPLE_NAME = "sample"
SAMPLE_SEED = 1000
SAMPLE_SUBJECT = 3  # a cross-subject test performer (not in XSUB_TRAIN_60)
SAMPLE_DIFFICULTY = 0.1
# The default model's training frames: a RealSense D435 in VGA mode at a quarter of its size.
SAMPLE_CAMERA = "d435-vga"
SAMPLE_SIZE = (120, 160)  # (H, W)


def write_classification(root: str, name: str, modalities: tuple[str, ...], **sample) -> str:
    """Generate one NTU sample and write it, its reference first; runs in a worker process."""
    shot = classification_shot(**sample)
    write_reference(root, name, shot.reference())
    rec = shot.film()
    write_ntu_sample(
        root, name, rec.joints, rec.tracked, rec.depth_xy, rec.color_xy,
        depth=rec.depth if "depth" in modalities else None,
        body_mask=rec.body_mask,
        rgb=rec.rgb if "rgb" in modalities else None,
        fps=rec.fps,
    )  # fmt: skip
    return name


def write_detection(root: str, name: str, modalities: tuple[str, ...], **video) -> str:
    """Generate one PKU-MMD video and write it, its reference first; runs in a worker process."""
    shot = detection_shot(**video)
    write_reference(root, name, shot.reference())
    rec = shot.film()
    write_pku_video(
        root, name, rec.joints, rec.tracked, rec.segments,
        depth=rec.depth if "depth" in modalities else None,
        rgb=rec.rgb if "rgb" in modalities else None,
        fps=rec.fps,
    )  # fmt: skip
    return name


def write_classification_reference(
    root: str, name: str, modalities: tuple[str, ...], **sample
) -> str:
    """Only the reference of one NTU sample (--references-only): no rendering."""
    return write_reference(root, name, classification_shot(**sample).reference()).stem


def write_detection_reference(root: str, name: str, modalities: tuple[str, ...], **video) -> str:
    """Only the reference of one PKU-MMD video (--references-only): no rendering."""
    return write_reference(root, name, detection_shot(**video).reference()).stem


def classification_jobs(args: argparse.Namespace) -> list[dict]:
    """`args.samples` distinct (subject, action, camera, replication) draws, in a seeded order.

    Subjects 1..NUM_SUBJECTS split as NTU's cross-subject protocol does (its training list);
    the setup follows the subject, as NTU's recording sessions do.
    """
    n_classes = len(SOURCE_CLASSES)
    grid = np.array(
        np.meshgrid(
            np.arange(1, NUM_SUBJECTS + 1), np.arange(1, n_classes + 1), [1, 2, 3], [1, 2],
            indexing="ij",
        )
    ).reshape(4, -1).T  # fmt: skip
    if args.samples > len(grid):
        raise ValueError(f"--samples at most {len(grid)} distinct samples, got {args.samples}")
    # Every action equally often: order by a seeded shuffle within each action, interleaved.
    rng = np.random.default_rng(args.seed)
    rank = np.empty(len(grid))
    for a in range(1, n_classes + 1):
        rows = np.flatnonzero(grid[:, 1] == a)
        rank[rows] = rng.permutation(len(rows)) * n_classes + a
    jobs = []
    for subject, action, camera, replication in grid[np.argsort(rank)][: args.samples]:
        setup = 1 + (int(subject) - 1) % NTU_SETUPS
        sample = dict(
            action=int(action), subject=int(subject), camera=int(camera),
            replication=int(replication), setup=setup, seed=args.seed, size=args.size,
            color_size=args.color_size, difficulty=args.difficulty, depth_fov=args.depth_fov,
        )  # fmt: skip
        name = ntu_name(setup, sample["camera"], sample["subject"], sample["replication"], action)
        jobs.append(dict(root=str(args.out), name=name, modalities=args.modalities, **sample))
    return jobs


def detection_jobs(args: argparse.Namespace) -> tuple[list[dict], dict[str, int]]:
    """`args.videos` videos: recording sessions of one subject, each filmed from the three
    views L, M, R (cameras 1, 2, 3) as PKU-MMD's are. Returns jobs and each video's subject."""
    jobs, subjects = [], {}
    for i in range(args.videos):
        session, view = divmod(i, len(PKU_VIEWS))
        # Alternate training and test subjects so any number of sessions covers both.
        pool = sorted(XSUB_TRAIN_60) if session % 2 == 0 else _test_subjects()
        subject = pool[(session // 2) % len(pool)]
        lo, hi = args.actions
        session_rng = np.random.default_rng([args.seed, 0x5E55, session])
        name = pku_video_name(session + 1, PKU_VIEWS[view])
        subjects[name] = subject
        jobs.append(
            dict(
                root=str(args.out), name=name, modalities=args.modalities,
                seed=args.seed * 10_000 + session, subject=subject, camera=view + 1,
                n_actions=int(session_rng.integers(lo, hi + 1)), size=args.size,
                color_size=args.color_size, difficulty=args.difficulty, depth_fov=args.depth_fov,
            )
        )  # fmt: skip
    return jobs, subjects


def _test_subjects() -> list[int]:
    return [s for s in range(1, NUM_SUBJECTS + 1) if s not in XSUB_TRAIN_60]


def write_pku_split_files(root: Path, subjects: dict[str, int]) -> None:
    names = sorted(subjects)
    xsub = ([n for n in names if subjects[n] in XSUB_TRAIN_60],
            [n for n in names if subjects[n] not in XSUB_TRAIN_60])  # fmt: skip
    xview = ([n for n in names if n[-1] in PKU_CROSS_VIEW_TRAIN],
             [n for n in names if n[-1] not in PKU_CROSS_VIEW_TRAIN])  # fmt: skip
    write_pku_splits(root, xsub, xview)


# Options that do not change the references (--references-only compares the rest).
NOT_IN_REFERENCES = ("workers", "references_only", "modalities")


def generated_with_other_options(root: Path, options: dict) -> str | None:
    """Why references made with `options` would not fit the tree at `root`, or None: the
    tree's gd-synth.json must record the same generating options (its samples' cameras)."""
    marker = root / SYNTH_MARKER
    try:
        recorded = json.loads(marker.read_text())["options"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{marker} is missing or unreadable: generate the tree first"
    wanted = json.loads(json.dumps(options, default=list))
    differ = sorted(
        k for k in set(recorded) | set(wanted)
        if k not in NOT_IN_REFERENCES and recorded.get(k) != wanted.get(k)
    )  # fmt: skip
    if differ:
        shown = ", ".join(f"{k} {recorded.get(k)!r} there, {wanted.get(k)!r} here" for k in differ)
        return f"{root} was generated with other options: {shown}"
    return None


def frame_size(text: str) -> tuple[int, int]:
    """argparse type: `HxW`, at least 16x16 (the generator's smallest frames)."""
    try:
        return parse_size(text, minimum=16)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def depth_geometry(args: argparse.Namespace) -> tuple[tuple[int, int], tuple[float, float] | None]:
    """(depth size, (hfov, vfov) or None) from --camera, --camera-scale and --size.

    Without --camera: --size (default 96x128) with square pixels and the Kinect v2's horizontal
    field of view, as gd-synth always rendered. With it: the camera's fields of view at its
    size times --camera-scale, or at --size if that has the camera's aspect ratio.
    """
    if args.camera is None:
        if args.camera_scale is not None:
            raise ValueError("--camera-scale needs --camera")
        return args.size or DEPTH_SIZE, None
    camera = camera_profile(args.camera)
    if args.size is not None:
        if args.camera_scale is not None:
            raise ValueError("give --size or --camera-scale, not both")
        camera.check_size(args.size)
        return args.size, camera.fov
    size = camera.scaled_size(1.0 if args.camera_scale is None else args.camera_scale)
    if min(size) < 16:
        raise ValueError(f"--camera-scale gives {size[0]}x{size[1]}; frames need at least 16x16")
    return size, camera.fov


CAMERA_HELP = "depth camera profiles (--camera):\n" + "\n".join(
    f"  {p.describe()}" for p in CAMERAS.values()
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gd-synth",
        description=(
            "Generate the synthetic multimodal action benchmark (depth, RGB, skeleton) in the "
            "real datasets' layouts: 'classification' writes NTU RGB+D (the source), "
            "'detection' writes PKU-MMD (the target). Deterministic for a seed."
        ),
        epilog=(
            "examples:\n  gd-synth classification --out data/ntu --samples 2000 --seed 0\n"
            "  gd-synth detection --out data/pku --videos 60 --seed 0 --actions 10 25\n"
            "  gd-synth detection --out data/pku --videos 60 --camera d435 --camera-scale 0.25\n\n"
            + CAMERA_HELP
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(
        dest="command", required=True, metavar="{classification,detection,sample,recordings}"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, required=True, help="root folder to write")
    common.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    common.add_argument(
        "--size",
        type=frame_size,
        metavar="HxW",
        help="depth frame size (default 96x128; with --camera: the camera's size times "
        "--camera-scale, and a --size must have the camera's aspect ratio)",
    )
    common.add_argument(
        "--camera",
        choices=tuple(CAMERAS),
        help="render depth with this camera's aspect ratio and fields of view: "
        + "; ".join(p.describe() for p in CAMERAS.values())
        + " (default: square pixels, 70.6 deg horizontal field of view, any --size)",
    )
    common.add_argument(
        "--camera-scale",
        type=float,
        metavar="S",
        help="with --camera: render at its resolution times S in (0, 1] for speed, "
        "e.g. 0.25 (default 1)",
    )
    common.add_argument(
        "--color-size",
        type=frame_size,
        default=COLOR_SIZE,
        metavar="HxW",
        help="RGB frame size (default 120x160)",
    )
    common.add_argument(
        "--difficulty",
        type=float,
        default=DEFAULT_DIFFICULTY,
        help="0 = clean, 1 = hardest: sensor noise, clutter, view and "
        f"subject variation (default {DEFAULT_DIFFICULTY})",
    )
    common.add_argument(
        "--modalities",
        nargs="+",
        choices=("depth", "rgb"),
        default=("depth", "rgb"),
        help="image modalities to write; skeletons are always written",
    )
    common.add_argument(
        "--references-only",
        action="store_true",
        help="write only reference/<name>.png, the empty room each sample's camera sees (no "
        "rendering: seconds), for a tree an older gd-synth wrote without them; give the "
        "options the tree was generated with (checked against its gd-synth.json)",
    )
    common.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="parallel processes (default: all cores)",
    )
    c = sub.add_parser(
        "classification",
        parents=[common],
        help="NTU RGB+D layout: short single-action samples (the source)",
        description="NTU RGB+D layout: nturgb+d_skeletons, "
        "nturgb+d_depth_masked, nturgb+d_rgb; names SsssCcccPpppRrrrAaaa.",
    )
    c.add_argument("--samples", type=int, required=True, help="number of samples")
    d = sub.add_parser(
        "detection",
        parents=[common],
        help="PKU-MMD layout: long videos of many actions (the target)",
        description="PKU-MMD phase 1 layout: label, skeleton, depth, rgb, split. "
        "Videos come in sessions filmed from views L, M, R.",
    )
    d.add_argument("--videos", type=int, required=True, help="number of videos")
    d.add_argument(
        "--actions",
        type=int,
        nargs=2,
        default=(10, 25),
        metavar=("MIN", "MAX"),
        help="actions per video (default 10 25)",
    )
    s = sub.add_parser(
        "sample",
        help="one depth recording to upload, with its ground truth (the quick start)",
        description="One synthetic detection video as OUT/sample.db3 (a RealSense recording, "
        "as gd-upload and gd-stream file read it) or OUT/sample.npz, its ground truth "
        "OUT/label/sample.txt (PKU-MMD label format, for gd-eval --gt) and its camera's "
        "empty-room reference OUT/reference/sample.png (16-bit PNG, mm; for a person-crop "
        "model, PUT it as the camera's reference). By default a seed, "
        "performer and difficulty like the default model's held-out test videos.",
    )
    s.add_argument("--out", type=Path, required=True, help="folder to write")
    s.add_argument("--seed", type=int, default=SAMPLE_SEED, help=f"default {SAMPLE_SEED}")
    s.add_argument("--actions", type=int, default=6, help="scripted actions (default 6)")
    s.add_argument(
        "--difficulty",
        type=float,
        default=SAMPLE_DIFFICULTY,
        help=f"0 = clean, 1 = hardest (default {SAMPLE_DIFFICULTY}, the default model's)",
    )
    s.add_argument(
        "--camera",
        choices=tuple(CAMERAS),
        default=SAMPLE_CAMERA,
        help=f"depth camera profile to render as (default {SAMPLE_CAMERA}, the default model's)",
    )
    s.add_argument(
        "--size",
        type=frame_size,
        default=SAMPLE_SIZE,
        metavar="HxW",
        help="depth frame size, with the camera's aspect ratio (default "
        f"{SAMPLE_SIZE[0]}x{SAMPLE_SIZE[1]}, the default model's training frames)",
    )
    s.add_argument(
        "--format",
        choices=("db3", "npz"),
        default="db3",
        help="db3: a RealSense recording (needs pyrealsense2); npz: arrays depth and fps",
    )
    site.add_parser(sub, frame_size)
    return p  # fmt: skip


def write_sample(args: argparse.Namespace) -> Path:
    """One detection video as a depth recording `OUT/sample.<format>`, its ground truth
    `OUT/label/sample.txt` (PKU-MMD label format, what `gd-eval --gt` reads) and its camera's
    empty-room reference `OUT/reference/sample.png`."""
    from core.realsense import record_depth  # needs pyrealsense2: only for .db3

    camera = camera_profile(args.camera)
    camera.check_size(args.size)
    shot = detection_shot(
        seed=args.seed, subject=SAMPLE_SUBJECT, camera=2, n_actions=args.actions,
        size=args.size, difficulty=args.difficulty, depth_fov=camera.fov,
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_reference(args.out, SAMPLE_NAME, shot.reference())
    rec = shot.film()
    path = args.out / f"{SAMPLE_NAME}.{args.format}"
    if args.format == "db3":
        record_depth(path, rec.depth, frame_timestamps_us(rec.num_frames, rec.fps), rec.fps)
    else:
        np.savez_compressed(path, depth=rec.depth, fps=np.float64(rec.fps))
    labels = args.out / PKU_LABEL_DIR / f"{SAMPLE_NAME}.txt"
    labels.parent.mkdir(exist_ok=True)
    write_label_file(labels, pku_label_rows(rec.segments, PKU_CONFIDENCE))
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "recordings":
        return site.run(args)
    if args.command == "sample":
        if not 0.0 <= args.difficulty <= 1.0 or not 1 <= args.actions <= 200:
            print("gd-synth: error: --difficulty must be in [0, 1], --actions in 1..200",
                  file=sys.stderr)  # fmt: skip
            return 2
        try:
            path = write_sample(args)
        except SceneError as e:  # a --size without the camera's aspect ratio
            print(f"gd-synth: error: {e}", file=sys.stderr)
            return 2
        except ValueError as e:  # RealSenseError: no pyrealsense2
            print(f"gd-synth: error: {e}; or write --format npz", file=sys.stderr)
            return 2
        print(f"wrote {path}, its ground truth {args.out / PKU_LABEL_DIR}/ and its reference "
              f"{reference_path(args.out, SAMPLE_NAME)}")  # fmt: skip
        return 0
    args.modalities = tuple(args.modalities)
    count = args.samples if args.command == "classification" else args.videos
    if count < 1:
        print(f"gd-synth: error: need at least one {args.command} sample", file=sys.stderr)
        return 2
    if not 0.0 <= args.difficulty <= 1.0:
        print("gd-synth: error: --difficulty must be in [0, 1]", file=sys.stderr)
        return 2
    try:
        args.size, args.depth_fov = depth_geometry(args)
        if args.command == "classification":
            jobs, fn, classes = classification_jobs(args), write_classification, SOURCE_CLASSES
        else:
            lo, hi = args.actions
            if not 1 <= lo <= hi:
                raise ValueError(f"--actions needs 1 <= MIN <= MAX, got {lo} {hi}")
            (jobs, subjects), fn, classes = detection_jobs(args), write_detection, TARGET_CLASSES
    except ValueError as e:
        print(f"gd-synth: error: {e}", file=sys.stderr)
        return 2
    options = {k: v for k, v in vars(args).items() if k not in ("out", "command")}
    if args.references_only:
        other = generated_with_other_options(args.out, options)
        if other:
            print(f"gd-synth: error: --references-only: {other}", file=sys.stderr)
            return 2
        fn = {"classification": write_classification_reference,
              "detection": write_detection_reference}[args.command]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    for _ in generate_many(fn, jobs, workers=max(args.workers, 1), desc=f"gd-synth {args.command}"):
        pass
    if args.references_only:
        print(f"wrote {count} references to {args.out / REFERENCE_DIR}")
        return 0
    if args.command == "detection":
        write_pku_split_files(args.out, subjects)
    record = {
        "generator": "gd-synth",
        "layout": "ntu" if args.command == "classification" else "pku",
        "classes": class_names(classes),
        "count": count,
        "options": options,
    }
    atomic_write_text(args.out / SYNTH_MARKER, json.dumps(record, indent=1, default=list) + "\n")
    noun = "samples" if args.command == "classification" else "videos"
    print(f"wrote {count} {args.command} {noun} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
