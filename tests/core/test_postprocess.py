import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clip import ClipSpec, window_starts
from core.postprocess import (
    ACTIVITY_THRESHOLD,
    PostprocessError,
    Segment,
    SegmentEnd,
    Segmenter,
    SegmentStart,
    average_window_scores,
    offline_clip_probs,
    segment,
)

# --- helpers ---------------------------------------------------------------------------------


def stream(rows, threshold=ACTIVITY_THRESHOLD, first_clip=0):
    """Events of a Segmenter fed `rows`, each tagged with the push index (None for flush)."""
    s = Segmenter(threshold, first_clip=first_clip)
    tagged = [(i, e) for i, row in enumerate(rows) for e in s.push(row)]
    return tagged + [(None, e) for e in s.flush()]


def streamed_segments(rows, threshold=ACTIVITY_THRESHOLD):
    return [e.segment for _, e in stream(rows, threshold) if isinstance(e, SegmentEnd)]


def reference_segments(probs, threshold):
    """Independent reference in exact rational arithmetic, one clip at a time."""
    gamma = Fraction(threshold)
    active = [1 - Fraction(float(p)) >= gamma for p in probs[:, 0]]
    out, i, n = [], 0, len(probs)
    while i < n:
        if not active[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and active[j + 1]:
            j += 1
        means = [sum(Fraction(float(x)) for x in probs[i : j + 1, c]) / (j - i + 1)
                 for c in range(probs.shape[1])]  # fmt: skip
        best = max(range(1, len(means)), key=lambda c: (means[c], -c))  # ties: lowest id
        out.append(Segment(i, j, best, float(means[best])))
        i = j + 1
    return out


def reference_average(window_probs, starts, n_clips):
    sums = np.zeros((n_clips, window_probs[0].shape[1]))
    counts = np.zeros(n_clips)
    for w, s in zip(window_probs, starts, strict=True):
        for t, row in enumerate(w):
            sums[s + t] += row
            counts[s + t] += 1
    return sums / counts[:, None]


# A small video: clips 1-2 form a run (clip 1 exactly at gamma), clip 4 a one-clip run at the end.
ROWS = np.array(
    [
        [1.0, 0.0, 0.0],
        [0.6, 0.3, 0.1],  # activity 0.4 == gamma -> active
        [0.2, 0.1, 0.7],
        [0.9, 0.05, 0.05],
        [0.0, 1.0, 0.0],
    ]
)


# --- average_window_scores -----------------------------------------------------------------


def test_average_overlapping_windows_by_hand():
    w = np.array(
        [
            [[0.8, 0.2], [0.6, 0.4]],  # clips 0, 1
            [[0.2, 0.8], [0.4, 0.6]],  # clips 1, 2
            [[0.0, 1.0], [1.0, 0.0]],  # clips 2, 3
        ]
    )
    got = average_window_scores(w, [0, 1, 2], n_clips=4)
    want = [[0.8, 0.2], [0.4, 0.6], [0.2, 0.8], [1.0, 0.0]]
    np.testing.assert_allclose(got, want)
    assert got.dtype == np.float64


def test_average_windows_of_unequal_length_as_list():
    w = [np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]), np.array([[1.0, 0.0]])]
    got = average_window_scores(w, np.array([0, 2]), n_clips=3)
    np.testing.assert_allclose(got, [[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])


def test_average_counts_follow_window_starts():
    # 12 clips, T_w = 10, s_w = 5: windows at 0 and 2, so clips 2..9 are in both.
    starts = window_starts(12, 10, 5)
    w = np.stack([np.tile([1.0, 0.0], (10, 1)), np.tile([0.0, 1.0], (10, 1))])
    got = average_window_scores(w.astype(np.float32), starts, 12)
    np.testing.assert_allclose(got[:, 1], [0, 0] + [0.5] * 8 + [1, 1])


def test_average_short_video_single_short_window():
    w = np.full((1, 3, 4), 0.25, dtype=np.float32)
    got = average_window_scores(w, window_starts(3, 10, 5), 3)
    np.testing.assert_allclose(got, np.full((3, 4), 0.25))


@settings(deadline=None)
@given(
    n_clips=st.integers(1, 40),
    window=st.integers(1, 12),
    step=st.integers(1, 12),
    n_classes=st.integers(2, 5),
    seed=st.integers(0, 2**32 - 1),
)
@pytest.mark.slow  # 0.4 CPU s
def test_average_matches_reference(n_clips, window, step, n_classes, seed):
    starts = window_starts(n_clips, window, min(step, window))
    t = min(window, n_clips)
    w = np.random.default_rng(seed).dirichlet(np.ones(n_classes), size=(len(starts), t))
    got = average_window_scores(w, starts, n_clips)
    np.testing.assert_allclose(got, reference_average(w, starts, n_clips), rtol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize(
    ("windows", "starts", "n_clips", "match"),
    [
        (np.full((2, 2), 0.5), [0], 2, r"\[n_windows, T, C\]"),
        (np.full((2, 2, 2), 0.5), [0], 4, "2 windows of scores and 1 starts"),
        ([], [], 2, "no windows"),
        (np.zeros((0, 10, 2)), [], 2, r"n_windows, T >= 1"),
        (np.zeros((2, 0, 2)), [0, 1], 2, r"n_windows, T >= 1"),
        (np.full((1, 2, 2), 0.5), [0.0], 2, "integer"),
        (np.full((1, 2, 2), 0.5), [0], 0, "n_clips"),
        (np.full((1, 2, 2), 0.5), [1], 2, "window 0 covers clips 1..2, outside"),
        (np.full((1, 2, 2), 0.5), [-1], 2, "outside"),
        (np.full((1, 2, 2), 0.5), [0], 3, r"1 clip\(s\) are in no window, first \[2\]"),
        ([np.full((2, 2), 0.5), np.full((2, 3), 0.3)], [0, 2], 4, "window 1 .* C = 2"),
        ([np.full((2, 2), 0.5), np.zeros((0, 2))], [0, 2], 2, "window 1"),
        (np.full((1, 2, 1), 1.0), [0], 2, "C >= 2"),
        (np.array([[[0.5, np.nan]]]), [0], 1, "row 0, class 1 is nan"),
        (np.array([[[1.5, -0.5]]]), [0], 1, r"\[0, 1\]"),
    ],
)
def test_average_rejects_bad_input(windows, starts, n_clips, match):
    with pytest.raises(PostprocessError, match=match):
        average_window_scores(windows, starts, n_clips)


# --- segment -------------------------------------------------------------------------------


def test_segment_by_hand():
    segs = segment(ROWS)
    assert [(s.first_clip, s.last_clip, s.class_id) for s in segs] == [(1, 2, 2), (4, 4, 1)]
    # Run 1 means: class 1 (0.3 + 0.1) / 2 = 0.2, class 2 (0.1 + 0.7) / 2 = 0.4.
    assert segs[0].confidence == pytest.approx(0.4, abs=1e-15)
    assert segs[1].confidence == 1.0
    assert segs[0].n_clips == 2


def test_threshold_is_inclusive():
    at = np.array([[0.6, 0.4]])  # 1 - 0.6 == 0.4 exactly in float64
    just_below = np.array([[np.nextafter(0.6, 1.0), 0.4]])
    assert [s.first_clip for s in segment(at, 0.4)] == [0]
    assert segment(just_below, 0.4) == []
    assert len(segment(np.array([[0.5, 0.5]]), 0.5)) == 1


def test_float32_background_at_the_boundary_is_not_active():
    # float32(0.6) is 0.6000000238..., so its activity is just under 0.4 (documented).
    assert segment(np.array([[0.6, 0.4]], dtype=np.float32), 0.4) == []


def test_threshold_extremes():
    probs = np.array([[1.0, 0.0], [0.3, 0.7], [0.0, 1.0]])
    assert [(s.first_clip, s.last_clip) for s in segment(probs, 0.0)] == [(0, 2)]
    assert [(s.first_clip, s.last_clip) for s in segment(probs, 1.0)] == [(2, 2)]


def test_ties_go_to_the_lowest_class_id():
    assert segment(np.array([[0.0, 0.5, 0.5]]))[0].class_id == 1
    tie_in_mean = np.array([[0.0, 0.0, 0.6, 0.4], [0.0, 0.0, 0.4, 0.6]])
    assert segment(tie_in_mean)[0].class_id == 2
    # Background never wins, even when it is the largest mean.
    assert segment(np.array([[0.5, 0.2, 0.3]]))[0].class_id == 2


def test_runs_touching_both_ends_and_degenerate_videos():
    active, idle = [0.0, 1.0], [1.0, 0.0]
    probs = np.array([active, active, idle, active])
    assert [(s.first_clip, s.last_clip) for s in segment(probs)] == [(0, 1), (3, 3)]
    assert [(s.first_clip, s.last_clip) for s in segment(np.array([active] * 7))] == [(0, 6)]
    assert segment(np.array([idle] * 7)) == []
    assert segment(np.zeros((0, 2))) == []


def test_run_mean_does_not_depend_on_the_clips_before_it():
    # A difference of one cumulative sum over the video would give 1.0000000000000002 here.
    probs = np.array([[0.96, 0.04]] * 80 + [[0.0, 1.0]] * 5)
    assert segment(probs) == [Segment(80, 84, 1, 1.0)]
    assert streamed_segments(probs) == [Segment(80, 84, 1, 1.0)]


@pytest.mark.parametrize(
    ("probs", "threshold", "match"),
    [
        (np.full(4, 0.5), 0.4, r"\[n, C\]"),
        (np.ones((3, 1)), 0.4, "C >= 2"),
        (np.array([[0.5, np.nan]]), 0.4, "row 0, class 1 is nan"),
        (np.array([[0.5, 0.5], [1.2, -0.2]]), 0.4, "row 1, class 0 is 1.2"),
        (np.full((1, 2), 0.5), 1.5, r"threshold must be in \[0, 1\]"),
        (np.full((1, 2), 0.5), float("nan"), "threshold"),
        (np.full((1, 2), 0.5), "0.4", "must be a number"),
    ],
)
def test_segment_rejects_bad_input(probs, threshold, match):
    with pytest.raises(PostprocessError, match=match):
        segment(probs, threshold)


# --- Segment.to_detection ------------------------------------------------------------------


def test_to_detection_frames_and_seconds():
    spec = ClipSpec()  # 30 fps, downsample 3, clips of 10 kept frames every 10
    det = Segment(2, 4, 1, 0.75).to_detection(spec, ["background", "wave", "fall"])
    assert det == {
        "label": "wave",
        "class_id": 1,
        "start_frame": 60,
        "end_frame": 149,
        "start_s": 2.0,
        "end_s": 5.0,
        "confidence": 0.75,
    }


def test_to_detection_overlapping_clips_and_no_names():
    spec = ClipSpec(source_fps=15.0, downsample=1, clip_len=8, clip_step=4)
    det = Segment(3, 5, 2, 0.5).to_detection(spec)
    assert (det["start_frame"], det["end_frame"]) == (12, 27)  # 3*4, (5*4 + 8) - 1
    assert (det["start_s"], det["end_s"]) == (0.8, 28 / 15)
    assert det["label"] is None


def test_to_detection_rejects_unknown_class():
    with pytest.raises(PostprocessError, match="class_id 3 has no name among 3"):
        Segment(0, 0, 3, 0.5).to_detection(ClipSpec(), ["background", "a", "b"])


# --- Segmenter -----------------------------------------------------------------------------


def test_segmenter_events_by_hand():
    s = Segmenter()
    assert s.push(ROWS[0]) == []
    assert s.push(ROWS[1]) == [SegmentStart(1, 1, 0.3)]  # provisional: clip 1 alone
    assert s.open_since == 1
    assert s.push(ROWS[2]) == []
    (end,) = s.push(ROWS[3])
    assert isinstance(end, SegmentEnd)
    assert (end.segment.first_clip, end.segment.last_clip, end.segment.class_id) == (1, 2, 2)
    assert end.segment.confidence == pytest.approx(0.4, abs=1e-15)
    assert s.open_since is None
    assert s.push(ROWS[4]) == [SegmentStart(4, 1, 1.0)]
    assert s.flush() == [SegmentEnd(Segment(4, 4, 1, 1.0))]
    assert s.flush() == []
    with pytest.raises(RuntimeError, match="flushed"):
        s.push(ROWS[0])


def test_segmenter_first_clip_offset():
    events = [e for _, e in stream(ROWS, first_clip=100)]
    assert [e.clip for e in events if isinstance(e, SegmentStart)] == [101, 104]
    segs = [e.segment for e in events if isinstance(e, SegmentEnd)]
    assert [(s.first_clip, s.last_clip) for s in segs] == [(101, 102), (104, 104)]
    assert Segmenter(first_clip=5).next_clip == 5


def test_segmenter_empty_stream():
    assert Segmenter().flush() == []


def test_segmenter_rejects_bad_input():
    s = Segmenter()
    s.push([1.0, 0.0, 0.0])
    with pytest.raises(PostprocessError, match=r"clip 1: .* C = 3, as before"):
        s.push([1.0, 0.0])
    with pytest.raises(PostprocessError, match=r"clip 1: .* in \[0, 1\]"):
        s.push([np.nan, 0.5, 0.5])
    with pytest.raises(PostprocessError, match="C >= 2"):
        Segmenter().push([[1.0, 0.0]])
    with pytest.raises(PostprocessError, match="first_clip"):
        Segmenter(first_clip=-1)
    with pytest.raises(PostprocessError, match="threshold"):
        Segmenter(threshold=-0.1)
    assert s.next_clip == 1  # rejected clips are not counted


# --- properties ----------------------------------------------------------------------------


@st.composite
def videos(draw, max_blocks=12, max_block_len=40):
    """Probabilities built from blocks of equal background probability.

    Blocks give long runs, all-background and all-active videos, values at the threshold, and
    (with quantized class weights) ties; numpy fills in the class probabilities from a seed.
    """
    n_classes = draw(st.integers(2, 6))
    p0 = st.one_of(st.sampled_from([0.0, 0.5, 0.6, 1.0]), st.floats(0.0, 1.0))
    blocks = draw(st.lists(st.tuples(p0, st.integers(1, max_block_len)), max_size=max_blocks))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    background = np.array([p for p, n in blocks for _ in range(n)], dtype=np.float64)
    weights = rng.integers(0, 4, size=(len(background), n_classes - 1)).astype(np.float64)
    weights[weights.sum(axis=1) == 0, 0] = 1.0
    rest = weights / weights.sum(axis=1, keepdims=True) * (1.0 - background)[:, None]
    probs = np.column_stack([background, rest]).clip(0.0, 1.0)
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    return probs.astype(dtype)


thresholds = st.one_of(
    st.just(ACTIVITY_THRESHOLD), st.sampled_from([0.0, 0.5, 1.0]), st.floats(0, 1)
)


@pytest.mark.slow
@settings(deadline=None)
@given(probs=videos(), threshold=thresholds, first_clip=st.integers(0, 10**6))
def test_streaming_equals_offline_exactly(probs, threshold, first_clip):
    offline = segment(probs, threshold)
    tagged = stream(probs, threshold, first_clip)
    starts = [(i, e) for i, e in tagged if isinstance(e, SegmentStart)]
    ends = [(i, e) for i, e in tagged if isinstance(e, SegmentEnd)]
    shifted = [
        Segment(s.first_clip + first_clip, s.last_clip + first_clip, s.class_id, s.confidence)
        for s in offline
    ]
    assert [e.segment for _, e in ends] == shifted  # dataclass ==: bit-identical confidence
    # Each run announces its start on its first clip, and its end on the next clip or at flush.
    assert [(i, e.clip) for i, e in starts] == [
        (s.first_clip, s.first_clip + first_clip) for s in offline
    ]
    for (i, _), s in zip(ends, offline, strict=True):
        assert i == (s.last_clip + 1 if s.last_clip + 1 < len(probs) else None)


@pytest.mark.slow
@settings(deadline=None)
@given(probs=videos(), threshold=thresholds)
def test_segments_are_exactly_the_maximal_active_runs(probs, threshold):
    active = 1.0 - probs[:, 0].astype(np.float64) >= threshold
    segs = segment(probs, threshold)
    covered = np.zeros(len(probs), dtype=bool)
    for s in segs:
        assert 0 <= s.first_clip <= s.last_clip < len(probs)
        assert active[s.first_clip : s.last_clip + 1].all()
        assert s.first_clip == 0 or not active[s.first_clip - 1]
        assert s.last_clip == len(probs) - 1 or not active[s.last_clip + 1]
        assert 1 <= s.class_id < probs.shape[1]
        assert 0.0 <= s.confidence <= 1.0
        covered[s.first_clip : s.last_clip + 1] = True
    np.testing.assert_array_equal(covered, active)
    assert all(a.last_clip + 1 < b.first_clip for a, b in itertools.pairwise(segs))


@pytest.mark.slow
@settings(deadline=None)
@given(probs=videos(), threshold=thresholds, cut=st.integers(0, 10**6))
def test_segment_depends_only_on_its_own_clips(probs, threshold, cut):
    # Cutting the video anywhere before a run leaves that run's class and confidence unchanged.
    for s in segment(probs, threshold):
        start = cut % (s.first_clip + 1)
        (alone,) = [
            t for t in segment(probs[start:], threshold) if t.last_clip == s.last_clip - start
        ]
        assert (alone.first_clip + start, alone.class_id, alone.confidence) == (
            s.first_clip,
            s.class_id,
            s.confidence,
        )


@settings(deadline=None)
@given(
    counts=st.lists(st.lists(st.integers(0, 16), min_size=3, max_size=3), max_size=60),
    threshold=st.sampled_from([0.0, 0.25, 0.4, 0.5, 1.0]),
)
@pytest.mark.slow  # 0.5 CPU s
def test_segment_matches_exact_reference_on_dyadic_probabilities(counts, threshold):
    # Multiples of 1/16: every sum is exact in float64, so the rational reference must agree
    # bit for bit, ties included.
    probs = np.array(counts, dtype=np.float64).reshape(-1, 3) / 16
    assert segment(probs, threshold) == reference_segments(probs, threshold)
    assert streamed_segments(probs, threshold) == reference_segments(probs, threshold)


def test_offline_clip_probs_scores_every_window_and_averages():
    spec = ClipSpec(window=4, window_step=2)
    features = np.arange(7, dtype=float)[:, None]  # clip c has feature c
    seen = []

    def run_sequence(windows):
        seen.append(windows[..., 0].tolist())
        # Probability of class 1 = the window's first clip / 10: the average tells windows apart.
        p1 = np.repeat(windows[:, :1, 0] / 10, windows.shape[1], axis=1)
        return np.stack([1 - p1, p1], axis=-1)

    probs = offline_clip_probs(features, spec, run_sequence)
    assert seen == [[[0, 1, 2, 3], [2, 3, 4, 5], [3, 4, 5, 6]]]
    # Clip 3 is in windows starting at 0, 2 and 3: (0 + 0.2 + 0.3) / 3.
    np.testing.assert_allclose(probs[:, 1], [0, 0, 0.1, 0.5 / 3, 0.25, 0.25, 0.3])
    short = offline_clip_probs(features[:2], spec, run_sequence)
    assert seen[-1] == [[0, 1]] and short.shape == (2, 2)
    with pytest.raises(PostprocessError, match="at least one clip"):
        offline_clip_probs(features[:0], spec, run_sequence)
