"""Tiny prepared caches (the packed format training reads) and the tiny training configuration
that the training, export and end-to-end tests share."""

import numpy as np

from core.clip import ClipSpec
from training.cache import Cache, CacheWriter

# A network and schedule small enough to train in seconds on the caches below.
TINY = [
    "model.width=4", "model.hidden_size=8", "clip.clip_len=4", "clip.clip_step=4",
    "clip.window=3", "clip.window_step=2", "source.epochs=2", "source.batch_size=4",
    "source.uniform_epochs=1", "source.lr_steps=[1]", "target.epochs=2", "target.batch_size=2",
    "target.uniform_epochs=1", "target.val_fraction=0.5", "train.progress=false",
    "train.graphs=false", "train.threads=1",
]  # fmt: skip
SIZE = 16
VECTOR = 6  # skeleton feature size of the tiny caches


def _stats(rng):
    return {
        "depth": {"mean": 0.4, "std": 0.2},
        "rgb": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]},
        "flow": {"mean": [0.1, -0.1], "std": [1.5, 2.0]},
        "jjd": {"mean": rng.normal(0, 1, VECTOR).tolist(), "std": [2.0] * VECTOR},
    }


def _frames(rng, n, modalities, size=SIZE):
    out = {
        "depth": rng.integers(0, 5000, (n, size, size)).astype(np.uint16),
        "rgb": rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8),
        "flow": rng.normal(0, 2, (n, size, size, 2)).astype(np.float16),
        "jjd": rng.normal(0, 1, (n, VECTOR)).astype(np.float32),
    }
    return {m: out[m] for m in modalities}


def make_classification_cache(
    root, modalities=("depth", "flow", "jjd"), per_class=2, seed=0, size=SIZE
):
    """3 classes x `per_class` samples for each of performers 1, 2 (training subjects) and 3
    (test); kept lengths 8..19 frames. Labels follow the depth frames' mean, so a network can
    learn them."""
    rng = np.random.default_rng(seed)
    writer = CacheWriter(root, list(modalities))
    names = []
    for performer in (1, 2, 3):
        for label in range(3):
            for r in range(per_class):
                name = f"S001C001P{performer:03d}R{r + 1:03d}A{label + 1:03d}"
                arrays = _frames(rng, int(rng.integers(8, 20)), modalities, size)
                if "depth" in arrays:
                    arrays["depth"] = (arrays["depth"] // 4 + 1000 * label + 600).astype(np.uint16)
                subset = "test" if performer == 3 else "train"
                info = {"subset": subset, "label": label, "performer": performer}
                writer.write_sample(name, arrays, info)
                names.append(name)
    spec = ClipSpec(height=size, width=size, clip_len=4, clip_step=4, window=3, window_step=2)
    meta = {"settings": {"root": str(root)}, "clip": {**spec.to_dict(), "mean": 0.4, "std": 0.2},
            "stats": _stats(rng)}  # fmt: skip
    writer.pack(names, meta)
    return Cache(root)


def make_detection_cache(root, modalities=("depth", "flow", "jjd"), seed=0, length=60, size=SIZE):
    """Sessions 1, 2 (train) and 3 (test), views L and M: 6 videos of `length` kept frames with
    actions 1 and 2 (source frames, downsample 3)."""
    rng = np.random.default_rng(seed)
    writer = CacheWriter(root, list(modalities))
    names = []
    for session in (1, 2, 3):
        for view in "LM":
            name = f"{session:04d}-{view}"
            segments = [[1, 24, 71, 2], [2, 90, 140, 2]]
            writer.write_sample(
                name,
                _frames(rng, length, modalities, size),
                {"subset": "test" if session == 3 else "train", "segments": segments},
            )
            names.append(name)
    spec = ClipSpec(height=size, width=size, clip_len=4, clip_step=4, window=3, window_step=2)
    meta = {"settings": {"root": str(root)}, "clip": {**spec.to_dict(), "mean": 0.4, "std": 0.2},
            "stats": _stats(rng)}  # fmt: skip
    writer.pack(names, meta)
    return Cache(root)


def spec_of(cache, **kw):
    return ClipSpec.from_dict({**cache.meta["clip"], **kw})
