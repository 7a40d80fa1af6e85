"""Per-frame cost of depth preprocessing (core.clip.DepthPreprocessor), against baselines.

Every frame of every stream goes through this, so it is measured per frame at camera sizes:
- `core (LUT + reduceat)`: what the server, clients and training use, with the spec's fit
  `stretch`; `crop` and `pad`, which keep the aspect ratio, are called in turn with stretch on
  every frame (median per frame) and reported with their ratio to it (the cost of keeping the
  aspect ratio);
- `float numpy`: the same invalid-aware min-pooling written the obvious way (float mask, inf);
- `cv2.resize nearest`: the cheapest possible resize (not invalid-aware: it drops pixels
  instead of keeping the nearest surface), as a floor.

Run: .venv/bin/python bench/preprocess.py
"""

from __future__ import annotations

import dataclasses
import time

import cv2
import numpy as np

from core.clip import FITS, ClipSpec, DepthPreprocessor


def float_numpy(frame: np.ndarray, spec: ClipSpec) -> np.ndarray:
    d = frame.astype(np.float32)
    d[(d < spec.depth_min_mm) | (d > spec.depth_max_mm)] = np.inf
    h, w = d.shape
    d = np.minimum.reduceat(d, (np.arange(spec.height) * h) // spec.height, axis=0)
    d = np.minimum.reduceat(d, (np.arange(spec.width) * w) // spec.width, axis=1)
    d[np.isinf(d)] = 0
    return (d / spec.depth_max_mm - spec.mean) / spec.std


def cv2_nearest(frame: np.ndarray, spec: ClipSpec) -> np.ndarray:
    d = cv2.resize(frame, (spec.width, spec.height), interpolation=cv2.INTER_NEAREST)
    return (d.astype(np.float32) / spec.depth_max_mm - spec.mean) / spec.std


def per_frame_ms(fn, frames: np.ndarray, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for f in frames:
            fn(f)
        best = min(best, (time.perf_counter() - t) / len(frames))
    return best * 1e3


def interleaved_ms(fns: list, frames: np.ndarray, repeats: int = 7) -> list[float]:
    """Median ms per frame of each of `fns`, called in turn on every frame, so that load from
    other processes hits them alike (their ratios are what is reported)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for f in frames:
            for k, fn in enumerate(fns):
                t = time.perf_counter()
                fn(f)
                times[k].append(time.perf_counter() - t)
    return [float(np.median(t)) * 1e3 for t in times]


def main() -> None:
    cv2.setNumThreads(1)
    spec = ClipSpec(height=112, width=112)
    rng = np.random.default_rng(0)
    print(f"output {spec.height}x{spec.width}; ms per frame (best of 5), one thread")
    print(
        f"{'input':>9} | {'core':>7} | {'float numpy':>11} | {'cv2 nearest':>11} | "
        f"{'speed-up':<20} | in turn: {'stretch':>7} | {'crop':>7} | {'pad':>7} | ratios"
    )
    for h, w in [(480, 640), (480, 848), (240, 320), (424, 512), (112, 112)]:
        frames = rng.integers(300, 6000, size=(60, h, w)).astype(np.uint16)
        frames[rng.random(frames.shape) < 0.1] = 0
        pre = DepthPreprocessor(spec, h, w)
        pre(frames[0])  # builds the lookup tables once
        np.testing.assert_allclose(pre(frames[0]), float_numpy(frames[0], spec), atol=1e-6)
        core = per_frame_ms(pre, frames)
        plain = per_frame_ms(lambda f: float_numpy(f, spec), frames)
        nearest = per_frame_ms(lambda f: cv2_nearest(f, spec), frames)
        stretch, crop, pad = interleaved_ms(
            [DepthPreprocessor(dataclasses.replace(spec, fit=f), h, w) for f in FITS], frames
        )
        print(
            f"{h:>4}x{w:<4} | {core:7.3f} | {plain:11.3f} | {nearest:11.3f} | "
            f"{plain / core:4.1f}x vs float numpy |          {stretch:7.3f} | {crop:7.3f} | "
            f"{pad:7.3f} | {crop / stretch:.2f}, {pad / stretch:.2f}"
        )
    frames = rng.integers(300, 6000, size=(10, 480, 640)).astype(np.uint16)
    pre = DepthPreprocessor(spec, 480, 640)
    t = time.perf_counter()
    for _ in range(20):
        pre(frames)
    batch = (time.perf_counter() - t) / 200 * 1e3
    print(f"batch of 10 480x640 frames: {batch:.3f} ms per frame")


if __name__ == "__main__":
    main()
