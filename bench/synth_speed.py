"""Generator speed in ms per frame (one process), with the motion-only cost as the baseline.

python bench/synth_speed.py
"""

from __future__ import annotations

import time

import numpy as np

from synth.actions import CATALOGUE
from synth.generate import (
    COLOR_SIZE,
    DEPTH_SIZE,
    SOURCE_CLASSES,
    classification_sample,
    detection_video,
)
from synth.performance import perform
from synth.subjects import subject_profile


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    classification_sample(1, 1, 1)  # warm up imports and caches
    n_samples = 12
    seconds, frames = 0.0, 0
    for i in range(n_samples):
        dt, rec = _timed(lambda i=i: classification_sample(1 + i, 1 + i % 5, 1 + i % 3, seed=i))
        seconds, frames = seconds + dt, frames + rec.num_frames
    rng = np.random.default_rng(0)
    motion, motion_frames = 0.0, 0
    for i in range(n_samples):
        act = CATALOGUE[SOURCE_CLASSES[i]]
        partner = subject_profile(2) if act.two_person else None
        dt, perf = _timed(
            lambda a=act, p=partner: perform([(a, 1)], subject_profile(1), rng, partner=p)
        )
        motion, motion_frames = motion + dt, motion_frames + len(perf.joints)
    dt_video, video = _timed(lambda: detection_video(seed=0, subject=1, camera=1, n_actions=20))

    size = f"depth {DEPTH_SIZE[1]}x{DEPTH_SIZE[0]}, RGB {COLOR_SIZE[1]}x{COLOR_SIZE[0]}"
    print(f"sizes: {size}, one process")
    print(f"motion only (baseline)      {1000 * motion / motion_frames:6.2f} ms/frame")
    print(
        f"classification samples      {1000 * seconds / frames:6.2f} ms/frame "
        f"({n_samples} samples, {frames} frames)"
    )
    print(
        f"detection video (20 actions) {1000 * dt_video / video.num_frames:5.2f} ms/frame "
        f"({video.num_frames} frames, {dt_video:.1f} s)"
    )


if __name__ == "__main__":
    main()
