"""Skeleton features JJD, JJV and JLD (paper Sec. 5, after [9, 24]; design.md §5).

Per body keep 11 Kinect v2 joints (1-based: spine base, head, left elbow, left hand, right
elbow, right hand, left knee, left foot, right knee, right foot, spine shoulder), as the
released code does; two bodies give 22 points (the readers already made body 2 a copy of
body 1 where it is absent).

- JJD: distance |p_i - p_j| for every pair i <= j of the 22 points: 253 values. The pairs
  i == j (always 0) are kept, as the released code's loop `for j in range(i, n)` does, so
  the dimensions match its features; a per-feature normalization must guard a zero std.
- JJV: the vector p_i - p_j of the same pairs, (x, y, z) per pair: 759 values.
- JLD: for each point k and each line through two other points a < b of the same body, the
  distance from p_k to that line: 2 bodies x 11 x C(10, 2) = 990 values. A line through two
  coincident points degenerates to the point (distance |p_k - p_a|).

Functions take joints [T, 2, 25, 3] and return float32 [T, D], vectorized over frames.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import numpy as np

KEPT_JOINTS = (1, 4, 6, 8, 10, 12, 14, 16, 18, 20, 21)  # 1-based Kinect v2 joint numbers
N_KEPT = len(KEPT_JOINTS)
N_POINTS = 2 * N_KEPT

_PAIR_I, _PAIR_J = np.triu_indices(N_POINTS)  # i <= j
_LINES = np.array(
    [
        (body + k, body + a, body + b)
        for body in (0, N_KEPT)
        for k in range(N_KEPT)
        for a, b in combinations([j for j in range(N_KEPT) if j != k], 2)
    ]
)


def kept_points(joints: np.ndarray) -> np.ndarray:
    """float64 [T, 22, 3]: the 11 kept joints of body 1, then of body 2."""
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 4 or joints.shape[1:] != (2, 25, 3):
        raise ValueError(f"joints must be [T, 2, 25, 3], got {joints.shape}")
    kept = joints[:, :, [j - 1 for j in KEPT_JOINTS]]
    return kept.reshape(len(joints), N_POINTS, 3)


def jjv(joints: np.ndarray) -> np.ndarray:
    """Joint-joint vectors p_i - p_j, i <= j: float32 [T, 759]."""
    points = kept_points(joints)
    vectors = points[:, _PAIR_I] - points[:, _PAIR_J]
    return vectors.reshape(len(points), -1).astype(np.float32)


def jjd(joints: np.ndarray) -> np.ndarray:
    """Joint-joint distances |p_i - p_j|, i <= j: float32 [T, 253]."""
    squared = _squared_distances(kept_points(joints))
    return np.sqrt(squared[:, _PAIR_I, _PAIR_J]).astype(np.float32)


def jld(joints: np.ndarray) -> np.ndarray:
    """Joint-line distances within each body: float32 [T, 990].

    From squared distances alone (fast: no [T, 990, 3] temporaries): with w = p_k - p_a and
    d = p_b - p_a, |w x d|^2 = |w|^2 |d|^2 - (w.d)^2 and w.d = (|w|^2 + |d|^2 - |p_k - p_b|^2)/2.
    """
    squared = _squared_distances(kept_points(joints))
    k, a, b = _LINES.T
    ka, kb, ab = squared[:, k, a], squared[:, k, b], squared[:, a, b]
    dot = (ka + ab - kb) / 2
    cross = np.maximum(ka * ab - dot**2, 0.0)
    degenerate = ab < 1e-18  # a and b coincide: the distance to the point
    distances = np.sqrt(np.where(degenerate, ka, cross / np.where(degenerate, 1.0, ab)))
    return distances.astype(np.float32)


def _squared_distances(points: np.ndarray) -> np.ndarray:
    """[T, 22, 22] squared distances between the points of each frame."""
    return np.sum((points[:, :, None] - points[:, None]) ** 2, axis=-1)


FEATURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"jjd": jjd, "jjv": jjv, "jld": jld}
DIMS = {"jjd": len(_PAIR_I), "jjv": 3 * len(_PAIR_I), "jld": len(_LINES)}
