"""The packed, memory-mapped dataset cache that training reads (written by `gd-prep`).

```
CACHE/meta.json           what is inside: dataset, kept frame rate, size, modalities, samples
                          (name, subset per split, label or segments, offset, length), stats
CACHE/<modality>.npy      every sample's kept frames back to back, memory-mapped:
                          depth uint16 [N, H, W] mm · rgb uint8 [N, H, W, 3] ·
                          flow float16 [N, H, W, 2] px · jjd/jjv/jld float32 [N, D]
CACHE/parts/              per-sample pieces while `gd-prep` runs (resumable); removed once packed
```

Decoding PNG and AVI once, here, instead of per training sample is what makes training fast.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.files import atomic_output, atomic_write_text

FORMAT_VERSION = 1
IMAGE_MODALITIES = ("depth", "rgb", "flow")
SKELETON_MODALITIES = ("jjd", "jjv", "jld")
MODALITIES = IMAGE_MODALITIES + SKELETON_MODALITIES
DTYPES = {
    "depth": np.uint16,
    "rgb": np.uint8,
    "flow": np.float16,
    "jjd": np.float32,
    "jjv": np.float32,
    "jld": np.float32,
}


class CacheError(ValueError):
    """The cache is missing, incomplete or inconsistent."""


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_output(path, suffix=".npy") as tmp:
        np.save(tmp, array)


# --- writing -------------------------------------------------------------------------------


class CacheWriter:
    """Collects per-sample arrays as parts, then packs them into one file per modality.

    Parts make `gd-prep` resumable and parallel: a sample whose `done` marker exists is not
    decoded again, and workers never share a file.
    """

    def __init__(self, root: Path, modalities: list[str]) -> None:
        unknown = sorted(set(modalities) - set(MODALITIES))
        if unknown:
            raise CacheError(f"unknown modalities {unknown}; known: {', '.join(MODALITIES)}")
        self.root = Path(root)
        self.modalities = list(modalities)
        for m in [*self.modalities, "done"]:
            (self.parts / m).mkdir(parents=True, exist_ok=True)

    @property
    def parts(self) -> Path:
        return self.root / "parts"

    def is_done(self, name: str) -> bool:
        return (self.parts / "done" / f"{name}.json").exists()

    def write_sample(self, name: str, arrays: dict[str, np.ndarray], info: dict) -> None:
        """Store one sample's frames (all modalities the same length) and its metadata."""
        lengths = {m: len(a) for m, a in arrays.items()}
        if set(arrays) != set(self.modalities):
            raise CacheError(f"{name}: got modalities {sorted(arrays)}, want {self.modalities}")
        if len(set(lengths.values())) != 1:
            raise CacheError(f"{name}: modalities differ in length {lengths}")
        for m, a in arrays.items():
            atomic_save_npy(self.parts / m / f"{name}.npy", np.asarray(a, dtype=DTYPES[m]))
        record = {**info, "name": name, "length": next(iter(lengths.values()), 0)}
        atomic_write_text(self.parts / "done" / f"{name}.json", json.dumps(record))

    def sample_info(self, name: str) -> dict:
        return json.loads((self.parts / "done" / f"{name}.json").read_text())

    def pack(self, names: list[str], meta: dict[str, Any]) -> None:
        """Concatenate the parts of `names`, in order, and write `meta.json` last."""
        samples, offset = [], 0
        for name in names:
            info = self.sample_info(name)
            samples.append({**info, "offset": offset})
            offset += info["length"]
        for m in self.modalities:
            first = np.load(self.parts / m / f"{names[0]}.npy", mmap_mode="r")
            tmp = self.root / f".{m}.packing.npy"
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=DTYPES[m], shape=(offset, *first.shape[1:])
            )
            for s in samples:
                out[s["offset"] : s["offset"] + s["length"]] = np.load(
                    self.parts / m / f"{s['name']}.npy", mmap_mode="r"
                )
            out.flush()
            del out
            os.replace(tmp, self.root / f"{m}.npy")
        full = {
            **meta,
            "format_version": FORMAT_VERSION,
            "modalities": self.modalities,
            "samples": samples,
        }
        atomic_write_text(self.root / "meta.json", json.dumps(full, indent=1))
        shutil.rmtree(self.parts)


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedSample:
    name: str
    offset: int
    length: int
    info: dict


class Cache:
    """Read access to a packed cache: `cache.frames("depth", i, kept_indices)`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            hint = " (gd-prep did not finish; run it again to resume)" if self._partial() else ""
            raise CacheError(f"{self.root} is not a gd-prep cache: no meta.json{hint}")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise CacheError(
                f"{meta_path}: format_version {self.meta.get('format_version')}, "
                f"this code reads {FORMAT_VERSION}; run gd-prep again"
            )
        self.samples = [
            CachedSample(s["name"], s["offset"], s["length"], s) for s in self.meta["samples"]
        ]
        self.index = {s.name: i for i, s in enumerate(self.samples)}
        self._arrays: dict[str, np.ndarray] = {}

    def _partial(self) -> bool:
        return (self.root / "parts").exists()

    @property
    def modalities(self) -> list[str]:
        return list(self.meta["modalities"])

    def array(self, modality: str) -> np.ndarray:
        if modality not in self.modalities:
            raise CacheError(f"{self.root} has no {modality!r}; it has {self.modalities}")
        if modality not in self._arrays:
            self._arrays[modality] = np.load(self.root / f"{modality}.npy", mmap_mode="r")
        return self._arrays[modality]

    def frames(self, modality: str, sample: int, kept: np.ndarray) -> np.ndarray:
        """Kept frames `kept` (indices within the sample) of one sample and modality."""
        s = self.samples[sample]
        kept = np.asarray(kept)
        if kept.size and (kept.min() < 0 or kept.max() >= s.length):
            raise IndexError(f"{s.name}: frames {kept.min()}..{kept.max()} of {s.length}")
        return np.asarray(self.array(modality)[s.offset + kept])

    def __len__(self) -> int:
        return len(self.samples)
