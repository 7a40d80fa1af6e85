"""The export tests' tiny clip spec, classes and caches (torch-free: the fast tier collects
this package; the torch side is tests/helpers/export_models.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.clip import ClipSpec
from training.cache import CacheWriter

# clip c covers kept frames [4c, 4c + 4), source frames [12c, 12c + 11]
SPEC = ClipSpec(
    clip_len=4, clip_step=4, window=4, window_step=2, height=32, width=32, mean=0.5, std=0.25
)
CLASSES = ["background", "drink", "fall"]


def make_cache(root: Path, videos: dict[str, tuple[str, np.ndarray, list]]) -> Path:
    """`videos`: name -> (subset, uint16 depth [T, H, W], segments rows)."""
    writer = CacheWriter(root, ["depth"])
    for name, (subset, depth, segments) in videos.items():
        writer.write_sample(name, {"depth": depth}, {"subset": subset, "segments": segments})
    meta = {"clip": SPEC.to_dict(), "stats": {"depth": {"mean": SPEC.mean, "std": SPEC.std}}}
    writer.pack(list(videos), meta)
    return root


def random_videos(seed: int = 0) -> dict[str, tuple[str, np.ndarray, list]]:
    """Noisy depth with holes, two train and two test videos, one shorter than a window."""
    rng = np.random.default_rng(seed)
    videos = {}
    for name, subset, n in [("t0", "train", 40), ("t1", "train", 24), ("v0", "test", 40),
                            ("v1", "test", 10)]:  # fmt: skip
        depth = rng.integers(500, 4500, size=(n, SPEC.height, SPEC.width)).astype(np.uint16)
        depth[rng.random(depth.shape) < 0.1] = 0
        videos[name] = (subset, depth, [[1, 24, 59, 1.0], [2, 72, 107, 1.0]][: 1 + (n > 30)])
    return videos
