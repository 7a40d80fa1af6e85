"""PKU-MMD phase 1: videos, label arrays, benchmark splits and loaders (docs/datasets.md).

    root/label/NNNN-V.txt        label,start,end,confidence per action instance (core.labels)
    root/skeleton/NNNN-V.txt     150 floats a frame
    root/depth/NNNN-V/*.png      16-bit millimetres, one PNG a frame
    root/rgb/NNNN-V.avi
    root/split/cross-subject.txt, cross-view.txt

The names of the released archives are accepted too (`Train_Label_PKU_final`,
`PKU_Skeleton_Renew`, `RGB_VIDEO`, `Split`, optionally under `Label/` and `Data/`), so an
unpacked download needs no renaming. Only `split` and `label` must exist; a video's other
modalities are looked up when loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.labels import LABEL, read_label_file
from core.splits import SPLITS, SplitFormatError, read_split
from synth.formats import (
    PKU_DEPTH_DIR,
    PKU_LABEL_DIR,
    PKU_RGB_DIR,
    PKU_SKELETON_DIR,
    PKU_SPLIT_DIR,
)
from training.datasets.errors import DatasetFormatError
from training.datasets.media import read_depth_folder, read_video
from training.datasets.skeleton_file import read_pku_skeleton
from training.datasets.subsets import mini_subset

NUM_CLASSES = 51
SUBSETS = ("train", "test")
# Folder names: ours (= the released code's) first, then the released archives' names.
FOLDERS = {
    "label": (PKU_LABEL_DIR, "Train_Label_PKU_final", "Label/Train_Label_PKU_final"),
    "skeleton": (PKU_SKELETON_DIR, "PKU_Skeleton_Renew", "Data/PKU_Skeleton_Renew"),
    "depth": (PKU_DEPTH_DIR,),
    "rgb": (PKU_RGB_DIR, "RGB_VIDEO", "Data/RGB_VIDEO"),
    "split": (PKU_SPLIT_DIR, "Split"),
}


@dataclass(frozen=True)
class PKUVideo:
    """One PKU-MMD video; `labels` is float64 [N, 4]: label (1..51), start, end, confidence."""

    name: str
    labels: np.ndarray
    skeleton_path: Path
    depth_dir: Path
    rgb_path: Path

    @property
    def view(self) -> str:
        return self.name[-1]

    def load_skeleton(self) -> np.ndarray:
        """float32 [T, 2, 25, 3] metres (body 2 = body 1 where absent)."""
        return read_pku_skeleton(self.skeleton_path)

    def load_depth(self) -> np.ndarray:
        """uint16 [T, H, W] millimetres."""
        return read_depth_folder(self.depth_dir)

    def load_rgb(self) -> np.ndarray:
        """uint8 [T, H, W, 3] RGB."""
        return read_video(self.rgb_path)


def find_folder(root: str | os.PathLike, kind: str) -> Path:
    """The first existing folder for `kind` (see FOLDERS), else the default name under root."""
    root = Path(root)
    for name in FOLDERS[kind]:
        if (root / name).is_dir():
            return root / name
    return root / FOLDERS[kind][0]


def read_pku_split(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(training videos, test videos) of a split file (`core.splits`, which gd-eval reads too)."""
    try:
        return read_split(path)
    except SplitFormatError as e:
        raise DatasetFormatError(e.path, e.reason, e.line) from None


class PKUMMDDataset:
    """The videos of one PKU-MMD phase 1 benchmark subset.

    `split` "cross-subject" or "cross-view"; `subset` "train" (line 2 of the split file) or
    "test" (line 4); `mini` keeps that fraction of the training videos (drawn by `seed`),
    never of the test set. Label files are read (and checked) here.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "cross-subject",
        subset: str = "train",
        mini: float | None = None,
        seed: int = 0,
    ):
        if split not in SPLITS:
            raise ValueError(f"PKU-MMD splits are {SPLITS}, got {split!r}")
        if subset not in SUBSETS:
            raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
        if mini is not None and not 0.0 < mini <= 1.0:
            raise ValueError(f"mini must be a fraction in (0, 1], got {mini}")
        self.root = Path(root)
        self.split = split
        self.subset = subset
        self.num_classes = NUM_CLASSES
        train, test = read_pku_split(find_folder(self.root, "split") / f"{split}.txt")
        names = sorted(train if subset == "train" else test)
        if mini is not None and subset == "train":
            names = mini_subset(names, mini, seed)
        folders = {kind: find_folder(self.root, kind) for kind in FOLDERS}
        self.videos: list[PKUVideo] = [
            PKUVideo(
                name,
                _read_labels(folders["label"] / f"{name}.txt"),
                folders["skeleton"] / f"{name}.txt",
                folders["depth"] / name,
                folders["rgb"] / f"{name}.avi",
            )
            for name in names
        ]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> PKUVideo:
        return self.videos[index]

    def __iter__(self) -> Iterator[PKUVideo]:
        return iter(self.videos)


def _read_labels(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file not found")
    labels = read_label_file(path)
    bad = labels[labels[:, LABEL] > NUM_CLASSES]
    if len(bad):
        raise DatasetFormatError(path, f"label {bad[0, LABEL]:g} is outside 1..{NUM_CLASSES}")
    return labels
