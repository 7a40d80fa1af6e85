"""A bundle's accuracy and speed, measured on a gd-prep cache with the serving code path.

Clips are read from the cache's depth frames and normalized exactly as training does (the
ClipSpec's depth lookup, `core.clip.DepthPreprocessor`); each test video is scored the way the
server scores an upload (`core.postprocess.offline_clip_probs`, then `segment` with the bundle's
activity threshold) and the detections are scored with the PKU-MMD protocol
(`core.metrics.evaluate_detection`). Encoders are plain `float32 array -> float32 array`
callables, so ONNX Runtime (any precision) and PyTorch are measured alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from core.bundle import ModelBundle
from core.clip import ClipSpec, DepthPreprocessor, video_clips
from core.metrics import evaluate_detection
from core.postprocess import offline_clip_probs, segment
from export.onnx import ExportError, ort_runner
from training.cache import Cache, CacheError

Encoder = Callable[[np.ndarray], np.ndarray]
TIOUS = (0.1, 0.3, 0.5)


class CacheClips:
    """The depth clips of a gd-prep cache, as a model with `spec` sees them."""

    def __init__(self, root: str | Path, spec: ClipSpec) -> None:
        try:
            self.cache = Cache(Path(root))
            depth = self.cache.array("depth")
        except CacheError as e:
            raise ExportError(f"cache: {e}") from e
        self.root, self.spec = Path(root).resolve(), spec
        if depth.shape[1:] != (spec.height, spec.width):
            raise ExportError(
                f"{root}: depth frames are {depth.shape[1]}x{depth.shape[2]}, the model takes "
                f"{spec.height}x{spec.width}; prepare a cache at the model's size: gd-prep ... "
                f"--size {spec.height}x{spec.width}"
            )
        made = self.cache.meta.get("clip", {})
        for field in ("source_fps", "downsample"):
            if field in made and made[field] != getattr(spec, field):
                raise ExportError(
                    f"{root}: cache made with {field} {made[field]}, the model uses "
                    f"{getattr(spec, field)}"
                )
        self.normalize = DepthPreprocessor(spec, spec.height, spec.width)

    def videos(self, subset: str) -> list[int]:
        """Sample indices of one subset ("train" or "test")."""
        found = [i for i, s in enumerate(self.cache.samples) if s.info.get("subset") == subset]
        if not found:
            have = sorted({str(s.info.get("subset")) for s in self.cache.samples})
            raise ExportError(f"{self.root}: no {subset!r} videos (subsets: {', '.join(have)})")
        return found

    def raw_clips(self, video: int) -> np.ndarray:
        """uint16 millimetre clips `[n_clips, T_c, H, W]` of one video (a view, no copy)."""
        s = self.cache.samples[video]
        frames = self.cache.array("depth")[s.offset : s.offset + s.length]
        return video_clips(frames, self.spec)

    def clips(self, video: int, index: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Normalized float32 clips of one video."""
        return self.normalize(self.raw_clips(video)[index])

    def segments(self, video: int) -> np.ndarray:
        """Ground truth rows `label, start, end, confidence` (source frames)."""
        info = self.cache.samples[video].info
        if "segments" not in info:
            raise ExportError(
                f"{self.root}: sample {info.get('name')} has no detection ground truth "
                "(a classification cache?); evaluation needs a PKU-MMD style cache"
            )
        rows = np.asarray(info["segments"], dtype=np.float64)
        if rows.size == 0:
            return np.zeros((0, 4))
        if rows.shape[1] == 3:  # a label file without confidence
            rows = np.column_stack([rows, np.ones(len(rows))])
        return rows

    def consecutive(self, subset: str, n: int) -> np.ndarray:
        """Up to `n` clips in video order: consecutive clips, as a stream has them."""
        out, total = [], 0
        for video in self.videos(subset):
            take = min(n - total, len(self.raw_clips(video)))
            if take > 0:
                out.append(self.clips(video, slice(0, take)))
                total += take
        if not out:
            raise ExportError(f"{self.root}: no {subset!r} video is long enough for one clip")
        return np.concatenate(out)

    def sample(self, subset: str, n: int, seed: int = 0) -> np.ndarray:
        """`n` clips drawn uniformly from all clips of a subset (fewer if it has fewer)."""
        videos = self.videos(subset)
        counts = np.array([len(self.raw_clips(v)) for v in videos])
        if counts.sum() == 0:
            raise ExportError(f"{self.root}: no {subset!r} video is long enough for one clip")
        rng = np.random.default_rng(seed)
        picks = np.sort(rng.choice(counts.sum(), size=min(n, counts.sum()), replace=False))
        which = np.searchsorted(np.cumsum(counts), picks, side="right")
        first = np.cumsum(counts) - counts
        return np.concatenate(
            [self.clips(videos[w], picks[which == w] - first[w]) for w in np.unique(which)]
        )


def encode(visual: Encoder, data: CacheClips, video: int, batch: int) -> np.ndarray:
    """Features `[n_clips, D]` of one video, encoded `batch` clips at a time."""
    raw = data.raw_clips(video)
    return np.concatenate(
        [visual(data.normalize(raw[i : i + batch])) for i in range(0, len(raw), batch)]
    )


@dataclass(frozen=True)
class Evaluation:
    """Detection figures of one model on a cache's test videos."""

    cache: str
    videos: int
    clips: int
    map_action: dict[str, float]  # tIoU ("0.5") -> mAP over classes 1..L
    map_video: dict[str, float]
    seconds: float

    def map_at(self, tiou: float) -> float:
        return self.map_action[str(tiou)]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def evaluate(
    visual: Encoder,
    sequence: Encoder,
    data: CacheClips,
    num_classes: int,
    threshold: float,
    batch: int = 8,
    progress: bool = False,
) -> Evaluation:
    """Detect actions in every test video and score them against the cached ground truth."""
    start = time.perf_counter()
    gt, pred, clips = {}, {}, 0
    videos = data.videos("test")
    for video in tqdm(videos, desc="evaluating", unit="video", disable=not progress):
        name = data.cache.samples[video].name
        gt[name] = data.segments(video)
        features = encode(visual, data, video, batch) if len(data.raw_clips(video)) else None
        if features is None:  # shorter than one clip: nothing can be detected
            pred[name] = np.zeros((0, 4))
            continue
        clips += len(features)
        probs = offline_clip_probs(features, data.spec, sequence)
        rows = []
        for seg in segment(probs, threshold):
            det = seg.to_detection(data.spec)
            rows.append([det["class_id"], det["start_frame"], det["end_frame"], det["confidence"]])
        pred[name] = np.array(rows, dtype=np.float64).reshape(-1, 4)
    m = evaluate_detection(gt, pred, num_classes=num_classes, tious=TIOUS)
    return Evaluation(
        cache=str(data.root),
        videos=len(videos),
        clips=clips,
        map_action={str(t): float(v) for t, v in zip(m.tiou, m.map_action, strict=True)},
        map_video={str(t): float(v) for t, v in zip(m.tiou, m.map_video, strict=True)},
        seconds=round(time.perf_counter() - start, 3),
    )


def evaluate_bundle(
    bundle: ModelBundle,
    cache: str | Path,
    threads: int = 0,
    batch: int = 8,
    progress: bool = False,
) -> Evaluation:
    """`evaluate` with the bundle's own encoders under ONNX Runtime."""
    return evaluate(
        ort_runner(bundle.path("visual_encoder"), threads),
        ort_runner(bundle.path("sequence_encoder"), threads),
        CacheClips(cache, bundle.clip),
        bundle.num_classes,
        bundle.activity_threshold,
        batch=batch,
        progress=progress,
    )


def seconds_per_clip(
    runs: dict[str, Encoder],
    clips: np.ndarray,
    batch: int,
    seconds: float = 1.0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median wall time per clip of each encoder on batches of `batch` clips.

    The encoders are timed in turns, one call each per round, for at least 5 rounds and about
    `seconds` per encoder, so that load from other processes slows all of them alike and their
    ratio stays fair. Give ONNX Runtime sessions `spinning=False` (`export.onnx.ort_runner`):
    busy-waiting threads of one would steal cores from the next. `clock` is injectable so that
    tests can time encoders on a clock of their own.
    """
    if len(clips) < batch:
        raise ValueError(
            f"need at least {batch} clips to time batches of {batch}, got {len(clips)}"
        )
    x = clips[:batch]
    for run in runs.values():  # warm-up: first calls allocate
        run(x)
        run(x)
    times: dict[str, list[float]] = {name: [] for name in runs}
    started = clock()
    rounds = 0
    while rounds < 5 or clock() - started < seconds * len(runs):
        for name, run in runs.items():
            t = clock()
            run(x)
            times[name].append(clock() - t)
        rounds += 1
    return {name: float(np.median(t)) / batch for name, t in times.items()}
