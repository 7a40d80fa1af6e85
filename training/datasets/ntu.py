"""NTU RGB+D 60 / 120: samples, benchmark splits and loaders (docs/datasets.md).

    root/nturgb+d_skeletons/SsssCcccPpppRrrrAaaa.skeleton
    root/nturgb+d_depth_masked/SsssCcccPpppRrrrAaaa/MDepth-%08d.png
    root/nturgb+d_rgb/SsssCcccPpppRrrrAaaa_rgb.avi

Any of the three folders may be absent (a skeleton-only tree is valid); a sample is listed if
any folder has it. NTU RGB+D 60 is setups 1-17 and actions 1-60 of the same tree. Samples in
the dataset's published list of missing or incomplete skeletons are skipped, as its authors
ask, in training and test alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from synth.formats import (
    NTU_DEPTH_DIR,
    NTU_NAME,
    NTU_RGB_DIR,
    NTU_RGB_SUFFIX,
    NTU_SKELETON_DIR,
    NTU_SKELETON_SUFFIX,
    SYNTH_MARKER,
    XSUB_TRAIN_60,
    XSUB_TRAIN_120,
)
from training.datasets.media import read_depth_folder, read_video
from training.datasets.skeleton_file import main_bodies, read_ntu_skeleton
from training.datasets.subsets import mini_subset

VERSIONS = {60: (17, 60), 120: (32, 120)}  # version -> (last setup, number of classes)
SPLITS = {60: ("xsub", "xview"), 120: ("xsub", "xset")}
SUBSETS = ("train", "test")
XVIEW_TRAIN_CAMERAS = frozenset((2, 3))
MISSING_SKELETON_FILES = {
    60: Path(__file__).with_name("missing_skeletons_ntu60.txt"),
    120: Path(__file__).with_name("missing_skeletons_ntu120.txt"),
}


@dataclass(frozen=True)
class NTUSample:
    """One NTU RGB+D sample; `label` is the 0-based class (action - 1)."""

    name: str
    setup: int
    camera: int
    performer: int
    replication: int
    action: int
    root: Path
    depth_dir_name: str = NTU_DEPTH_DIR

    @property
    def label(self) -> int:
        return self.action - 1

    @property
    def skeleton_path(self) -> Path:
        return self.root / NTU_SKELETON_DIR / f"{self.name}{NTU_SKELETON_SUFFIX}"

    @property
    def depth_dir(self) -> Path:
        return self.root / self.depth_dir_name / self.name

    @property
    def rgb_path(self) -> Path:
        return self.root / NTU_RGB_DIR / f"{self.name}{NTU_RGB_SUFFIX}"

    def load_skeleton(self) -> np.ndarray:
        """float32 [T, 2, 25, 3] metres, the two most active bodies."""
        return main_bodies(read_ntu_skeleton(self.skeleton_path))

    def load_depth(self) -> np.ndarray:
        """uint16 [T, H, W] millimetres (masked depth: 0 off the body)."""
        return read_depth_folder(self.depth_dir)

    def load_rgb(self) -> np.ndarray:
        """uint8 [T, H, W, 3] RGB."""
        return read_video(self.rgb_path)


def parse_ntu_name(name: str) -> tuple[int, int, int, int, int]:
    """(setup, camera, performer, replication, action) of `SsssCcccPpppRrrrAaaa`."""
    match = NTU_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not an NTU RGB+D name SsssCcccPpppRrrrAaaa")
    setup, camera, performer, replication, action = (int(g) for g in match.groups())
    return setup, camera, performer, replication, action


@cache
def missing_skeleton_names(version: int) -> frozenset[str]:
    """The dataset's published samples with missing or incomplete skeletons (302 for 60,
    535 for 120)."""
    if version not in MISSING_SKELETON_FILES:
        raise ValueError(f"NTU RGB+D version must be 60 or 120, got {version}")
    lines = MISSING_SKELETON_FILES[version].read_text().splitlines()
    return frozenset(line.strip() for line in lines if NTU_NAME.fullmatch(line.strip()))


def in_training_set(sample: NTUSample, split: str, version: int) -> bool:
    """Whether `sample` is a training sample of benchmark `split` of NTU RGB+D `version`."""
    if split == "xsub":
        return sample.performer in (XSUB_TRAIN_60 if version == 60 else XSUB_TRAIN_120)
    if split == "xview":
        return sample.camera in XVIEW_TRAIN_CAMERAS
    if split == "xset":
        return sample.setup % 2 == 0
    raise ValueError(f"unknown NTU RGB+D split {split!r}; use xsub, xview (60) or xset (120)")


def list_ntu_names(root: str | os.PathLike, depth_dir_name: str = NTU_DEPTH_DIR) -> list[str]:
    """Sorted sample names found in any modality folder under `root`."""
    root = Path(root)
    folders = [root / NTU_SKELETON_DIR, root / depth_dir_name, root / NTU_RGB_DIR]
    if not any(folder.is_dir() for folder in folders):
        wanted = ", ".join(folder.name for folder in folders)
        raise FileNotFoundError(f"{root}: no NTU RGB+D folder found (expected one of {wanted})")
    names = set()
    for folder, suffix in zip(folders, (NTU_SKELETON_SUFFIX, "", NTU_RGB_SUFFIX), strict=True):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name.endswith(suffix) and not entry.name.startswith("."):
                stem = entry.name[: len(entry.name) - len(suffix)]
                if NTU_NAME.fullmatch(stem):
                    names.add(stem)
    return sorted(names)


class NTUDataset:
    """The samples of one NTU RGB+D benchmark subset.

    `version` 60 or 120; `split` "xsub" or "xview" (60), "xsub" or "xset" (120); `subset`
    "train" or "test"; `mini` keeps that fraction of the training samples (drawn by `seed`),
    never of the test set. The published samples with missing skeletons are skipped in real
    data; a tree gd-synth wrote (it has `gd-synth.json`) has no such samples.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        version: int = 60,
        split: str = "xsub",
        subset: str = "train",
        mini: float | None = None,
        seed: int = 0,
        depth_dir_name: str = NTU_DEPTH_DIR,
        skip_missing_skeletons: bool | None = None,
    ):
        if version not in VERSIONS:
            raise ValueError(f"NTU RGB+D version must be 60 or 120, got {version}")
        if split not in SPLITS[version]:
            raise ValueError(f"NTU RGB+D {version} splits are {SPLITS[version]}, got {split!r}")
        if subset not in SUBSETS:
            raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
        if mini is not None and not 0.0 < mini <= 1.0:
            raise ValueError(f"mini must be a fraction in (0, 1], got {mini}")
        self.root = Path(root)
        self.version = version
        self.split = split
        self.subset = subset
        self.num_classes = VERSIONS[version][1]
        last_setup = VERSIONS[version][0]
        if skip_missing_skeletons is None:  # the published list names real samples only
            skip_missing_skeletons = not (self.root / SYNTH_MARKER).exists()
        skip = missing_skeleton_names(version) if skip_missing_skeletons else frozenset()
        samples = []
        for name in list_ntu_names(self.root, depth_dir_name):
            sample = NTUSample(name, *parse_ntu_name(name), self.root, depth_dir_name)
            if sample.setup > last_setup or sample.action > self.num_classes or name in skip:
                continue
            if in_training_set(sample, split, version) == (subset == "train"):
                samples.append(sample)
        if mini is not None and subset == "train":
            samples = mini_subset(samples, mini, seed)
        self.samples: list[NTUSample] = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> NTUSample:
        return self.samples[index]

    def __iter__(self) -> Iterator[NTUSample]:
        return iter(self.samples)
