"""gd-prep --person-crop: each clip cropped to its person box against the sample's empty-room
reference (<root>/reference/<name>.png), as the server crops a camera's clips."""

import numpy as np
import pytest

from core.foreground import crop_clip_mm, crop_clips
from synth.formats import (
    ntu_name,
    pku_video_name,
    reference_path,
    write_ntu_sample,
    write_pku_splits,
    write_pku_video,
    write_reference,
)
from training.cache import Cache, CacheError
from training.config import ConfigError, load_config
from training.prep import PrepSettings, main, prepare

ROOM_MM = 3000
SIZE = (24, 32)


def person_video(n: int, move_at: int) -> np.ndarray:
    """A flat room with a person (nearer block) who steps right at frame `move_at`."""
    depth = np.full((n, *SIZE), ROOM_MM, np.uint16)
    depth[:move_at, 8:16, 4:8] = 1800  # boxes well inside the frame: not moved by its edges
    depth[move_at:, 8:16, 22:26] = 1800
    return depth


def skeleton(n: int):
    joints = np.zeros((n, 1, 25, 3), np.float32) + np.float32([0, 0, 3])
    xy = np.zeros((n, 1, 25, 2), np.float32)
    return joints, np.ones((n, 1), bool), xy, xy


def write_pku_tree(root, n=60, with_references=True):
    """Two videos of `n` frames (n / 3 kept: two grid clips of 10), the person stepping right
    between the clips."""
    videos = [pku_video_name(k, "M") for k in (1, 2)]
    for v in videos:
        joints, tracked, _, _ = skeleton(n)
        write_pku_video(root, v, joints, tracked, [(1, 5, 20)], depth=person_video(n, n // 2))
        if with_references:
            write_reference(root, v, np.full(SIZE, ROOM_MM, np.uint16))
    write_pku_splits(root, (videos[:1], videos[1:]), (videos[:1], videos[1:]))
    return videos


def pku_settings(root, **kw):
    return PrepSettings(dataset="pku", root=str(root), modalities=("depth",), height=8,
                        width=8, split="cross-subject", **kw)  # fmt: skip


def test_detection_videos_crop_each_grid_clip_to_its_own_box(tmp_path):
    videos = write_pku_tree(tmp_path / "pku")
    s = pku_settings(tmp_path / "pku", person_crop=True)
    prepare(s, tmp_path / "cache", progress=False)
    cache = Cache(tmp_path / "cache")
    assert cache.meta["clip"]["person_crop"] is True  # the model's spec, for the server
    kept = person_video(60, 30)[::3]
    reference = np.full(SIZE, ROOM_MM, np.uint16)
    depth = cache.frames("depth", cache.index[videos[0]], np.arange(20))
    np.testing.assert_array_equal(depth, crop_clips(kept, reference, s.spec))
    # one box per clip: the person fills the same output pixels in both clips, although they
    # stood elsewhere in the frame
    np.testing.assert_array_equal(depth[0], depth[10])


def test_classification_samples_get_one_box_for_the_whole_sample(tmp_path):
    root, n = tmp_path / "ntu", 60
    joints, tracked, dxy, cxy = skeleton(n)
    name = ntu_name(1, 1, 1, 1, 1)
    write_ntu_sample(root, name, joints, tracked, dxy, cxy, depth=person_video(n, n // 2))
    write_reference(root, name, np.full(SIZE, ROOM_MM, np.uint16))
    s = PrepSettings(dataset="ntu", root=str(root), modalities=("depth",), height=8, width=8,
                     person_crop=True)  # fmt: skip
    prepare(s, tmp_path / "cache", progress=False)
    cache = Cache(tmp_path / "cache")
    kept = person_video(n, n // 2)[::3]
    reference = np.full(SIZE, ROOM_MM, np.uint16)
    depth = cache.frames("depth", cache.index[name], np.arange(20))
    # training clips start anywhere in a sample: one box (both places) for all of it
    np.testing.assert_array_equal(depth, crop_clip_mm(kept, reference, s.spec))
    assert not np.array_equal(depth, crop_clips(kept, reference, s.spec))


def test_a_missing_reference_exits_2_naming_it_and_how_to_make_one(tmp_path, capsys):
    root = tmp_path / "pku"
    videos = write_pku_tree(root)
    reference_path(root, videos[1]).unlink()
    argv = ["--dataset", "pku", "--root", str(root), "--out", str(tmp_path / "c"),
            "--modalities", "depth", "--size", "8x8", "--workers", "1"]  # fmt: skip
    assert main([*argv, "--person-crop"]) == 2
    err = capsys.readouterr().err
    assert str(reference_path(root.resolve(), videos[1])) in err
    assert "gd-stream reference" in err and "gd-synth" in err
    assert not (tmp_path / "c").exists()  # refused before any work
    assert main(argv) == 0  # without the crop, no reference is needed


def test_a_cache_made_without_the_crop_is_not_reused_with_it(tmp_path, capsys):
    write_pku_tree(tmp_path / "pku")
    prepare(pku_settings(tmp_path / "pku"), tmp_path / "cache", progress=False)
    with pytest.raises(CacheError, match="person_crop false there, true here"):
        prepare(pku_settings(tmp_path / "pku", person_crop=True), tmp_path / "cache")
    assert prepare(pku_settings(tmp_path / "pku"), tmp_path / "cache")["status"] == "complete"
    argv = ["--dataset", "pku", "--root", str(tmp_path / "pku"), "--out", str(tmp_path / "cache"),
            "--modalities", "depth", "--size", "8x8", "--person-crop"]  # fmt: skip
    assert main(argv) == 2
    assert "complete cache made with other settings" in capsys.readouterr().err


def test_the_crop_needs_references_of_the_frames_size(tmp_path):
    root = tmp_path / "pku"
    videos = write_pku_tree(root)
    write_reference(root, videos[0], np.full((12, 16), ROOM_MM, np.uint16))
    summary = prepare(pku_settings(root, person_crop=True), tmp_path / "cache", progress=False)
    assert list(summary["skipped"]) == [videos[0]]
    assert "reference 12x16" in summary["skipped"][videos[0]]


def test_the_training_config_keeps_the_crops_clip_grid():
    assert load_config("quick", None, ["prep.person_crop=true"]).prep.person_crop
    with pytest.raises(ConfigError, match="clip.clip_len and clip.clip_step must both be 10"):
        load_config("quick", None, ["prep.person_crop=true", "clip.clip_len=4"])


def test_site_recordings_are_refused_with_the_crop(tmp_path):
    s = PrepSettings(dataset="recordings", root=str(tmp_path), modalities=("depth",),
                     person_crop=True)  # fmt: skip
    with pytest.raises(CacheError, match="ntu and pku layouts"):
        prepare(s, tmp_path / "cache")


def test_training_on_another_clip_grid_than_the_crops_is_refused(tmp_path):
    from training.data import clip_spec

    write_pku_tree(tmp_path / "pku")
    prepare(pku_settings(tmp_path / "pku", person_crop=True), tmp_path / "cache", progress=False)
    cache = Cache(tmp_path / "cache")
    assert clip_spec(cache, 10, 10, 4, 1).person_crop  # the cache's own grid
    with pytest.raises(CacheError, match="cropped per clip of 10"):
        clip_spec(cache, 4, 4, 4, 1)
