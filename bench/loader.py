"""Training samples per second: the gd-prep cache against decoding files per sample.

The released code decodes every training sample from the dataset files: one PNG per depth
frame, the RGB video up to the clip, the skeleton text file. `gd-prep` decodes each video
once into memory-mapped arrays at the kept rate and model size. Both loaders here produce the
same classification example (one random clip of depth, RGB and JJD), measured in the same run.

Run: .venv/bin/python bench/loader.py [--samples 60] [--seconds 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from core.clip import ClipSpec, DepthPreprocessor
from synth.cli import main as gd_synth
from training.cache import Cache
from training.datasets import NTUDataset
from training.datasets.media import depth_frame_paths
from training.datasets.skeleton_file import main_bodies, read_ntu_skeleton
from training.prep import PrepSettings, prepare
from training.samplers import classification_clip_starts, clip_frames
from training.skeleton_features import jjd

SIZE = (112, 112)


def from_files(sample, spec: ClipSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The released code's way: decode the clip's frames from the dataset files."""
    paths = depth_frame_paths(sample.depth_dir)
    n_kept = len(paths) // spec.downsample
    kept = clip_frames(classification_clip_starts(n_kept, spec, rng)[0], spec, n_kept)
    source = kept * spec.downsample
    depth = np.stack([cv2.imread(str(paths[i]), cv2.IMREAD_UNCHANGED) for i in source])
    depth = DepthPreprocessor(spec, *depth.shape[1:])(depth)
    capture = cv2.VideoCapture(str(sample.rgb_path))
    rgb, wanted = [], set(source.tolist())
    for i in range(int(source.max()) + 1):
        ok, frame = capture.read()
        if not ok:
            break
        if i in wanted:
            frame = cv2.resize(frame, SIZE[::-1], interpolation=cv2.INTER_AREA)
            rgb.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    joints = main_bodies(read_ntu_skeleton(sample.skeleton_path))
    return {"depth": depth, "rgb": np.stack(rgb), "jjd": jjd(joints[source])}


def from_cache(cache: Cache, i: int, pre: DepthPreprocessor, rng) -> dict[str, np.ndarray]:
    s = cache.samples[i]
    kept = clip_frames(classification_clip_starts(s.length, pre.spec, rng)[0], pre.spec, s.length)
    return {
        "depth": pre(cache.frames("depth", i, kept)),
        "rgb": cache.frames("rgb", i, kept),
        "jjd": cache.frames("jjd", i, kept),
    }


def rate(load, n_items: int, seconds: float) -> float:
    rng = np.random.default_rng(0)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        load(int(rng.integers(n_items)), rng)
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root, cache_dir = Path(tmp) / "ntu", Path(tmp) / "cache"
        gd_synth(["classification", "--out", str(root), "--samples", str(args.samples)])
        settings = PrepSettings(
            dataset="ntu", root=str(root), modalities=("depth", "rgb", "jjd"),
            height=SIZE[0], width=SIZE[1],
        )  # fmt: skip
        prepare(settings, cache_dir, workers=2)
        cache = Cache(cache_dir)
        samples = [*NTUDataset(root, subset="train"), *NTUDataset(root, subset="test")]
        spec = ClipSpec(height=SIZE[0], width=SIZE[1])
        pre = DepthPreprocessor(spec, *SIZE)
        a = from_files(samples[0], spec, np.random.default_rng(1))
        b = from_cache(cache, cache.index[samples[0].name], pre, np.random.default_rng(1))
        assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
        files = rate(lambda i, rng: from_files(samples[i], spec, rng), len(samples), args.seconds)
        cached = rate(lambda i, rng: from_cache(cache, i, pre, rng), len(cache), args.seconds)
    print(f"{args.samples} NTU-layout samples (96x128 depth, 120x160 RGB), clip of 10 kept frames")
    print("at 112x112 (depth + RGB + JJD), one process:")
    print(f"  decode files per sample (released code's way): {files:8.1f} samples/s")
    print(f"  gd-prep cache (memory-mapped):                 {cached:8.1f} samples/s")
    print(f"  speed-up: {cached / files:.1f}x")


if __name__ == "__main__":
    main()
