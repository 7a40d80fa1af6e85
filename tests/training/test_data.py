import numpy as np
import pytest
import torch

from core.clip import preprocess_depth
from tests.helpers.caches import (
    SIZE,
    VECTOR,
    make_classification_cache,
    make_detection_cache,
    spec_of,
)
from tests.helpers.depth_reference import reference_preprocess
from training.data import (
    ClassificationClips,
    DetectionWindows,
    EpochBatches,
    Normalizer,
    class_names,
    loader,
    split_samples,
    subset_samples,
)
from training.samplers import clip_labels


def test_depth_is_normalized_exactly_as_the_server_does(tmp_path):
    cache = make_classification_cache(tmp_path / "c")
    spec = spec_of(cache)
    frames = cache.frames("depth", 0, np.arange(5))
    ours = Normalizer(cache, "depth", spec)(frames)
    server = preprocess_depth(frames, spec)  # core's one-off path, same spec
    assert ours.shape == (5, 1, SIZE, SIZE)
    np.testing.assert_array_equal(ours[:, 0], server)
    # and by hand: valid depth / max, then (x - mean) / std; invalid -> (0 - mean) / std
    mm = frames.astype(np.float64)
    valid = (mm >= spec.depth_min_mm) & (mm <= spec.depth_max_mm)
    unit = np.where(valid, mm / spec.depth_max_mm, 0)
    np.testing.assert_allclose(ours[:, 0], (unit - 0.4) / 0.2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("modality", "scale"), [("rgb", 1 / 255), ("flow", 1.0), ("jjd", 1.0)])
def test_other_modalities_use_the_cache_statistics(tmp_path, modality, scale):
    cache = make_classification_cache(tmp_path / "c", modalities=("depth", "rgb", "flow", "jjd"))
    frames = cache.frames(modality, 1, np.arange(4))
    stats = cache.meta["stats"][modality]
    expected = (frames.astype(np.float64) * scale - np.array(stats["mean"])) / np.array(
        stats["std"]
    )
    if frames.ndim == 4:
        expected = expected.transpose(0, 3, 1, 2)  # channels first
    out = Normalizer(cache, modality, spec_of(cache))(frames)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_classification_clips_stack_frames_as_channels_and_test_uses_5_uniform_clips(tmp_path):
    cache = make_classification_cache(tmp_path / "c", modalities=("depth", "flow", "jjd"))
    spec = spec_of(cache)
    data = ClassificationClips(cache, [0, 1], ["depth", "flow", "jjd"], spec, train=True, seed=3)
    item = data[(0, 1)]
    assert item["inputs"]["depth"].shape == (4, SIZE, SIZE)  # T_c x 1 channel
    assert item["inputs"]["flow"].shape == (8, SIZE, SIZE)  # T_c x 2, frame-major
    assert item["inputs"]["jjd"].shape == (4, VECTOR)
    assert item["label"] == cache.samples[1].info["label"]
    # flow channels: frame t's (dx, dy) are channels 2t, 2t+1 of the same frames as depth
    norm_depth = Normalizer(cache, "depth", spec)(cache.frames("depth", 1, np.arange(30)[:19]))
    start = [
        s for s in range(16) if np.array_equal(norm_depth[s : s + 4, 0], item["inputs"]["depth"])
    ]
    assert start, "the depth clip is 4 consecutive kept frames"
    flow = Normalizer(cache, "flow", spec)(
        cache.frames("flow", 1, np.arange(start[0], start[0] + 4))
    )
    np.testing.assert_array_equal(item["inputs"]["flow"], flow.reshape(8, SIZE, SIZE))
    # same key -> same clip; another epoch -> drawn anew (sample long enough to differ)
    np.testing.assert_array_equal(data[(0, 1)]["inputs"]["depth"], item["inputs"]["depth"])

    test = ClassificationClips(cache, [0], ["depth"], spec, train=False)
    assert test[0]["inputs"]["depth"].shape == (5, 4, SIZE, SIZE)


def test_detection_windows_and_their_clip_labels(tmp_path):
    cache = make_detection_cache(tmp_path / "d")
    spec = spec_of(cache)
    data = DetectionWindows(cache, [0, 1], ["depth", "jjd"], spec, seed=0, windows_per_video=1)
    span = (spec.window - 1) * spec.clip_step + spec.clip_len  # 12
    assert len(data) == 2 * round(60 / span)
    item = data[(2, 3)]
    assert item["inputs"]["depth"].shape == (3, 4, SIZE, SIZE)
    assert item["inputs"]["jjd"].shape == (3, 4, VECTOR)
    # find the window's start by matching frames, then check labels against clip_labels
    video = data.items[3]
    norm = Normalizer(cache, "depth", spec)(cache.frames("depth", video, np.arange(60)))[:, 0]
    start = next(
        s
        for s in range(60 - span + 1)
        if np.array_equal(norm[s : s + 4], item["inputs"]["depth"][0])
    )
    starts = start + np.arange(3) * 4
    segments = np.array(cache.samples[video].info["segments"])
    np.testing.assert_array_equal(item["label"], clip_labels(segments, starts, spec))


def test_detection_windows_skip_videos_shorter_than_a_window(tmp_path):
    cache = make_detection_cache(tmp_path / "d", length=10)
    with pytest.raises(ValueError, match="as long as a window"):
        DetectionWindows(cache, [0, 1], ["depth"], spec_of(cache))


def test_validation_holds_out_whole_groups_of_the_training_subset(tmp_path):
    cache = make_classification_cache(tmp_path / "c", per_class=2)
    train, val = split_samples(cache, mini=1.0, val_fraction=0.3, seed=0)
    performer = lambda i: cache.samples[i].info["performer"]  # noqa: E731
    assert {performer(i) for i in val} in ({1}, {2})  # one of the two training performers
    assert {performer(i) for i in train} == {1, 2} - {performer(val[0])}
    assert set(subset_samples(cache, "test")) == {i for i in range(len(cache)) if performer(i) == 3}
    assert split_samples(cache, 1.0, 0.0, 0) == (sorted(train + val), [])
    mini_train, mini_val = split_samples(cache, mini=0.5, val_fraction=0.0, seed=0)
    assert len(mini_train) == 6 and not mini_val

    det = make_detection_cache(tmp_path / "d")
    train, val = split_samples(det, 1.0, 0.5, 0)
    sessions = {det.samples[i].name[:4] for i in val}
    assert len(sessions) == 1 and len(val) == 2  # both views of one session
    assert not sessions & {det.samples[i].name[:4] for i in train}


def test_epoch_batches_are_deterministic_and_shard_the_global_batch(tmp_path):
    one = EpochBatches(10, 4, seed=5)
    assert [len(b) for b in one.global_batches(0)] == [4, 4, 2]
    assert [len(b) for b in one.shards(0)] == [4, 4, 2]
    assert sorted(np.concatenate(one.global_batches(3)).tolist()) == list(range(10))
    ranks = [EpochBatches(10, 4, seed=5, rank=r, world=2) for r in (0, 1)]
    for b, (a, c) in enumerate(zip(ranks[0].shards(2), ranks[1].shards(2), strict=True)):
        assert [i for _, i in a + c] == one.global_batches(2)[b].tolist()  # rank order
    # a last batch of 1 is dropped (BatchNorm), cut to equal shards, and resuming skips
    # whole batches
    assert [len(b) for b in EpochBatches(9, 4, 0).global_batches(0)] == [4, 4]
    assert [len(b) for b in EpochBatches(11, 4, 0, world=2).global_batches(0)] == [4, 4, 2]
    assert [len(b) for b in EpochBatches(10, 4, 0, world=2).global_batches(0)] == [4, 4, 2]
    assert EpochBatches(10, 4, 5).shards(0, start=2) == one.shards(0)[2:]
    with pytest.raises(ValueError, match="multiple"):
        EpochBatches(10, 3, 0, rank=0, world=2)


def test_loader_does_not_touch_the_global_torch_rng(tmp_path):
    cache = make_classification_cache(tmp_path / "c", modalities=("depth",))
    data = ClassificationClips(cache, [0, 1, 2], ["depth"], spec_of(cache), train=True)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    batch = next(loader(data, [[(0, 0), (0, 2)]]))
    assert batch["inputs"]["depth"].shape == (2, 4, SIZE, SIZE)
    assert torch.equal(torch.rand(3), expected)


def test_class_names_from_the_synth_marker(tmp_path):
    cache = make_classification_cache(tmp_path / "c")
    assert class_names(cache, 3) == ["class_1", "class_2", "class_3"]
    (tmp_path / "c" / "gd-synth.json").write_text('{"classes": ["sit", "stand", "wave", "x"]}')
    assert class_names(cache, 3) == ["sit", "stand", "wave"]


def test_video_clips_of_normalized_frames_match_core(tmp_path):
    from training.data import video_inputs

    cache = make_detection_cache(tmp_path / "d")
    spec = spec_of(cache)
    clips = video_inputs(cache, 0, Normalizer(cache, "depth", spec), spec)
    # By hand: each frame through the per-pixel reference, clip c = kept frames
    # [c * clip_step, c * clip_step + clip_len) for every clip that fits in the 60 frames.
    frames = [reference_preprocess(f, spec) for f in cache.frames("depth", 0, np.arange(60))]
    n_clips = (60 - spec.clip_len) // spec.clip_step + 1
    starts = [c * spec.clip_step for c in range(n_clips)]
    expected = np.stack([np.stack(frames[s : s + spec.clip_len]) for s in starts])
    # float32 lookup table against the reference's float64 arithmetic: a few ulps of values
    # of order 1 (normalized depth), so 1e-6 absolute and relative
    np.testing.assert_allclose(clips, expected, rtol=1e-6, atol=1e-6)
