"""Scoring trained networks: classification accuracy (5 uniform clips) and detection mAP
through `core`, with exactly the server's offline post-processing.

Detection on one test video: every clip on the grid (`core.clip.video_clips` of the cached
frames, normalized as the server does), the visual encoder on each clip once, then
`core.postprocess.offline_clip_probs` (windows of T_w clips every s_w, averaged) with the torch
sequence encoder, `core.postprocess.segment` at the activity threshold, and
`Segment.to_detection` for source frames. Predictions are written in the label format and
scored with `core.metrics.evaluate_detection` (the PKU-MMD protocol).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.clip import ClipSpec
from core.labels import write_label_file
from core.metrics import DEFAULT_TIOUS, classification_accuracy, evaluate_detection
from core.postprocess import offline_clip_probs, segment
from training.cache import Cache
from training.checkpoint import load_checkpoint
from training.config import Config
from training.data import ClassificationClips, Normalizer, video_inputs
from training.samplers import clip_labels, window_clip_starts

ENCODE_BATCH = 64  # clips per visual-encoder call at test time


def _batched(fn, x: np.ndarray, device: torch.device, size: int = ENCODE_BATCH) -> np.ndarray:
    outs = [fn(torch.from_numpy(x[i : i + size]).to(device)).cpu() for i in range(0, len(x), size)]
    return torch.cat(outs).numpy()


@torch.inference_mode()
def classification_probs(
    nets: Mapping[str, nn.Module], data: ClassificationClips, device: torch.device, batch: int = 16
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Test-time class probabilities `{modality: [N, L]}` (mean softmax over each sample's 5
    uniform clips) and labels `[N]`, `batch` samples per forward."""
    modes = {m: net.training for m, net in nets.items()}
    for net in nets.values():
        net.eval()
    probs: dict[str, list[np.ndarray]] = {m: [] for m in nets}
    labels = []
    for first in range(0, len(data), batch):
        items = [data[i] for i in range(first, min(first + batch, len(data)))]
        labels += [item["label"] for item in items]
        for m, net in nets.items():
            clips = torch.from_numpy(np.stack([item["inputs"][m] for item in items])).to(device)
            logits = net(clips.flatten(0, 1))[0].unflatten(0, clips.shape[:2])
            probs[m].append(logits.softmax(-1).mean(1).cpu().numpy())
    for m, training in modes.items():
        nets[m].train(training)
    return {m: np.concatenate(p) for m, p in probs.items()}, np.array(labels)


def classification_accuracies(
    nets: Mapping[str, nn.Module], data: ClassificationClips, device: torch.device
) -> dict[str, float]:
    probs, labels = classification_probs(nets, data, device)
    return {m: classification_accuracy(p, labels) for m, p in probs.items()}


@torch.inference_mode()
def video_probs(
    detector: nn.Module,
    cache: Cache,
    sample: int,
    norm: Normalizer,
    spec: ClipSpec,
    device: torch.device,
) -> np.ndarray:
    """Per-clip probabilities `[n_clips, L+1]` of one video, offline (empty if no clip fits)."""
    clips = video_inputs(cache, sample, norm, spec)
    if len(clips) == 0:
        return np.zeros((0, detector.sequence.num_classes))
    was_training = detector.training
    detector.eval()
    features = _batched(detector.encoder, clips, device)

    def run_sequence(windows: np.ndarray) -> np.ndarray:
        return _batched(lambda w: detector.sequence(w)[0].softmax(-1), windows, device)

    probs = offline_clip_probs(features, spec, run_sequence)
    detector.train(was_training)
    return probs


def grid_labels(cache: Cache, sample: int, spec: ClipSpec, n_clips: int) -> np.ndarray:
    """Ground-truth label of every grid clip of a video (0 = background)."""
    segments = np.asarray(cache.samples[sample].info["segments"]).reshape(-1, 4)
    starts = window_clip_starts(cache.samples[sample].length, spec)[:n_clips]
    return clip_labels(segments, starts, spec)


def detection_rows(probs: np.ndarray, spec: ClipSpec, threshold: float) -> np.ndarray:
    """Label-file rows `label, start, end, confidence` (source frames) of one video."""
    if len(probs) == 0:
        return np.zeros((0, 4))
    rows = []
    for seg in segment(probs, threshold):
        d = seg.to_detection(spec)
        rows.append([d["class_id"], d["start_frame"], d["end_frame"], d["confidence"]])
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def detect(
    detector: nn.Module,
    cache: Cache,
    samples: Sequence[int],
    modality: str,
    spec: ClipSpec,
    device: torch.device,
    threshold: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Detections `{video: rows}` and per-clip probabilities `{video: [n_clips, L+1]}`."""
    norm = Normalizer(cache, modality, spec)
    rows, probs = {}, {}
    for i in samples:
        name = cache.samples[i].name
        probs[name] = video_probs(detector, cache, i, norm, spec, device)
        rows[name] = detection_rows(probs[name], spec, threshold)
    return rows, probs


def clip_accuracy(cache: Cache, probs: dict[str, np.ndarray], spec: ClipSpec) -> float:
    """Fraction of grid clips (background included) whose argmax is their label."""
    correct = total = 0
    for name, p in probs.items():
        if len(p) == 0:
            continue
        labels = grid_labels(cache, cache.index[name], spec, len(p))
        correct += int((p.argmax(1) == labels).sum())
        total += len(p)
    return correct / max(total, 1)


def fit_figures(cache: Cache, probs: dict[str, np.ndarray], spec: ClipSpec) -> dict[str, float]:
    """How right (clip accuracy) and how sure (mean top probability) a detector is."""
    top = [p.max(1) for p in probs.values() if len(p)]
    return {
        "clip_accuracy": clip_accuracy(cache, probs, spec),
        "mean_top_probability": float(np.concatenate(top).mean()) if top else 0.0,
    }


def agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Fraction of clips where two detectors' per-clip probabilities (same videos, same clip
    grid) have the same argmax: how far a student follows a teacher on unseen videos."""
    same = total = 0
    for name, p in a.items():
        if p.shape != b[name].shape:
            raise ValueError(f"{name}: clip grids differ, {p.shape} vs {b[name].shape}")
        same += int((p.argmax(1) == b[name].argmax(1)).sum())
        total += len(p)
    return same / max(total, 1)


def ground_truth(cache: Cache, samples: Sequence[int]) -> dict[str, np.ndarray]:
    return {
        cache.samples[i].name: np.asarray(cache.samples[i].info["segments"], np.float64).reshape(
            -1, 4
        )
        for i in samples
    }


def map_figures(gt: dict, pred: dict, num_classes: int) -> dict:
    metrics = evaluate_detection(gt, pred, num_classes=num_classes, tious=DEFAULT_TIOUS)
    full = metrics.as_dict()
    return {
        "map_action": full["map_action"],
        "map_video": full["map_video"],
        "ap_per_class": full["ap_per_class"],  # tIoU -> [L], class 1 first
        "ap_2d": full["ap_2d"],
        "num_videos": full["num_videos"],
        "num_instances": full["num_instances"],
        "num_proposals": full["num_proposals"],
    }


def write_predictions(folder: Path, rows: dict[str, np.ndarray]) -> None:
    """One label file per video (`gd-eval --pred folder` reads them)."""
    for name, r in rows.items():
        write_label_file(folder / f"{name}.txt", r)


def trivial_baseline(
    train_segments: Sequence[np.ndarray],
    test_lengths: dict[str, int],
    spec: ClipSpec,
    num_classes: int,
) -> dict[str, np.ndarray]:
    """A detector that sees nothing: back-to-back segments of the mean training action length
    over each test video, each proposed for every class with confidence = the class's training
    frequency. What a model must beat to have learned where and what the actions are."""
    rows = np.concatenate([np.asarray(s).reshape(-1, 4) for s in train_segments])
    if len(rows) == 0:
        return {name: np.zeros((0, 4)) for name in test_lengths}
    length = max(1, round(float(np.mean(rows[:, 2] - rows[:, 1]))))
    freq = np.bincount(rows[:, 0].astype(int), minlength=num_classes + 1)[1:] / len(rows)
    out = {}
    for name, kept in test_lengths.items():
        frames = kept * spec.downsample
        starts = np.arange(0, max(frames - length, 0) + 1, length)
        out[name] = np.array(
            [[c + 1, s, s + length - 1, freq[c]] for s in starts for c in range(num_classes)],
            dtype=np.float64,
        ).reshape(-1, 4)
    return out


def other_config_than_trained(cfg: Config, workdir: Path) -> str | None:
    """Why `gd-train evaluate` with `cfg` must not overwrite the figures of the detector in
    `workdir`, or None. Evaluation rewrites metrics.json and the checkpoint's metrics, so a
    target section other than the detector's own (e.g. --preset paper on a quick run: another
    threshold, other modalities) would silently replace them with figures of another setting."""
    path = Path(workdir) / "detect" / f"{cfg.target.test_modality}.pt"
    if not path.is_file():
        return None  # run_evaluate names the missing checkpoint
    provenance = load_checkpoint(path).provenance
    trained, given = provenance.get("config", {}).get("target", {}), cfg.to_dict()["target"]
    changed = [
        f"target.{k}: {trained.get(k)!r} -> {given.get(k)!r}"
        for k in sorted(set(trained) | set(given))
        if trained.get(k) != given.get(k)
    ]
    if not changed:
        return None
    command = " ".join(provenance.get("command") or [])
    return (
        f"{path} was trained with another target config ({'; '.join(changed)}); evaluating "
        f"with this one would overwrite {Path(workdir) / 'metrics.json'} with figures of another "
        f"setting. Give the preset and overrides it was trained with ({command}), or --force"
    )
