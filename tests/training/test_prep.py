import json
from dataclasses import asdict

import numpy as np
import pytest

from core.clip import DepthPreprocessor
from synth.formats import (
    ntu_name,
    pku_video_name,
    write_ntu_sample,
    write_pku_splits,
    write_pku_video,
)
from tests.helpers.depth_reference import reference_millimetres
from training.cache import Cache, CacheError, CacheWriter
from training.datasets import NTUDataset
from training.prep import PrepSettings, main, optical_flow, prepare, prepare_sample
from training.skeleton_features import jjd

N_FRAMES = 20  # 30 fps -> kept frames 0, 3, ..., 18: 7 of them
KEPT = np.arange(0, N_FRAMES, 3)


def random_body(rng, n, bodies=1):
    joints = rng.normal(0, 0.3, (n, bodies, 25, 3)).astype(np.float32) + np.float32([0, 0, 3])
    xy = rng.uniform(0, 60, (n, bodies, 25, 2)).astype(np.float32)
    return joints, np.ones((n, bodies), bool), xy, xy


def write_ntu_tree(root, rng, performers=(1, 2, 3), with_images=True):
    """Performers 1 and 2 are in the cross-subject training set, 3 in the test set."""
    names = []
    for performer in performers:
        name = ntu_name(1, 1, performer, 1, 5 + performer)
        joints, tracked, dxy, cxy = random_body(rng, N_FRAMES)
        depth = rgb = None
        if with_images:
            depth = rng.integers(0, 5000, (N_FRAMES, 24, 32)).astype(np.uint16)
            rgb = rng.integers(0, 255, (N_FRAMES, 24, 32, 3)).astype(np.uint8)
        write_ntu_sample(root, name, joints, tracked, dxy, cxy, depth=depth, rgb=rgb)
        names.append(name)
    return names


def nearest_valid_depth(frames, spec):
    """Each frame reduced by the per-pixel reference, not by the code under test."""
    return np.stack([reference_millimetres(frame, spec) for frame in frames])


def settings(root, modalities, **kw):
    return PrepSettings(
        dataset="ntu", root=str(root), modalities=tuple(modalities), height=8, width=8,
        flow="farneback", **kw,
    )  # fmt: skip


def test_ntu_cache_holds_the_kept_frames_of_every_modality(tmp_path):
    rng = np.random.default_rng(0)
    names = write_ntu_tree(tmp_path / "ntu", rng)
    s = settings(tmp_path / "ntu", ["depth", "rgb", "flow", "jjd"])
    summary = prepare(s, tmp_path / "cache", workers=1, progress=False)
    assert summary == {"status": "packed", "samples": 3, "skipped": {}}

    cache = Cache(tmp_path / "cache")
    assert sorted(x.name for x in cache.samples) == sorted(names)
    sample = next(x for x in NTUDataset(tmp_path / "ntu", subset="test"))
    i = cache.index[sample.name]
    assert cache.samples[i].length == len(KEPT)
    assert cache.samples[i].info["subset"] == "test"
    assert cache.samples[i].info["label"] == sample.label

    depth_pngs = sample.load_depth()[KEPT]
    expected = nearest_valid_depth(depth_pngs, s.spec)
    np.testing.assert_array_equal(cache.frames("depth", i, np.arange(len(KEPT))), expected)
    np.testing.assert_allclose(
        cache.frames("jjd", i, np.arange(len(KEPT))), jjd(sample.load_skeleton()[KEPT]), rtol=1e-6
    )
    rgb = cache.frames("rgb", i, np.arange(len(KEPT)))
    assert rgb.shape == (len(KEPT), 8, 8, 3) and rgb.dtype == np.uint8
    assert cache.array("flow").shape[1:] == (8, 8, 2)

    # Statistics come from the two training samples only.
    train = [cache.index[x.name] for x in NTUDataset(tmp_path / "ntu", subset="train")]
    frames = np.concatenate([cache.frames("depth", j, np.arange(len(KEPT))) for j in train])
    unit = frames / s.depth_max_mm
    assert cache.meta["stats"]["depth"]["mean"] == pytest.approx(unit.mean())
    assert cache.meta["clip"]["std"] == pytest.approx(unit.std())


def test_corrupt_file_is_skipped_by_name_and_the_run_goes_on(tmp_path, capsys):
    rng = np.random.default_rng(1)
    names = write_ntu_tree(tmp_path / "ntu", rng)
    bad = tmp_path / "ntu" / "nturgb+d_depth_masked" / names[0] / "MDepth-00000004.png"
    bad.write_bytes(b"not a png")
    summary = prepare(settings(tmp_path / "ntu", ["depth"]), tmp_path / "cache", progress=False)
    assert list(summary["skipped"]) == [names[0]]
    assert "MDepth-00000004.png" in summary["skipped"][names[0]]
    assert "skipped " + names[0] in capsys.readouterr().err
    cache = Cache(tmp_path / "cache")
    assert len(cache) == 2 and names[0] in cache.meta["skipped"]


def test_resume_keeps_finished_samples_and_refuses_other_settings(tmp_path):
    rng = np.random.default_rng(2)
    names = write_ntu_tree(tmp_path / "ntu", rng, with_images=False)
    s = settings(tmp_path / "ntu", ["jjd"])
    # An interrupted run: one sample done (marked with zeros), settings recorded.
    writer = CacheWriter(tmp_path / "cache", ["jjd"])
    (writer.parts / "settings.json").write_text(json.dumps(asdict(s), sort_keys=True))
    sample = next(iter(NTUDataset(tmp_path / "ntu", subset="train")))
    arrays = {"jjd": np.zeros_like(prepare_sample(sample, s)["jjd"])}
    writer.write_sample(sample.name, arrays, {"subset": "train", "label": sample.label})

    with pytest.raises(CacheError, match="other settings"):
        prepare(
            settings(tmp_path / "ntu", ["jjd"], downsample=2), tmp_path / "cache", progress=False
        )
    prepare(s, tmp_path / "cache", progress=False)
    cache = Cache(tmp_path / "cache")
    assert len(cache) == len(names)
    resumed = cache.frames("jjd", cache.index[sample.name], np.arange(len(KEPT)))
    assert not resumed.any()  # not decoded again
    other = next(n for n in names if n != sample.name)
    assert cache.frames("jjd", cache.index[other], np.arange(len(KEPT))).any()
    assert prepare(s, tmp_path / "cache", progress=False)["status"] == "complete"


def test_skeleton_only_tree_and_cli(tmp_path, capsys):
    rng = np.random.default_rng(3)
    write_ntu_tree(tmp_path / "ntu", rng, with_images=False)
    args = ["--dataset", "ntu", "--root", str(tmp_path / "ntu"), "--out", str(tmp_path / "c")]
    assert main([*args, "--workers", "2"]) == 0
    assert "cached 3 samples (jjd, jjv, jld)" in capsys.readouterr().out
    assert Cache(tmp_path / "c").modalities == ["jjd", "jjv", "jld"]
    assert main(["--dataset", "ntu", "--root", str(tmp_path / "nope"), "--out", "x"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--size", "big"])
    assert "argument --size: size must look like HxW" in capsys.readouterr().err


def test_pku_video_keeps_segments(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "pku"
    videos = [pku_video_name(n, "M") for n in (2, 3)]
    depths = {}
    for v in videos:
        joints, tracked, _, _ = random_body(rng, 40, bodies=2)
        depths[v] = rng.integers(0, 5000, (40, 12, 16)).astype(np.uint16)
        write_pku_video(root, v, joints, tracked, [(3, 5, 20), (7, 25, 38)], depth=depths[v])
    write_pku_splits(root, (videos[:1], videos[1:]), (videos[:1], videos[1:]))
    s = PrepSettings(dataset="pku", root=str(root), modalities=("depth", "jld"), height=6,
                     width=8, split="cross-subject")  # fmt: skip
    prepare(s, tmp_path / "cache", progress=False)
    cache = Cache(tmp_path / "cache")
    info = cache.samples[cache.index[videos[1]]].info
    assert info["subset"] == "test"
    assert [row[:3] for row in info["segments"]] == [[3, 5, 20], [7, 25, 38]]
    assert cache.samples[0].length == 14  # frames 0, 3, ..., 39
    for v in videos:  # the 16-bit PNGs were decoded, every kept frame, bit for bit
        frames = cache.frames("depth", cache.index[v], np.arange(14))
        np.testing.assert_array_equal(frames, nearest_valid_depth(depths[v][::3], s.spec))


@pytest.mark.parametrize("method", ["tvl1", "farneback"])
def test_optical_flow_recovers_a_known_shift(method):
    # A smooth blob moving 2 px right and 1 px down per kept frame.
    y, x = np.mgrid[0:48, 0:48].astype(np.float32)
    frames = [np.exp(-((x - 20 - 2 * t) ** 2 + (y - 22 - t) ** 2) / 60.0) * 255 for t in range(3)]
    rgb = np.stack([np.repeat(f[..., None], 3, axis=2) for f in frames]).astype(np.uint8)
    flow = optical_flow(rgb, method)
    assert flow.shape == (3, 48, 48, 2)
    centre = flow[0, 16:28, 16:28].reshape(-1, 2).mean(axis=0)
    np.testing.assert_allclose(centre, [2.0, 1.0], atol=0.5)
    np.testing.assert_array_equal(flow[2], flow[1])  # the last frame repeats the previous flow


@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_fit_reduces_frames_as_the_server_does_and_is_written_to_the_clip_spec(tmp_path, fit):
    """4:3 frames (24x32) into a square 8x8 input: the cache holds what the server's
    preprocessor makes of them, and the cache's clip spec carries the fit to the model."""
    rng = np.random.default_rng(5)
    write_ntu_tree(tmp_path / "ntu", rng)
    root, out = str(tmp_path / "ntu"), str(tmp_path / "c")
    argv = ["--dataset", "ntu", "--root", root, "--out", out, "--modalities", "depth", "rgb",
            "--size", "8x8", "--fit", fit, "--workers", "1"]  # fmt: skip
    assert main(argv) == 0
    cache = Cache(tmp_path / "c")
    assert cache.meta["clip"]["fit"] == fit and cache.meta["settings"]["fit"] == fit
    spec = settings(tmp_path / "ntu", ["depth"], fit=fit).spec
    sample = next(x for x in NTUDataset(tmp_path / "ntu", subset="test"))
    i = cache.index[sample.name]
    depth = cache.frames("depth", i, np.arange(len(KEPT)))
    expected = DepthPreprocessor(spec, 24, 32).to_millimetres(sample.load_depth()[KEPT])
    np.testing.assert_array_equal(depth, expected)
    rgb = cache.frames("rgb", i, np.arange(len(KEPT)))
    if fit == "pad":  # 24x32 -> 6x8 in rows 1..6; rows 0 and 7 are invalid depth, black RGB
        assert (depth[:, [0, 7]] == 0).all() and (rgb[:, [0, 7]] == 0).all()
        assert (depth[:, 1:7] > 0).any() and (rgb[:, 1:7] > 0).any()
    else:  # the centred 24x24 (columns 4..28) only
        crop = DepthPreprocessor(settings(tmp_path, ["depth"]).spec, 24, 24)
        np.testing.assert_array_equal(
            depth, crop.to_millimetres(sample.load_depth()[KEPT][:, :, 4:28])
        )


def test_unknown_fit_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--dataset", "ntu", "--root", str(tmp_path), "--out", str(tmp_path / "c"),
              "--fit", "zoom"])  # fmt: skip
    assert "invalid choice: 'zoom'" in capsys.readouterr().err
