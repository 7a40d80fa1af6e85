import numpy as np
import pytest

from core.clip import ClipSpec
from export.evaluate import CacheClips, evaluate, seconds_per_clip
from export.onnx import ExportError
from tests.export import SPEC, make_cache

BACKGROUND_MM = 4000


def scripted_video(n_clips: int, actions: dict[int, range]) -> np.ndarray:
    """Depth frames whose whole clips are at 1000*k mm during action k, else 4000 mm."""
    level = np.full(n_clips, BACKGROUND_MM)
    for k, clips in actions.items():
        level[list(clips)] = 1000 * k
    frames = np.repeat(level, SPEC.clip_len).astype(np.uint16)
    return np.broadcast_to(frames[:, None, None], (len(frames), SPEC.height, SPEC.width)).copy()


def oracle(swap: bool = False):
    """Encoders that read the action off the depth level: a perfect (or perfectly wrong)
    detector, so the evaluation's plumbing can be checked against known mAPs."""

    def visual(clips):
        mm = (clips.mean(axis=(1, 2, 3)) * SPEC.std + SPEC.mean) * SPEC.depth_max_mm
        return np.round(mm / 1000)[:, None].astype(np.float32)

    def sequence(windows):
        k = windows[..., 0].astype(int)
        k = np.where(k >= BACKGROUND_MM // 1000, 0, k)
        if swap:
            k = np.where(k > 0, 3 - k, 0)
        return np.eye(3, dtype=np.float32)[k]

    return visual, sequence


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    # clip c spans source frames [12c, 12c + 11]; ground truth on the same grid
    a_truth = [[1, 24, 59, 1], [2, 72, 107, 1]]
    videos = {
        "a": ("test", scripted_video(10, {1: range(2, 5), 2: range(6, 9)}), a_truth),
        "b": ("test", scripted_video(3, {2: range(0, 2)}), [[2, 0, 23]]),
        "c": ("train", scripted_video(5, {}), []),
        "d": ("test", scripted_video(0, {})[:0], []),  # no frames at all: no clip
    }  # fmt: skip
    return make_cache(tmp_path_factory.mktemp("scripted"), videos)


def test_a_perfect_detector_scores_one_and_a_wrong_one_zero(scripted):
    data = CacheClips(scripted, SPEC)
    good = evaluate(*oracle(), data, num_classes=2, threshold=0.4, batch=3)
    assert good.videos == 3 and good.clips == 13
    assert good.map_action == {"0.1": 1.0, "0.3": 1.0, "0.5": 1.0}
    bad = evaluate(*oracle(swap=True), data, num_classes=2, threshold=0.4)
    assert bad.map_action == {"0.1": 0.0, "0.3": 0.0, "0.5": 0.0}


def test_clips_are_normalized_as_in_training(tmp_path):
    rng = np.random.default_rng(0)
    depth = rng.integers(0, 6000, size=(9, 32, 32)).astype(np.uint16)
    data = CacheClips(make_cache(tmp_path, {"v": ("test", depth, [])}), SPEC)
    clips = data.clips(0)
    assert clips.shape == (2, 4, 32, 32) and clips.dtype == np.float32  # 9 frames: 2 clips
    valid = (depth >= 500) & (depth <= 4500)
    unit = np.where(valid, depth / 4500.0, 0.0)
    want = ((unit - 0.5) / 0.25)[:8].reshape(2, 4, 32, 32)
    np.testing.assert_allclose(clips, want, rtol=1e-6, atol=1e-6)
    assert data.segments(0).shape == (0, 4)
    assert len(data.sample("test", 5)) == 2  # no more than there are


def test_sampled_clips_are_real_clips(scripted):
    data = CacheClips(scripted, SPEC)
    everything = np.concatenate([data.clips(v) for v in data.videos("test")])
    picked = data.sample("test", 6, seed=1)
    assert len(picked) == 6
    assert len({c.tobytes() for c in picked}) <= 3  # scripted clips take only 3 levels
    for clip in picked:
        assert any(np.array_equal(clip, c) for c in everything)


def test_cache_mismatches_are_named(scripted):
    with pytest.raises(
        ExportError, match="depth frames are 32x32, the model takes 64x64.*--size 64x64"
    ):
        CacheClips(scripted, ClipSpec(height=64, width=64))
    with pytest.raises(ExportError, match="cache made with downsample 3, the model uses 2"):
        CacheClips(scripted, ClipSpec(height=32, width=32, downsample=2))
    with pytest.raises(ExportError, match="no 'val' videos \\(subsets: test, train\\)"):
        CacheClips(scripted, SPEC).videos("val")


def test_timing_takes_turns_per_clip():
    calls = []
    clock = [0.0]  # seconds, moved only by the encoders' calls

    def run(name, pause):
        def call(x):
            calls.append((name, len(x)))
            clock[0] += pause

        return call

    runs = {"slow": run("slow", 0.004), "fast": run("fast", 0.0)}
    per_clip = seconds_per_clip(runs, np.zeros((8, 1)), 4, 0.0, clock=lambda: clock[0])
    # 4 ms per batch of 4. The clock stays under 0.03 s (7 slow calls with the warm-up), and a
    # timing is one addition and one subtraction there, each off by half an ulp: under 0.03 eps.
    tol = 4 * np.finfo(float).eps * 0.03
    assert per_clip == pytest.approx({"slow": 0.001, "fast": 0.0}, abs=tol)
    assert calls[4::2] == [("slow", 4)] * 5 and calls[5::2] == [("fast", 4)] * 5  # in turns
    with pytest.raises(ValueError, match="need at least 8 clips"):
        seconds_per_clip({"x": lambda x: x}, np.zeros((3, 1)), 8)
