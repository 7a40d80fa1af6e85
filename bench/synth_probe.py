"""Is the synthetic benchmark honest? Skeleton vs depth, learned from a few videos per class.

Generates NTU-like classification samples of the source classes (cross-subject: subjects
1..train for training, the rest for test) and fits one linear classifier (ridge, one-vs-rest)
on each of:
  skeleton   joint-joint distances (JJD) of the paper's 11 joints per body, 8 instants;
  depth      the raw depth video pooled to 24x32 pixels, 8 instants;
  depth crop NTU's masked depth cropped to the person and centred on their depth, 32x24x8.
The paper's question needs skeleton clearly above depth, and depth clearly above chance.

    python bench/synth_probe.py --subjects 8 --train 4 --workers 2
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from synth.generate import SOURCE_CLASSES, classification_sample, generate_many

KEEP = np.array([1, 4, 6, 8, 10, 12, 14, 16, 18, 20, 21]) - 1  # the paper's joints (1-based)
INSTANTS = 8


def _jjd(joints: np.ndarray) -> np.ndarray:
    """[8, B, 25, 3] -> distances of all pairs of kept joints of both bodies."""
    if joints.shape[1] == 1:
        joints = np.concatenate([joints, joints], 1)  # a missing second body copies the first
    kept = joints[:, :, KEEP].reshape(INSTANTS, -1, 3)
    i, j = np.triu_indices(kept.shape[1], 1)
    return np.linalg.norm(kept[:, i] - kept[:, j], axis=-1).ravel()


def _resize(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    size = (width, height)
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]).ravel()


def _person_crop(depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask.any(0))
    crop = (depth * mask)[:, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    centre = np.median(crop[crop > 0])
    return _resize(np.where(crop > 0, (crop - centre) / 500.0, 0.0), 24, 32)


def features(**job) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    rec = classification_sample(**job)
    _, start, end = rec.segments[0]
    frames = np.linspace(start, end, INSTANTS).round().astype(int)
    depth, mask = rec.depth[frames], rec.body_mask[frames]
    raw = _resize(depth.astype(np.float32) / 4500.0, 32, 24)
    return _jjd(rec.joints[frames]), raw, _person_crop(depth, mask), job["action"], job["subject"]


def ridge_accuracy(x_train, y_train, x_test, y_test, n_classes: int, lam: float = 10.0) -> float:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_test - mean) / std
    targets = np.eye(n_classes)[y_train - 1]
    w = a.T @ np.linalg.solve(a @ a.T + lam * np.eye(len(a)), targets)  # dual: few samples
    return float(((b @ w).argmax(1) + 1 == y_test).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--train", type=int, default=4, help="training subjects (the rest test)")
    parser.add_argument("--difficulty", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    n_classes = len(SOURCE_CLASSES)
    jobs = [
        dict(
            action=a,
            subject=s,
            camera=1 + (a + s) % 3,
            replication=1 + (a * s) % 2,
            setup=1 + s % 4,
            seed=s,
            difficulty=args.difficulty,
        )
        for s in range(1, args.subjects + 1)
        for a in range(1, n_classes + 1)
    ]
    t0 = time.time()
    out = list(generate_many(features, jobs, workers=args.workers, desc="samples"))
    label, subject = np.array([o[3] for o in out]), np.array([o[4] for o in out])
    train, test = subject <= args.train, subject > args.train
    print(
        f"{len(jobs)} samples, {n_classes} classes, difficulty {args.difficulty}, "
        f"{time.time() - t0:.0f} s; train: subjects 1..{args.train} ({train.sum()} videos), "
        f"test: {test.sum()} videos"
    )
    print(f"chance      {1 / n_classes:.3f}")
    for k, name in enumerate(("skeleton", "depth", "depth crop")):
        x = np.stack([o[k] for o in out])
        acc = ridge_accuracy(x[train], label[train], x[test], label[test], n_classes)
        print(f"{name:11} {acc:.3f}")


if __name__ == "__main__":
    main()
