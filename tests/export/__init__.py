"""Tiny checkpoints and caches for the export tests, and one shared CLI export."""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from core.clip import ClipSpec
from training.cache import CacheWriter
from training.checkpoint import Architecture, Checkpoint, build_network, save_checkpoint

# clip c covers kept frames [4c, 4c + 4), source frames [12c, 12c + 11]
SPEC = ClipSpec(
    clip_len=4, clip_step=4, window=4, window_step=2, height=32, width=32, mean=0.5, std=0.25
)
ARCH = Architecture("depth", clip_len=4, width=4, num_classes=2, hidden_size=8)
CLASSES = ["background", "drink", "fall"]


def make_checkpoint(
    path: Path, task: str = "detection", provenance: dict | None = None, causal: bool = False
) -> Path:
    torch.manual_seed(0)
    arch = (
        dataclasses.replace(ARCH, causal=causal)
        if task == "detection"
        else Architecture("depth", 4, 4, 2)
    )
    net = build_network(task, arch)
    ckpt = Checkpoint(
        task=task, architecture=arch, clip=SPEC,
        classes=CLASSES if task == "detection" else CLASSES[1:], model=net.state_dict(),
        provenance=provenance or {"seed": 0}, metrics={"val_map": 0.25}, state={},
    )  # fmt: skip
    save_checkpoint(path, ckpt)
    return path


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


@functools.cache
def exported(root: Path) -> tuple[Path, Path, Path]:
    """(checkpoint, cache, bundle): the bundle written by the `gd-export onnx` command line,
    once per test session (the export takes seconds)."""
    ckpt = make_checkpoint(root / "model.pt")
    cache = make_cache(root / "cache", random_videos())
    bundle = root / "bundle"
    result = subprocess.run(
        [sys.executable, "-m", "export.cli", "onnx", "--checkpoint", str(ckpt),
         "--cache", str(cache), "--out", str(bundle), "--name", "tiny", "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return ckpt, cache, bundle
