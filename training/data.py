"""Torch datasets over the gd-prep cache: classification clips and detection windows.

Every random choice is drawn from `np.random.default_rng([seed, epoch, index])`, so an
example depends only on (seed, epoch, index): a resumed run, a run with DataLoader workers
and every rank of a distributed run read exactly the same examples.

Network input per modality (frames of a clip stacked as channels, as `training.networks`
wants): depth `float32[T_c, H, W]` through `core.clip.DepthPreprocessor`'s lookup table (the
server's normalization, bit for bit), RGB `[T_c*3, H, W]` and flow `[T_c*2, H, W]` normalized
per channel, skeleton features `[T_c, D]` per dimension, all with the cache's training-set
statistics.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from core.clip import ClipSpec, DepthPreprocessor, video_clips
from core.splits import VIDEO_NAME
from synth.formats import SYNTH_MARKER
from training.cache import Cache, CacheError
from training.datasets.subsets import mini_subset
from training.samplers import classification_clip_starts, clip_labels, window_clip_starts

Key = tuple[int, int]  # (epoch, index) of a training example


def clip_spec(
    cache: Cache, clip_len: int, clip_step: int, window: int, window_step: int
) -> ClipSpec:
    """The cache's ClipSpec (rate, size, depth range, depth mean/std) with this clip geometry.

    A person-crop cache was cropped clip by clip on its own grid; training on another grid
    would feed clips the server never makes, so that geometry is refused."""
    stored = cache.meta["clip"]
    if stored.get("person_crop") and (clip_len, clip_step) != (
        stored["clip_len"],
        stored["clip_step"],
    ):
        raise CacheError(
            f"{cache.root} was cropped per clip of {stored['clip_len']} kept frames "
            f"(step {stored['clip_step']}); clip_len={clip_len}, clip_step={clip_step} would "
            "train on clips the server never makes: use the cache's, or prepare it again"
        )
    return ClipSpec.from_dict(
        {
            **cache.meta["clip"],
            "clip_len": clip_len,
            "clip_step": clip_step,
            "window": window,
            "window_step": window_step,
        }
    )


class Normalizer:
    """Stored frames of one modality `[n, ...]` -> float32 network frames: `[n, C, H, W]` for
    image modalities, `[n, D]` for skeleton features.

    Every image modality is normalized by table lookup: depth by the server's own table,
    RGB (uint8) and flow (float16, looked up by its bit pattern) by one table per channel,
    which is several times faster than converting and scaling.
    """

    def __init__(self, cache: Cache, modality: str, spec: ClipSpec) -> None:
        if modality not in cache.modalities:
            raise CacheError(f"{cache.root} has no {modality!r}; it has {cache.modalities}")
        self.modality = modality
        if modality == "depth":
            # Same input and output size: the preprocessor is just the server's lookup table.
            self.depth = DepthPreprocessor(spec, *cache.array(modality).shape[1:3])
            return
        stats = cache.meta["stats"][modality]
        mean = np.asarray(stats["mean"], np.float64)
        std = np.asarray(stats["std"], np.float64)
        if modality == "rgb":
            values = np.arange(256) / 255.0
        elif modality == "flow":
            values = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float64)
        else:
            self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
            return
        with np.errstate(invalid="ignore"):  # float16 NaN / inf codes never occur in flow
            self.tables = ((values[None] - mean[:, None]) / std[:, None]).astype(np.float32)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if self.modality == "depth":
            return self.depth(frames)[:, None]
        if self.modality not in ("rgb", "flow"):
            return (frames - self.mean) / self.std
        codes = frames if self.modality == "rgb" else frames.view(np.uint16)
        out = np.empty((len(frames), len(self.tables), *frames.shape[1:3]), np.float32)
        for c, table in enumerate(self.tables):
            out[:, c] = table[codes[..., c]]
        return out


def stack_clips(frames: np.ndarray) -> np.ndarray:
    """`[..., T_c, C, H, W]` -> `[..., T_c*C, H, W]`; vector clips `[..., T_c, D]` unchanged."""
    if frames.ndim < 4:
        return frames
    *lead, t, c, h, w = frames.shape
    return frames.reshape(*lead, t * c, h, w)


def read_clips(
    cache: Cache, sample: int, norm: Normalizer, starts: np.ndarray, spec: ClipSpec
) -> np.ndarray:
    """Clips starting at kept frames `starts` -> `[len(starts), *clip]` network input."""
    length = cache.samples[sample].length
    kept = np.minimum(starts[:, None] + np.arange(spec.clip_len), length - 1)
    lo, hi = int(kept.min()), int(kept.max()) + 1  # one contiguous read, then index
    frames = norm(cache.frames(norm.modality, sample, np.arange(lo, hi)))
    return stack_clips(frames[kept - lo])


def video_inputs(cache: Cache, sample: int, norm: Normalizer, spec: ClipSpec) -> np.ndarray:
    """Every clip of a video on the clip grid (`core.clip.video_clips`): `[n_clips, *clip]`."""
    length = cache.samples[sample].length
    frames = norm(cache.frames(norm.modality, sample, np.arange(length)))
    return stack_clips(np.array(video_clips(frames, spec)))  # a writable copy


# --- which samples -------------------------------------------------------------------------


def _group(info: dict) -> str:
    """Samples of one group never straddle train and validation: an NTU performer, a
    PKU-MMD recording session (its views L, M, R share the name's number), or else the
    recording itself (a site's `kitchen-001`, `site-002`: one camera, one recording)."""
    if "performer" in info:
        return f"P{info['performer']}"
    session = VIDEO_NAME.fullmatch(info["name"])
    return session.group(1) if session else info["name"]


def split_samples(
    cache: Cache, mini: float, val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(train, validation) sample indices from the cache's training subset: `mini` keeps that
    fraction of it (the paper's mini sets), then `val_fraction` of its groups are held out."""
    train = subset_samples(cache, "train")
    if mini < 1:
        train = mini_subset(train, mini, seed)
    groups = sorted({_group(cache.samples[i].info) for i in train})
    n_val = 0  # at least one group held out, at least one left to train on
    if val_fraction > 0 and len(groups) > 1:
        n_val = min(max(round(val_fraction * len(groups)), 1), len(groups) - 1)
    held = set(np.random.default_rng([seed, 0x7A1]).permutation(groups)[:n_val].tolist())
    is_val = [_group(cache.samples[i].info) in held for i in train]
    return (
        [i for i, v in zip(train, is_val, strict=True) if not v],
        [i for i, v in zip(train, is_val, strict=True) if v],
    )


def subset_samples(cache: Cache, subset: str) -> list[int]:
    """Indices of the cache's `subset` ("train" | "test") samples."""
    out = [i for i, s in enumerate(cache.samples) if s.info.get("subset") == subset]
    if not out:
        raise CacheError(f"{cache.root}: no {subset} samples")
    return out


def num_classification_classes(cache: Cache) -> int:
    return 1 + max(int(s.info["label"]) for s in cache.samples)


def num_detection_classes(cache: Cache) -> int:
    labels = [int(row[0]) for s in cache.samples for row in s.info.get("segments", [])]
    if not labels:
        raise CacheError(f"{cache.root}: no action segments; is it a PKU-MMD cache?")
    return max(labels)


def class_names(cache: Cache, num_classes: int) -> list[str]:
    """Action names: the cache's own `classes` (a site's recordings), else those of the
    `gd-synth.json` of the cache's dataset when there is one, else `class_<id>` (ids as in
    the dataset: 1-based)."""
    names: list[str] = list(cache.meta.get("classes", []))
    marker = Path(cache.meta.get("settings", {}).get("root", "")) / SYNTH_MARKER
    if not names and marker.is_file():
        names = list(json.loads(marker.read_text()).get("classes", []))
    if len(names) >= num_classes:
        return names[:num_classes]
    return [f"class_{i + 1}" for i in range(num_classes)]


# --- datasets ------------------------------------------------------------------------------


class ClassificationClips(Dataset):
    """Training (`train=True`, keys `(epoch, i)`): one random clip per modality, the same frames
    for all. Test (keys `i`): the 5 uniform clips, `[5, *clip]`. Items are
    `{"inputs": {modality: array}, "label": int}` (0-based class)."""

    def __init__(
        self,
        cache: Cache,
        samples: Sequence[int],
        modalities: Sequence[str],
        spec: ClipSpec,
        train: bool,
        seed: int = 0,
    ) -> None:
        self.cache, self.samples, self.spec = cache, list(samples), spec
        self.train, self.seed = train, seed
        self.norms = {m: Normalizer(cache, m, spec) for m in modalities}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Key | int) -> dict:
        if self.train:
            epoch, index = key
            rng = np.random.default_rng([self.seed, epoch, index])
        else:
            index, rng = key, None
        sample = self.samples[index]
        starts = classification_clip_starts(self.cache.samples[sample].length, self.spec, rng)
        inputs = {
            m: read_clips(self.cache, sample, n, starts, self.spec) for m, n in self.norms.items()
        }
        if self.train:
            inputs = {m: x[0] for m, x in inputs.items()}
        return {"inputs": inputs, "label": int(self.cache.samples[sample].info["label"])}


class DetectionWindows(Dataset):
    """Training windows (keys `(epoch, j)`): item j is a random window of `spec.window` clips
    of one video. A video gives `windows_per_video * frames / window span` items an epoch (at
    least one), so long videos are seen in proportion to their length. Items are
    `{"inputs": {modality: [T_w, *clip]}, "label": int64[T_w]}` (0 = background)."""

    def __init__(
        self,
        cache: Cache,
        samples: Sequence[int],
        modalities: Sequence[str],
        spec: ClipSpec,
        seed: int = 0,
        windows_per_video: float = 1.0,
    ) -> None:
        self.cache, self.spec, self.seed = cache, spec, seed
        self.norms = {m: Normalizer(cache, m, spec) for m in modalities}
        span = (spec.window - 1) * spec.clip_step + spec.clip_len
        self.items: list[int] = []
        self.too_short: list[str] = []
        for i in samples:
            length = cache.samples[i].length
            if length < span:
                self.too_short.append(cache.samples[i].name)
                continue
            self.items += [i] * max(1, round(windows_per_video * length / span))
        if not self.items:
            raise CacheError(f"{cache.root}: no training video is as long as a window ({span})")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Key) -> dict:
        epoch, j = key
        sample = self.items[j]
        info = self.cache.samples[sample]
        rng = np.random.default_rng([self.seed, epoch, j])
        starts = window_clip_starts(info.length, self.spec, rng)
        inputs = {
            m: read_clips(self.cache, sample, n, starts, self.spec) for m, n in self.norms.items()
        }
        segments = np.asarray(info.info["segments"]).reshape(-1, 4)
        return {"inputs": inputs, "label": clip_labels(segments, starts, self.spec)}


# --- batches -------------------------------------------------------------------------------


class EpochBatches:
    """The global batches of an epoch, and this rank's share of each.

    Epoch e visits the examples in a permutation drawn from (seed, e), `batch_size` at a time;
    rank r of `world` takes the r-th contiguous slice of every global batch, so gathering the
    ranks' outputs in rank order restores the single-process batch. A last, smaller batch is
    cut to a multiple of `world` (equal shards) and dropped if that leaves fewer than 2
    examples (BatchNorm, synchronized over ranks, needs more than one value per channel).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} must be a multiple of the {world} processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world = rank, world

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        order = np.random.default_rng([self.seed, 0xBA7C, epoch]).permutation(self.n)
        batches = [order[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        last = batches[-1][: len(batches[-1]) // self.world * self.world]
        batches[-1] = last
        if len(last) < 2 and len(batches) > 1:
            batches.pop()
        return batches

    def __len__(self) -> int:
        return len(self.global_batches(0))

    def shards(self, epoch: int, start: int = 0) -> list[list[Key]]:
        """This rank's `(epoch, index)` keys of global batches `start..`."""
        out = []
        for batch in self.global_batches(epoch)[start:]:
            size = len(batch) // self.world
            out.append([(epoch, int(i)) for i in batch[self.rank * size : (self.rank + 1) * size]])
        return out


def loader(dataset: Dataset, batches: list[list[Key]], workers: int = 0) -> Iterator[dict]:
    """Batches of `dataset` as tensors (a DataLoader over explicit index lists). Its own
    generator keeps the DataLoader from drawing from the global torch RNG (dropout's), so a run
    resumed mid-epoch draws the same dropout masks as an unbroken one."""
    return iter(
        DataLoader(dataset, batch_sampler=batches, num_workers=workers, generator=torch.Generator())
    )


def to_device(batch: dict, device: torch.device) -> dict:
    return {
        "inputs": {m: x.to(device, non_blocking=True) for m, x in batch["inputs"].items()},
        "label": batch["label"].to(device, non_blocking=True),
    }
