"""`gd-prep`: decode a dataset once into the packed cache that training reads.

Each sample's modalities are read as streams, resampled by timestamp to the kept frame rate
(the same `core.clip` resampler the server uses), reduced to the model's size (depth with the
same invalid-aware min-pooling as at serving time) and stored as parts; once every sample is
done the parts are packed into one memory-mapped array per modality, with training-set
statistics. A run that is interrupted resumes where it stopped; a sample whose files are
missing or corrupt is reported by name and skipped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from core.clip import FITS, ClipSpec, DepthPreprocessor, TimestampResampler, fit_regions, parse_size
from core.files import atomic_write_text
from core.foreground import crop_clip_mm, crop_clips
from synth.formats import reference_path
from training import skeleton_features
from training.cache import (
    MODALITIES,
    SKELETON_MODALITIES,
    CacheError,
    CacheWriter,
)
from training.datasets import NTUDataset, PKUMMDDataset
from training.datasets.media import depth_frame_paths, iter_video_frames
from training.datasets.recordings import (
    list_recordings,
    prepare_recording,
    recording_classes,
    recording_modalities,
)

FLOW_METHODS = ("tvl1", "farneback")


class AllFailed(CacheError):
    """No sample could be prepared: every file is missing or corrupt."""


@dataclass(frozen=True)
class PrepSettings:
    """Everything that decides the cache's content; a resumed run must use the same."""

    dataset: str
    root: str
    modalities: tuple[str, ...]
    height: int = 112
    width: int = 112
    fps: float = 30.0
    downsample: int = 3
    depth_min_mm: int = 500
    depth_max_mm: int = 4500
    flow: str = "tvl1"
    split: str = "xsub"
    version: int = 60
    fit: str = "stretch"  # how frames of another aspect ratio become HxW (core.clip.FITS)
    # Each clip cropped to its person box against <root>/reference/<sample>.png (core.foreground)
    person_crop: bool = False

    @property
    def spec(self) -> ClipSpec:
        return ClipSpec(
            source_fps=self.fps,
            downsample=self.downsample,
            height=self.height,
            width=self.width,
            depth_min_mm=self.depth_min_mm,
            depth_max_mm=self.depth_max_mm,
            fit=self.fit,
            person_crop=self.person_crop,
        )


# --- per-sample work -----------------------------------------------------------------------


def kept(items: Iterable[Any], fps: float, downsample: int) -> Iterator[Any]:
    """The items (frames or frame paths) a stream keeps at `fps / downsample`, in order."""
    resampler = TimestampResampler(fps / downsample)
    period_us = 1e6 / fps
    for i, item in enumerate(items):
        for _, chosen in resampler.push(round(i * period_us), item):
            yield chosen


def read_depth_png(path: Path) -> np.ndarray:
    """uint16 [H, W] mm of a 16-bit single-channel PNG (a depth frame or a reference)."""
    frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if frame is None or frame.dtype != np.uint16 or frame.ndim != 2:
        raise CacheError(f"{path}: not a 16-bit single-channel PNG")
    return frame


class MissingReference(CacheError):
    """--person-crop without a sample's empty-room reference."""


def check_references(s: PrepSettings, names: list[str]) -> None:
    """Every sample's `<root>/reference/<name>.png` exists, before any work: the crop has no
    meaning without it, and a dataset with a few missing would train on a mix."""
    missing = [p for p in (reference_path(s.root, n) for n in names) if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MissingReference(
            f"{missing[0]} is missing{more}: --person-crop needs each sample's empty-room "
            "reference (16-bit PNG, mm, the depth frames' size). gd-synth writes them (for a "
            "tree it wrote before it did: the same gd-synth command with --references-only); "
            "for recorded data, capture one per camera with `gd-stream reference --out FILE`"
        )


def prepare_depth(
    depth_dir: Path, s: PrepSettings, reference: np.ndarray | None = None, one_clip: bool = False
) -> np.ndarray:
    """Kept depth frames reduced to the model's size. With `person_crop`, each clip on the
    grid is cropped to its person box against `reference`, the camera's empty room
    (core.foreground); `one_clip`: one box for the whole sample (classification samples, whose
    training clips start anywhere: one box keeps the person's scale across the sample)."""
    paths = depth_frame_paths(depth_dir)
    if s.person_crop:
        frames = [read_depth_png(p) for p in kept(paths, s.fps, s.downsample)]
        if not frames:
            raise CacheError(f"{depth_dir}: no depth frames")
        crop = crop_clip_mm if one_clip else crop_clips
        return crop(np.stack(frames), reference, s.spec)
    reduce = None
    out = []
    for path in kept(paths, s.fps, s.downsample):
        frame = read_depth_png(path)
        if reduce is None:
            reduce = DepthPreprocessor(s.spec, *frame.shape)
        out.append(reduce.to_millimetres(frame))
    return np.stack(out) if out else np.zeros((0, s.height, s.width), np.uint16)


def fit_rgb(frame: np.ndarray, s: PrepSettings) -> np.ndarray:
    """An RGB frame at HxW with the same fit (stretch, crop or pad with black) as depth."""
    ((r0, r1), (c0, c1)), ((t0, t1), (l0, l1)) = fit_regions(
        s.fit, frame.shape[:2], (s.height, s.width)
    )
    inner = cv2.resize(frame[r0:r1, c0:c1], (l1 - l0, t1 - t0), interpolation=cv2.INTER_AREA)
    if inner.shape[:2] == (s.height, s.width):
        return inner
    out = np.zeros((s.height, s.width, 3), np.uint8)
    out[t0:t1, l0:l1] = inner
    return out


def prepare_rgb(rgb_path: Path, s: PrepSettings) -> np.ndarray:
    frames = [fit_rgb(frame, s) for frame in kept(iter_video_frames(rgb_path), s.fps, s.downsample)]
    return np.stack(frames) if frames else np.zeros((0, s.height, s.width, 3), np.uint8)


def optical_flow(rgb: np.ndarray, method: str) -> np.ndarray:
    """Flow `[T, H, W, 2]` (pixels) from each kept frame to the next; the last repeats."""
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb]
    if method == "tvl1":
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        flows = [tvl1.calc(a, b, None) for a, b in itertools.pairwise(gray)]
    else:
        flows = [
            cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0)
            for a, b in itertools.pairwise(gray)
        ]
    if not flows:
        return np.zeros((len(rgb), *rgb.shape[1:3], 2), np.float32)
    return np.stack([*flows, flows[-1]])


def prepare_sample(sample: Any, s: PrepSettings) -> dict[str, np.ndarray]:
    """All requested modalities of one sample at the kept rate, cut to a common length."""
    if s.dataset == "recordings":  # depth and colour of one RealSense recording
        return prepare_recording(sample, s, fit_rgb, optical_flow)
    arrays: dict[str, np.ndarray] = {}
    if "depth" in s.modalities:
        reference = read_depth_png(reference_path(s.root, sample.name)) if s.person_crop else None
        one_clip = s.dataset == "ntu"
        arrays["depth"] = prepare_depth(sample.depth_dir, s, reference, one_clip)
    if "rgb" in s.modalities or "flow" in s.modalities:
        rgb = prepare_rgb(sample.rgb_path, s)
        if "rgb" in s.modalities:
            arrays["rgb"] = rgb
        if "flow" in s.modalities:
            arrays["flow"] = optical_flow(rgb, s.flow)
    wanted = [m for m in SKELETON_MODALITIES if m in s.modalities]
    if wanted:
        joints = sample.load_skeleton()
        joints = joints[list(kept(range(len(joints)), s.fps, s.downsample))]
        for m in wanted:
            arrays[m] = getattr(skeleton_features, m)(joints)
    length = min(len(a) for a in arrays.values())
    if length == 0:
        raise CacheError(f"{sample.name}: no frames")
    return {m: a[:length] for m, a in arrays.items()}


def sample_info(sample: Any, subset: str) -> dict[str, Any]:
    if hasattr(sample, "labels"):  # PKU-MMD video: detection segments in source frames
        return {"subset": subset, "segments": sample.labels.tolist()}
    return {
        "subset": subset,
        "label": sample.label,
        **{k: getattr(sample, k) for k in ("setup", "camera", "performer", "replication")},
    }


def _work(job: tuple[Any, str, PrepSettings, str]) -> tuple[str, str | None]:
    sample, subset, settings, out = job
    cv2.setNumThreads(1)  # parallelism comes from the worker processes
    try:
        arrays = prepare_sample(sample, settings)
        CacheWriter(Path(out), list(settings.modalities)).write_sample(
            sample.name, arrays, sample_info(sample, subset)
        )
        return sample.name, None
    except Exception as e:  # a bad file skips its sample; the run goes on
        return sample.name, f"{type(e).__name__}: {e}"


# --- the whole dataset ---------------------------------------------------------------------


def list_samples(s: PrepSettings) -> list[tuple[Any, str]]:
    """(sample, subset) for both subsets of the split."""
    if s.dataset == "recordings":
        return list_recordings(Path(s.root), s.fps)
    if s.dataset == "ntu":
        make = lambda subset: NTUDataset(s.root, s.version, s.split, subset)  # noqa: E731
    else:
        make = lambda subset: PKUMMDDataset(s.root, s.split, subset)  # noqa: E731
    return [(sample, subset) for subset in ("train", "test") for sample in make(subset)]


def available_modalities(dataset: str, root: Path) -> list[str]:
    """Modalities whose folders exist under `root` (a skeleton-only tree is valid)."""
    if dataset == "recordings":
        return recording_modalities(root)
    if dataset == "ntu":
        from synth.formats import NTU_DEPTH_DIR, NTU_RGB_DIR, NTU_SKELETON_DIR

        dirs = {"depth": NTU_DEPTH_DIR, "rgb": NTU_RGB_DIR, "skeleton": NTU_SKELETON_DIR}
        present = {k for k, d in dirs.items() if (root / d).is_dir()}
    else:
        from training.datasets.pku import find_folder

        present = set()
        for kind in ("depth", "rgb", "skeleton"):
            try:
                find_folder(root, kind)
                present.add(kind)
            except (FileNotFoundError, ValueError):
                pass
    out = [m for m in ("depth",) if m in present]
    out += ["rgb", "flow"] if "rgb" in present else []
    out += list(SKELETON_MODALITIES) if "skeleton" in present else []
    return out


def feature_stats(arrays: Iterable[np.ndarray], modality: str, depth_max_mm: int) -> dict:
    """Mean and std over the training frames: scalar for depth (in unit depth, the ClipSpec's
    normalization), per channel for RGB ([0, 1]) and flow, per dimension for skeleton
    features."""
    scale = {"depth": 1.0 / depth_max_mm, "rgb": 1.0 / 255.0}.get(modality, 1.0)
    total = total_sq = 0.0
    count = 0
    for a in arrays:
        x = np.asarray(a, np.float64).reshape(-1, 1 if modality == "depth" else a.shape[-1])
        x = x * scale
        total, total_sq, count = total + x.sum(0), total_sq + (x * x).sum(0), count + len(x)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)  # constant dimensions (JJD's i = j pairs) stay as is
    if modality == "depth":
        return {"mean": float(mean[0]), "std": float(std[0])}
    return {"mean": mean.tolist(), "std": std.tolist()}


def other_settings(made: dict[str, Any], s: PrepSettings, ignore: tuple[str, ...] = ()) -> str:
    """How the settings a cache was `made` with differ from `s` ('' if they do not), e.g.
    `person_crop false there, true here`; keys in `ignore` may differ. A key the cache lacks
    was made at its default (the cache predates the key)."""
    wanted = json.loads(json.dumps(asdict(s)))
    defaults = json.loads(json.dumps(asdict(PrepSettings(dataset="", root="", modalities=()))))
    differ = [
        f"{k} {json.dumps(made.get(k, defaults[k]))} there, {json.dumps(v)} here"
        for k, v in wanted.items()
        if k not in ignore and made.get(k, defaults[k]) != v
    ]
    return "; ".join(differ)


def prepare(s: PrepSettings, out: Path, workers: int = 1, progress: bool = True) -> dict:
    """Build (or resume) the cache at `out`; returns a summary with the skipped samples."""
    if (out / "meta.json").exists():
        meta = json.loads((out / "meta.json").read_text())
        # A complete cache may have moved with its data (gd-train's workdir), and may hold
        # more modalities than asked for: only what decides the frames must match.
        other = other_settings(meta.get("settings", {}), s, ignore=("root", "modalities"))
        if other:
            raise CacheError(
                f"{out} is a complete cache made with other settings ({other}); use another "
                "--out or delete it to rebuild"
            )
        return {"status": "complete", "skipped": meta}
    if s.person_crop and s.dataset == "recordings":
        raise CacheError("--person-crop is for the ntu and pku layouts; recordings: not yet")
    unknown = sorted(set(s.modalities) - set(MODALITIES))
    if unknown:
        raise CacheError(f"unknown modalities {unknown}; known: {', '.join(MODALITIES)}")
    if s.flow not in FLOW_METHODS:
        raise CacheError(f"flow must be one of {FLOW_METHODS}, got {s.flow!r}")
    s.spec  # noqa: B018 - validates size, rate and depth range before any work
    samples = list_samples(s)
    if not samples:
        raise CacheError(f"{s.root}: no {s.dataset} samples found")
    if s.person_crop and "depth" in s.modalities:
        check_references(s, [x.name for x, _ in samples])
    out.mkdir(parents=True, exist_ok=True)
    writer = CacheWriter(out, list(s.modalities))
    settings_path = writer.parts / "settings.json"
    if settings_path.exists():
        other = other_settings(json.loads(settings_path.read_text()), s)
        if other:
            raise CacheError(
                f"{out} holds an unfinished cache made with other settings ({other}); use "
                "another --out or delete it"
            )
    atomic_write_text(settings_path, json.dumps(asdict(s), sort_keys=True))

    todo = [(x, subset, s, str(out)) for x, subset in samples if not writer.is_done(x.name)]
    skipped: dict[str, str] = {}
    bar = tqdm(total=len(samples), initial=len(samples) - len(todo), unit="sample",
               desc="gd-prep", disable=not progress)  # fmt: skip
    results: Iterable[tuple[str, str | None]]
    if workers > 1:
        pool = ProcessPoolExecutor(workers)
        results = pool.map(_work, todo, chunksize=1)
    else:
        pool, results = None, map(_work, todo)
    try:
        for name, error in results:
            if error:
                skipped[name] = error
                tqdm.write(f"skipped {name}: {error}", file=sys.stderr)
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    done = [(x.name, subset) for x, subset in samples if writer.is_done(x.name)]
    if not done:
        raise AllFailed(f"every sample failed; first: {next(iter(skipped.items()), None)}")
    train = [name for name, subset in done if subset == "train"] or [n for n, _ in done]
    stats = {
        m: feature_stats(
            (np.load(writer.parts / m / f"{name}.npy", mmap_mode="r") for name in train),
            m,
            s.depth_max_mm,
        )
        for m in s.modalities
    }
    meta = {"settings": asdict(s), "clip": s.spec.to_dict(), "stats": stats, "skipped": skipped}
    meta["clip"].update(stats.get("depth", {}))
    if s.dataset == "recordings":  # class names in id order: new classes have no other home
        meta["classes"] = recording_classes(Path(s.root))
    writer.pack([name for name, _ in done], meta)
    return {"status": "packed", "samples": len(done), "skipped": skipped}


# --- command line --------------------------------------------------------------------------


def frame_size(text: str) -> tuple[int, int]:
    """argparse type: `HxW`."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gd-prep",
        description=(
            "Decode an NTU RGB+D or PKU-MMD tree (real, or written by gd-synth) once into a "
            "packed, memory-mapped cache that gd-train reads: frames resampled to the kept "
            "frame rate, reduced to the model size, optical flow, skeleton features and "
            "training-set statistics. Interrupted runs resume; bad files are skipped and named."
        ),
        epilog=(
            "example: gd-prep --dataset pku --root data/pku --out cache/pku "
            "--modalities depth rgb flow jjd --size 96x128 --fit crop --flow farneback --workers 2"
            " (add --person-crop for a person-centric model)"
        ),
    )
    p.add_argument(
        "--dataset",
        choices=("ntu", "pku", "recordings"),
        required=True,
        help="layout of --root: ntu = NTU RGB+D 60/120, pku = PKU-MMD phase 1, recordings = "
        "RealSense recordings with labels.csv (docs/retraining.md)",
    )
    p.add_argument("--root", type=Path, required=True, help="the dataset's root folder")
    p.add_argument("--out", type=Path, required=True, help="cache folder to create or resume")
    p.add_argument(
        "--modalities",
        nargs="+",
        choices=MODALITIES,
        metavar="M",
        help=f"any of {' '.join(MODALITIES)} (default: all present under --root)",
    )
    p.add_argument(
        "--size",
        type=frame_size,
        default=(112, 112),
        metavar="HxW",
        help="frame size of image modalities, the model's input size (default 112x112; the "
        "quick preset and models/default use 64x64)",
    )
    p.add_argument(
        "--fit",
        choices=FITS,
        default="stretch",
        help="frames of another aspect ratio than --size: stretch = scale each axis on its own "
        "(default), crop = centre crop to the --size aspect ratio, pad = letterbox with invalid "
        "depth (black RGB); written into the cache's clip spec, so the model and the server "
        "use the same",
    )
    p.add_argument(
        "--person-crop",
        action="store_true",
        help="crop each clip to the box of the person in it (core.foreground: pixels nearer "
        "than the camera's empty room), against <root>/reference/<sample>.png, the sample's "
        "empty-room depth (gd-synth writes them); NTU samples get one box each, PKU-MMD "
        "videos one per clip of the grid (clip_len = clip_step = 10 kept frames). Written "
        "into the cache's clip spec: the model's server then crops the same way and needs a "
        "reference per camera (docs/training.md)",
    )
    p.add_argument(
        "--downsample",
        type=int,
        default=3,
        help="keep one frame in N, by timestamp (default 3: 30 -> 10 fps)",
    )
    p.add_argument("--fps", type=float, default=30.0, help="source frame rate (default 30)")
    p.add_argument(
        "--depth-range",
        type=int,
        nargs=2,
        default=(500, 4500),
        metavar=("MIN", "MAX"),
        help="valid depth in mm; outside is invalid (default 500 4500)",
    )
    p.add_argument(
        "--flow",
        choices=FLOW_METHODS,
        default="tvl1",
        help="optical flow: tvl1 = dual TV-L1 as the paper (~250 ms a 112x112 pair), "
        "farneback = fast (~3 ms)",
    )
    p.add_argument(
        "--split",
        default=None,
        help="benchmark split whose training set gives the statistics "
        "(ntu: xsub, xview, xset; pku: cross-subject, cross-view; "
        "default xsub / cross-subject)",
    )
    p.add_argument(
        "--version",
        type=int,
        choices=(60, 120),
        default=60,
        help="NTU RGB+D 60 or 120 (default 60)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="parallel processes (default: all cores)",
    )
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.root.is_dir():
        print(f"gd-prep: error: --root {args.root} is not a folder", file=sys.stderr)
        return 2
    modalities = args.modalities or available_modalities(args.dataset, args.root)
    if not modalities:
        print(f"gd-prep: error: no modality folders under {args.root}", file=sys.stderr)
        return 2
    split = args.split or {"ntu": "xsub", "pku": "cross-subject"}.get(args.dataset, "seeded")
    settings = PrepSettings(
        dataset=args.dataset,
        root=str(args.root.resolve()),
        modalities=tuple(modalities),
        height=args.size[0],
        width=args.size[1],
        fps=args.fps,
        downsample=args.downsample,
        depth_min_mm=args.depth_range[0],
        depth_max_mm=args.depth_range[1],
        flow=args.flow,
        split=split,
        version=args.version,
        fit=args.fit,
        person_crop=args.person_crop,
    )
    try:
        summary = prepare(settings, args.out, workers=max(args.workers, 1))
    except AllFailed as e:  # the data, not the arguments
        print(f"gd-prep: error: {e}", file=sys.stderr)
        return 1
    except (CacheError, ValueError, FileNotFoundError) as e:
        print(f"gd-prep: error: {e}", file=sys.stderr)
        return 2
    if summary["status"] == "complete":
        print(f"{args.out} is already a complete cache; delete it to rebuild")
        return 0
    print(f"cached {summary['samples']} samples ({', '.join(modalities)}) in {args.out}")
    if summary["skipped"]:
        print(f"skipped {len(summary['skipped'])} sample(s) (also in meta.json 'skipped'):")
        for name, why in summary["skipped"].items():
            print(f"  {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
