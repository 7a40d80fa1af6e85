"""Which frames a training or test example reads: classification clips and detection windows.

Pure index math over kept frames (the cache stores videos at the kept frame rate), so the
same functions serve the cache loader, the baselines and the benchmarks. No torch here.
"""

from __future__ import annotations

import numpy as np

from core.clip import ClipSpec, num_clips

N_TEST_CLIPS = 5  # the paper averages 5 uniformly sampled clips at test time


def clip_frames(start: int, spec: ClipSpec, n_kept: int) -> np.ndarray:
    """Kept-frame indices of the clip starting at `start`; a video shorter than a clip
    repeats its last frame."""
    if n_kept < 1:
        raise ValueError("a video needs at least one frame")
    return np.minimum(start + np.arange(spec.clip_len), n_kept - 1)


def classification_clip_starts(
    n_kept: int, spec: ClipSpec, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Training (`rng` given): one random clip start. Test: `N_TEST_CLIPS` uniform starts."""
    last = max(n_kept - spec.clip_len, 0)
    if rng is not None:
        return np.array([rng.integers(0, last + 1)])
    return np.round(np.linspace(0, last, N_TEST_CLIPS)).astype(np.intp)


def window_clip_starts(
    n_kept: int, spec: ClipSpec, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Kept-frame starts of the clips a detection example reads.

    Training (`rng` given): a window of `spec.window` clips `clip_step` apart, starting at a
    random kept frame (not only on the clip grid, as the released code), so every offset is
    seen; with `spec.person_crop`, at a random clip of the grid, since the cache holds each
    grid clip cropped to its own box (core.foreground) and a window across two boxes would
    show the network crops it never sees at serving time. Test (`rng` None): every clip of
    the video on the grid, for offline windows.
    """
    if rng is None:
        return np.arange(num_clips(n_kept, spec)) * spec.clip_step
    span = (spec.window - 1) * spec.clip_step + spec.clip_len
    if n_kept < span:
        raise ValueError(f"video of {n_kept} kept frames is shorter than a window ({span})")
    if spec.person_crop:
        start = spec.clip_step * rng.integers(0, (n_kept - span) // spec.clip_step + 1)
    else:
        start = rng.integers(0, n_kept - span + 1)
    return start + np.arange(spec.window) * spec.clip_step


def clip_labels(segments: np.ndarray, clip_starts: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """Label of each clip: the action covering more than half of it, else 0 (background).

    `segments` are label-file rows `label, start, end[, ...]` in source frames. The overlap is
    the released code's: clip frames `[f0, f_last - 1]` against `[start, end - 1]`, divided by
    `f_last - f0`, where `f = kept * downsample`. Where ground truth overlaps itself, the
    action with the largest overlap wins.
    """
    starts = np.asarray(clip_starts, dtype=np.int64)
    if len(segments) == 0 or len(starts) == 0:
        return np.zeros(len(starts), dtype=np.int64)
    seg = np.asarray(segments, dtype=np.int64)
    f0 = starts * spec.downsample
    f_last = (starts + spec.clip_len - 1) * spec.downsample
    lo = np.maximum(f0[:, None], seg[None, :, 1])
    hi = np.minimum((f_last - 1)[:, None], seg[None, :, 2] - 1)
    ratio = np.maximum(hi - lo, 0) / max(spec.clip_len - 1, 1) / spec.downsample
    best = ratio.argmax(axis=1)
    covered = ratio[np.arange(len(starts)), best] > 0.5
    return np.where(covered, seg[best, 0], 0)


def class_weights(labels: np.ndarray, n_classes: int, background_weight: float) -> np.ndarray:
    """Cross-entropy weights `[n_classes + 1]` (index 0 = background).

    Actions get inverse-frequency weights scaled so that their clip-weighted mean is 1; a class
    absent from training keeps weight 1. Background gets `background_weight` (0.5 in the
    released code), since it dominates long videos.
    """
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if labels.size and (labels.min() < 0 or labels.max() > n_classes):
        raise ValueError(f"labels must be in [0, {n_classes}]")
    counts = np.bincount(labels, minlength=n_classes + 1)[1:].astype(np.float64)
    weights = np.ones(n_classes + 1)
    present = counts > 0
    if present.any():
        weights[1:][present] = counts[present].sum() / (present.sum() * counts[present])
    weights[0] = background_weight
    return weights.astype(np.float32)
