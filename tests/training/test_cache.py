import json

import numpy as np
import pytest

from core.files import atomic_write_text
from training.cache import Cache, CacheError, CacheWriter


def make_samples(rng):
    return {
        name: {
            "depth": rng.integers(0, 5000, size=(n, 6, 8)).astype(np.uint16),
            "jjd": rng.standard_normal((n, 5)).astype(np.float32),
        }
        for name, n in [("a", 4), ("b", 7), ("c", 1)]
    }


def test_pack_and_read_back(tmp_path):
    rng = np.random.default_rng(0)
    samples = make_samples(rng)
    writer = CacheWriter(tmp_path, ["depth", "jjd"])
    for name, arrays in samples.items():
        writer.write_sample(name, arrays, {"label": ord(name)})
    assert writer.is_done("b") and not writer.is_done("z")
    writer.pack(["c", "a", "b"], {"dataset": "test"})

    cache = Cache(tmp_path)
    assert [s.name for s in cache.samples] == ["c", "a", "b"]
    assert [s.offset for s in cache.samples] == [0, 1, 5]
    assert cache.samples[2].info["label"] == ord("b")
    assert cache.meta["dataset"] == "test"
    for name, arrays in samples.items():
        i = cache.index[name]
        for m, a in arrays.items():
            np.testing.assert_array_equal(cache.frames(m, i, np.arange(len(a))), a)
    np.testing.assert_array_equal(cache.frames("depth", 1, [3, 0]), samples["a"]["depth"][[3, 0]])
    assert cache.array("depth").dtype == np.uint16
    assert not (tmp_path / "parts").exists()


def test_errors_say_what_is_wrong(tmp_path):
    writer = CacheWriter(tmp_path, ["depth"])
    with pytest.raises(CacheError, match="no meta.json .*run it again to resume"):
        Cache(tmp_path)
    with pytest.raises(CacheError, match="got modalities"):
        writer.write_sample("x", {"rgb": np.zeros((1, 2, 2, 3))}, {})
    with pytest.raises(CacheError, match="unknown modalities"):
        CacheWriter(tmp_path, ["sound"])
    writer.write_sample("x", {"depth": np.zeros((2, 3, 3))}, {})
    writer.pack(["x"], {})
    cache = Cache(tmp_path)
    with pytest.raises(CacheError, match="has no 'rgb'"):
        cache.array("rgb")
    with pytest.raises(IndexError, match="x: frames 0..2 of 2"):
        cache.frames("depth", 0, [0, 2])
    meta = json.loads((tmp_path / "meta.json").read_text())
    atomic_write_text(tmp_path / "meta.json", json.dumps({**meta, "format_version": 99}))
    with pytest.raises(CacheError, match="format_version 99"):
        Cache(tmp_path)


def test_length_mismatch_rejected(tmp_path):
    writer = CacheWriter(tmp_path, ["depth", "jjd"])
    with pytest.raises(CacheError, match="differ in length"):
        writer.write_sample("x", {"depth": np.zeros((2, 3, 3)), "jjd": np.zeros((3, 4))}, {})
