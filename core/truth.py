"""Ground truth beside live detections: what the scene really held, and a running hit rate.

A synthetic scene knows its actions (`synth.generate.detection_video(...).segments`), so the
demo and `gd-stream synth` can say, for each detection, which true action it overlaps and
whether it got it right. A detection is a hit when the true action it overlaps most has the
same label, the two overlap by a tIoU of at least `min_tiou` (0.5, the PKU-MMD figure the
docs quote), and no earlier detection already took that action: stricter than the PKU-MMD
script (where several detections may match one instance), so that repeats never raise the rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from core.metrics import tiou

MIN_TIOU = 0.5


@dataclass(frozen=True)
class TrueAction:
    label: str
    start_s: float
    end_s: float  # exclusive, as detections' end_s


@dataclass(frozen=True)
class Verdict:
    truth: TrueAction | None  # the true action the detection overlaps most; None: background
    tiou: float  # with that action (0 when there is none)
    hit: bool


def true_actions(
    segments: Iterable[tuple[int, int, int]], names: Sequence[str], fps: float, offset_s: float = 0
) -> list[TrueAction]:
    """Actions from `(label, start, end inclusive)` frame segments, labels 1-based in `names`,
    timed as the server times detections (`[start / fps, (end + 1) / fps)`), plus `offset_s`."""
    return [
        TrueAction(names[label - 1], offset_s + start / fps, offset_s + (end + 1) / fps)
        for label, start, end in segments
    ]


class TruthCheck:
    """Checks detections against the true actions seen so far and keeps the tally."""

    def __init__(self, min_tiou: float = MIN_TIOU) -> None:
        self.min_tiou = min_tiou
        self.actions: list[TrueAction] = []
        self.detections = 0
        self.hits = 0
        self._taken: set[int] = set()  # indices of actions a detection already hit

    def add(self, actions: Iterable[TrueAction]) -> None:
        self.actions.extend(actions)

    def check(self, label: str, start_s: float, end_s: float) -> Verdict:
        """The verdict on one detection, counted in the tally."""
        self.detections += 1
        if not self.actions:
            return Verdict(None, 0.0, False)
        starts = np.array([a.start_s for a in self.actions])
        ends = np.array([a.end_s for a in self.actions])
        overlaps = tiou(np.full(len(starts), start_s), np.full(len(ends), end_s), starts, ends)
        best = int(np.argmax(overlaps))
        if overlaps[best] <= 0:
            return Verdict(None, 0.0, False)
        truth = self.actions[best]
        hit = truth.label == label and overlaps[best] >= self.min_tiou and best not in self._taken
        if hit:
            self.hits += 1
            self._taken.add(best)
        return Verdict(truth, float(overlaps[best]), hit)

    def found(self, until_s: float | None = None) -> tuple[int, int]:
        """(true actions hit, true actions that ended by `until_s`, or all of them)."""
        ended = [i for i, a in enumerate(self.actions) if until_s is None or a.end_s <= until_s]
        return len(self._taken.intersection(ended)), len(ended)

    def describe(self, verdict: Verdict) -> str:
        """`truth: sit down 3.0-4.6 s (tIoU 0.71), hit; hit rate 2/3` and the like."""
        if verdict.truth is None:
            what = "truth: no action there"
        else:
            t, mark = verdict.truth, "hit" if verdict.hit else "miss"
            what = f"truth: {t.label} {t.start_s:.1f}-{t.end_s:.1f} s (tIoU {verdict.tiou:.2f})"
            what += f", {mark}"
        return f"{what}; hit rate {self.hits}/{self.detections}"

    def summary(self, until_s: float | None = None) -> str:
        """`3 of 5 detections hit, 3 of 6 true actions found` (true actions ended by `until_s`)."""
        found, ended = self.found(until_s)
        return (
            f"{self.hits} of {self.detections} detections hit, {found} of {ended} true actions "
            f"found (tIoU >= {self.min_tiou:g})"
        )
