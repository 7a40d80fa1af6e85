"""From per-clip class probabilities to action segments, offline and streaming (design.md §7).

Offline, the sequence encoder scores overlapping windows of clips; `average_window_scores`
gives each clip the mean of the windows that contain it. `segment` then applies the activity
threshold of Montes et al.: a clip is active when `1 - p(background) >= threshold` (class 0 is
background), a segment is a maximal run of active clips, its class the argmax over classes
1..L of the run's mean probabilities (ties go to the lowest class id) and its confidence that
class's mean probability.

`Segmenter` does the same on a live stream, one clip at a time, in O(C) work per clip. Both
sum each run on its own, in float64 and in clip order (`np.cumsum` over the run offline, `sum +
row` streaming), then share `_segments` for the division and argmax, so fed the same
probabilities they return bit-identical segments. A segment depends only on its own clips, not
on how long the stream ran before it, and its mean cannot round above 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.clip import ClipSpec, clips_span, window_starts

ACTIVITY_THRESHOLD = 0.4  # gamma, the paper's value (Sec. 5.1)


class PostprocessError(ValueError):
    """Scores, window starts or a threshold given to post-processing are malformed."""


@dataclass(frozen=True)
class Segment:
    """Clips `first_clip..last_clip` (inclusive) detected as action `class_id` (1..L)."""

    first_clip: int
    last_clip: int
    class_id: int
    confidence: float

    @property
    def n_clips(self) -> int:
        return self.last_clip - self.first_clip + 1

    def to_detection(self, spec: ClipSpec, classes: Sequence[str] | None = None) -> dict[str, Any]:
        """The API's detection: source frames (inclusive) and seconds `[start_s, end_s)`.

        `classes` are the model's class names, index 0 = background; without them `label` is
        None.
        """
        if classes is not None and not 0 < self.class_id < len(classes):
            raise PostprocessError(
                f"class_id {self.class_id} has no name among {len(classes)} classes"
            )
        span = clips_span(spec, self.first_clip, self.last_clip)
        return {
            "label": None if classes is None else classes[self.class_id],
            "class_id": self.class_id,
            "start_frame": span.start_frame,
            "end_frame": span.end_frame,
            "start_s": span.start_s,
            "end_s": span.end_s,
            "confidence": self.confidence,
        }


@dataclass(frozen=True)
class SegmentStart:
    """A run of active clips opened at `clip`; class and confidence are from that clip alone."""

    clip: int
    class_id: int
    confidence: float


@dataclass(frozen=True)
class SegmentEnd:
    """A run closed; `segment` is final and equals what `segment()` finds offline."""

    segment: Segment


Event = SegmentStart | SegmentEnd


def average_window_scores(
    window_probs: np.ndarray | Sequence[np.ndarray],
    starts: Sequence[int] | np.ndarray,
    n_clips: int,
) -> np.ndarray:
    """Mean over the windows containing each clip -> `float64[n_clips, C]`.

    `window_probs` is `[n_windows, T, C]` or a list of `[T_i, C]` arrays (windows of unequal
    length); window `i` covers clips `starts[i] .. starts[i] + T_i - 1`. Every clip must be
    covered by at least one window.
    """
    values, lengths = _stack_windows(window_probs)
    starts = np.asarray(starts)
    if len(starts) != len(lengths):
        raise PostprocessError(f"{len(lengths)} windows of scores and {len(starts)} starts")
    if starts.ndim != 1 or not np.issubdtype(starts.dtype, np.integer):
        raise PostprocessError(f"window starts must be a 1-D integer array, got {starts!r}")
    if isinstance(n_clips, bool) or not isinstance(n_clips, int | np.integer) or n_clips < 1:
        raise PostprocessError(f"n_clips must be a positive integer, got {n_clips!r}")
    outside = np.flatnonzero((starts < 0) | (starts + lengths > n_clips))
    if outside.size:
        i = int(outside[0])
        raise PostprocessError(
            f"window {i} covers clips {starts[i]}..{starts[i] + lengths[i] - 1}, "
            f"outside the video's clips 0..{n_clips - 1}"
        )
    # Clip index of every row of `values`: the window start plus the row's offset in its window.
    offsets = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    clip = np.repeat(starts, lengths) + offsets
    counts = np.bincount(clip, minlength=n_clips)
    uncovered = np.flatnonzero(counts == 0)
    if uncovered.size:
        raise PostprocessError(
            f"{uncovered.size} clip(s) are in no window, first {uncovered[:5].tolist()}"
        )
    # Rows grouped by clip (stable, so in window order), then one sum per group: much faster
    # than np.add.at.
    order = np.argsort(clip, kind="stable")
    sums = np.add.reduceat(values[order], np.cumsum(counts) - counts, axis=0)
    return sums / counts[:, None]


def offline_clip_probs(
    features: np.ndarray,
    spec: ClipSpec,
    run_sequence: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Per-clip probabilities of a whole video from its clip features, the paper's way:
    windows of `spec.window` clips every `spec.window_step` clips, each scored by
    `run_sequence` (`[n_windows, T, D] -> [n_windows, T, C]` probabilities: ONNX Runtime in the
    server, torch in training), then averaged over the windows containing each clip.
    """
    features = np.asarray(features)
    n_clips = len(features)
    if n_clips == 0:
        raise PostprocessError("a video needs at least one clip to score")
    starts = window_starts(n_clips, spec.window, spec.window_step)
    length = min(spec.window, n_clips)
    windows = features[starts[:, None] + np.arange(length)]
    return average_window_scores(np.asarray(run_sequence(windows)), starts, n_clips)


def _stack_windows(
    window_probs: np.ndarray | Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """All windows' rows as one validated `float64[rows, C]`, and each window's length."""
    if isinstance(window_probs, np.ndarray):
        if window_probs.ndim != 3 or 0 in window_probs.shape[:2]:
            raise PostprocessError(
                f"window scores must be [n_windows, T, C] with n_windows, T >= 1, got shape "
                f"{window_probs.shape}"
            )
        n_windows, t, n_classes = window_probs.shape
        values = window_probs.reshape(n_windows * t, n_classes)
        lengths = np.full(n_windows, t, dtype=np.intp)
    else:
        windows = [np.asarray(w) for w in window_probs]
        if not windows:
            raise PostprocessError("no windows of scores")
        for i, w in enumerate(windows):
            if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] != windows[0].shape[-1]:
                raise PostprocessError(
                    f"window {i} scores must be [T, C] with T >= 1 and "
                    f"C = {windows[0].shape[-1]}, got shape {w.shape}"
                )
        values = np.concatenate(windows)
        lengths = np.array([len(w) for w in windows], dtype=np.intp)
    return _as_probs(values, what="window scores"), lengths


def segment(probs: np.ndarray, threshold: float = ACTIVITY_THRESHOLD) -> list[Segment]:
    """Maximal runs of clips with `1 - probs[:, 0] >= threshold`, in clip order."""
    threshold = _check_threshold(threshold)
    p = _as_probs(probs, what="clip probabilities")
    active = _active(p[:, 0], threshold).astype(np.int8)
    edges = np.diff(active, prepend=0, append=0)
    firsts = np.flatnonzero(edges == 1)
    lasts = np.flatnonzero(edges == -1) - 1
    # Not a difference of one cumulative sum over the video: that rounds with the size of the
    # total (a run of ones could average 1.0000000000000002). cumsum adds strictly in order.
    sums = [np.cumsum(p[a : b + 1], axis=0)[-1] for a, b in zip(firsts, lasts, strict=True)]
    return _segments(firsts, lasts, np.reshape(sums, (len(firsts), p.shape[1])))


class Segmenter:
    """Streaming `segment`: `push` one clip's probabilities, get start/end events.

    Clips are numbered from `first_clip`. `flush` at the end of the stream closes an open run;
    the segmenter takes no more clips after it.
    """

    def __init__(self, threshold: float = ACTIVITY_THRESHOLD, first_clip: int = 0) -> None:
        if isinstance(first_clip, bool) or not isinstance(first_clip, int) or first_clip < 0:
            raise PostprocessError(f"first_clip must be an integer >= 0, got {first_clip!r}")
        self.threshold = _check_threshold(threshold)
        self.next_clip = first_clip
        self._n_classes: int | None = None  # C, fixed by the first clip
        self._run_first: int | None = None  # first clip of the open run
        self._run_sum: np.ndarray | None = None  # float64[C], the open run's rows added in order
        self._flushed = False

    @property
    def open_since(self) -> int | None:
        """First clip of the run in progress, or None."""
        return self._run_first

    def push(self, probs_row: np.ndarray) -> list[Event]:
        """Feed the next clip's `[C]` probabilities."""
        if self._flushed:
            raise RuntimeError("Segmenter was flushed; start a new one for a new stream")
        row = _as_row(probs_row, self._n_classes, self.next_clip)
        self._n_classes = len(row)
        clip = self.next_clip
        self.next_clip += 1
        if not _active(row[0], self.threshold):
            return [] if self._run_first is None else [self._close(last=clip - 1)]
        if self._run_first is not None:
            self._run_sum = self._run_sum + row
            return []
        self._run_first, self._run_sum = clip, row.copy()  # the caller may reuse its array
        class_id = int(np.argmax(row[1:])) + 1
        return [SegmentStart(clip, class_id, float(row[class_id]))]

    def flush(self) -> list[Event]:
        """End of stream: close the open run, if any."""
        self._flushed = True
        if self._run_first is None:
            return []
        return [self._close(last=self.next_clip - 1)]

    def _close(self, last: int) -> SegmentEnd:
        assert self._run_sum is not None  # only called with a run open
        (seg,) = _segments(np.array([self._run_first]), np.array([last]), self._run_sum[None])
        self._run_first = self._run_sum = None
        return SegmentEnd(seg)


def _segments(firsts: np.ndarray, lasts: np.ndarray, sums: np.ndarray) -> list[Segment]:
    """Segments from runs and their float64 probability sums; the one place means are taken."""
    means = sums / (lasts - firsts + 1)[:, None]
    class_ids = np.argmax(means[:, 1:], axis=1) + 1
    confidences = means[np.arange(len(means)), class_ids]
    return [
        Segment(int(f), int(la), int(c), float(x))
        for f, la, c, x in zip(firsts, lasts, class_ids, confidences, strict=True)
    ]


def _active(p_background: np.ndarray | np.floating, threshold: float) -> np.ndarray | np.bool_:
    # Computed in float64 by both paths: a float32 0.6 is 0.6000000238, so not active at 0.4.
    return 1.0 - p_background >= threshold


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.floating):
        raise PostprocessError(f"activity threshold must be a number, got {threshold!r}")
    if not 0.0 <= threshold <= 1.0:
        raise PostprocessError(f"activity threshold must be in [0, 1], got {threshold}")
    return float(threshold)


def _as_probs(probs: np.ndarray, what: str) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise PostprocessError(
            f"{what} must be [n, C] with C >= 2 (background + classes), got shape {p.shape}"
        )
    bad = ~((p >= 0.0) & (p <= 1.0))  # NaN fails both comparisons
    if bad.any():
        i, c = np.argwhere(bad)[0]
        raise PostprocessError(
            f"{what} must be probabilities in [0, 1]; row {i}, class {c} is {p[i, c]}"
        )
    return p


def _as_row(probs_row: np.ndarray, n_classes: int | None, clip: int) -> np.ndarray:
    row = np.asarray(probs_row, dtype=np.float64)
    if row.ndim != 1 or row.shape[0] < 2 or (n_classes is not None and len(row) != n_classes):
        want = "C >= 2" if n_classes is None else f"C = {n_classes}, as before"
        raise PostprocessError(
            f"clip {clip}: probabilities must be [C] with {want}, got {row.shape}"
        )
    if not ((row >= 0.0) & (row <= 1.0)).all():
        raise PostprocessError(f"clip {clip}: probabilities must be in [0, 1], got {row}")
    return row
