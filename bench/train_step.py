"""Training-step speed of the quick config: clips/s of one detection step (forward, backward,
optimizer step, data loading included) for the depth student with graph distillation over K
modalities, against a plain depth-only step measured in the same run.

    python bench/train_step.py [--steps 10] [--profile] [key=value ...]

Runs on a random cache in a temporary folder (64x64, the quick preset's shapes), so it needs
no dataset. `--profile` prints the top operators of the distilled step (torch.profiler).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core.clip import ClipSpec
from training import distributed, skeleton_features
from training.cache import DTYPES, SKELETON_MODALITIES, CacheWriter
from training.config import load_config
from training.data import EpochBatches, loader, to_device
from training.loop import make_optimizers, place
from training.loss import compute_loss
from training.stages import build_detect

VIDEO_FRAMES = 400  # kept frames per random video


def random_cache(root: Path, size: int, modalities: list[str], videos: int = 4) -> None:
    """A PKU-MMD-like cache of random frames (no dataset needed)."""
    rng = np.random.default_rng(0)
    writer = CacheWriter(root, modalities)
    body = np.zeros((1, 2, 25, 3), np.float32)
    dims = {m: getattr(skeleton_features, m)(body).shape[-1] for m in SKELETON_MODALITIES}
    shapes = {"depth": (size, size), "rgb": (size, size, 3), "flow": (size, size, 2), **{
        m: (d,) for m, d in dims.items()}}  # fmt: skip
    names = []
    for v in range(videos):
        name = f"{v + 1:04d}-M"
        starts = np.arange(30, VIDEO_FRAMES * 3 - 120, 150)
        segments = [[1 + i % 5, int(s), int(s) + 90, 2] for i, s in enumerate(starts)]
        arrays = {
            m: rng.integers(500, 4500, (VIDEO_FRAMES, *shapes[m])).astype(DTYPES[m])
            if m in ("depth", "rgb")
            else rng.normal(0, 1, (VIDEO_FRAMES, *shapes[m])).astype(DTYPES[m])
            for m in modalities
        }
        writer.write_sample(
            name, arrays, {"subset": "train" if v else "test", "segments": segments}
        )
        names.append(name)
    spec = ClipSpec(height=size, width=size, mean=0.5, std=0.3)
    stats = {m: {"mean": [0.0] * shapes[m][-1], "std": [1.0] * shapes[m][-1]} for m in modalities}
    stats["depth"] = {"mean": 0.5, "std": 0.3}
    writer.pack(names, {"settings": {}, "clip": spec.to_dict(), "stats": stats})


def clips_per_second(cfg, root: Path, steps: int, profile: bool = False) -> float:
    dist = distributed.Dist(0, 1, 1, torch.device("cpu"))
    stage = build_detect(cfg, root)[-1]
    place(stage, dist)
    optimizers = make_optimizers(stage)
    stage.nets.train()
    batches = EpochBatches(len(stage.train_set), cfg.target.batch_size, 0).shards(0)
    batches = (batches * (steps // len(batches) + 2))[: steps + 2]

    def step(batch: dict) -> None:
        loss, _ = compute_loss(stage, to_device(batch, dist.device))
        for o in optimizers:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in optimizers:
            o.step()

    it = loader(stage.train_set, batches)
    for _ in range(2):  # warm-up
        step(next(it))
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            step(next(it))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        return 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        step(next(it))
    clips = steps * cfg.target.batch_size * cfg.clip.window
    return clips / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--profile", action="store_true")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    torch.set_num_threads(2)
    base = ["transfer=false", "target.val_fraction=0", "train.progress=false"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = load_config("quick", None, [*base, *args.overrides])
        size = int(cfg.prep.size.split("x")[0])
        modalities = cfg.target.modalities
        random_cache(root / "cache" / "pku", size, modalities)
        runs = {
            "depth alone (baseline)": [*base, *args.overrides, "target.modalities=[depth]"],
            f"depth + graph distillation over {modalities}": [*base, *args.overrides],
        }
        print(f"quick config, {size}x{size}, width {cfg.model.width}, batch "
              f"{cfg.target.batch_size} windows x {cfg.clip.window} clips, 2 threads")  # fmt: skip
        for name, overrides in runs.items():
            cfg = load_config("quick", None, overrides)
            rate = clips_per_second(cfg, root, args.steps, args.profile and "graph" in name)
            if not args.profile:
                print(f"{name:55s} {rate:7.1f} clips/s (student clips)")


if __name__ == "__main__":
    main()
