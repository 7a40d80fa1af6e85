"""Post-processing cost per clip, each against a naive baseline measured in the same run.

- offline: `average_window_scores` + `segment` on a 1-hour video, vs a Python loop over windows
  and clips for the averaging;
- streaming: `Segmenter.push` per clip, vs re-running offline `segment` on the whole history at
  every clip (what a stream would do without running sums).

    .venv/bin/python bench/postprocess.py [--classes 52] [--minutes 60]
"""

import argparse
import time

import numpy as np

from core.clip import ClipSpec, window_starts
from core.postprocess import Segmenter, average_window_scores, segment


def fake_window_scores(rng, n_windows, window, n_classes):
    """Softmax scores with long stretches of background, like a real video."""
    logits = rng.normal(size=(n_windows, window, n_classes))
    logits[..., 0] += np.where(rng.random((n_windows, 1)) < 0.5, 4.0, -2.0)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def loop_average(window_probs, starts, n_clips):
    sums = np.zeros((n_clips, window_probs.shape[-1]))
    counts = np.zeros(n_clips)
    for w, s in zip(window_probs, starts, strict=True):
        for t in range(len(w)):
            sums[s + t] += w[t]
            counts[s + t] += 1
    return sums / counts[:, None]


def seconds(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=52, help="C, background included")
    parser.add_argument("--minutes", type=float, default=60.0, help="offline video length")
    args = parser.parse_args()
    spec = ClipSpec()
    clips_per_s = spec.kept_fps / spec.clip_step
    n_clips = int(args.minutes * 60 * clips_per_s)
    rng = np.random.default_rng(0)
    starts = window_starts(n_clips, spec.window, spec.window_step)
    window_probs = fake_window_scores(rng, len(starts), spec.window, args.classes)

    fast = seconds(lambda: segment(average_window_scores(window_probs, starts, n_clips)))
    slow = seconds(lambda: segment(loop_average(window_probs, starts, n_clips)), repeat=1)
    print(f"offline, {n_clips} clips x {args.classes} classes ({args.minutes:g} min of video):")
    print(f"  postprocess {fast * 1e3:8.1f} ms  ({fast / n_clips * 1e6:.2f} us/clip)")
    print(f"  loop        {slow * 1e3:8.1f} ms  ({slow / fast:.0f}x slower)")

    probs = average_window_scores(window_probs, starts, n_clips)
    n_stream = min(n_clips, 2000)

    def push_all():
        s = Segmenter()
        for row in probs[:n_stream]:
            s.push(row)
        s.flush()

    def rescan_all():
        for c in range(1, n_stream + 1):
            segment(probs[:c])

    push = seconds(push_all) / n_stream
    rescan = seconds(rescan_all, repeat=1) / n_stream
    print(f"streaming, {n_stream} clips ({n_stream / clips_per_s / 60:.0f} min of stream):")
    print(f"  Segmenter.push  {push * 1e6:8.1f} us/clip (constant in stream length)")
    print(f"  re-scan         {rescan * 1e6:8.1f} us/clip on average ({rescan / push:.0f}x, grows)")
    print(f"  live budget: one clip every {1e6 / clips_per_s:.0f} us per stream")


if __name__ == "__main__":
    main()
