"""PKU-MMD benchmark split files: `split/cross-subject.txt` and `split/cross-view.txt`.

Four lines: a title, the training videos, a title, the test videos, each list `, `-separated
(a trailing `, ` included), video names `NNNN-V` with V the view L, M or R. Read here, for
`gd-eval split` and the training datasets alike; written by `synth.formats`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

VIDEO_NAME = re.compile(r"(\d{4})-([LMR])")
SPLITS = ("cross-subject", "cross-view")


class FileFormatError(ValueError):
    """A file is malformed; the message names the file and, where known, the line.
    The datasets' own error (`training.datasets.DatasetFormatError`) is one too."""

    def __init__(self, path: str | os.PathLike, reason: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {reason}")


class SplitFormatError(FileFormatError):
    """A split file is malformed."""


def read_split(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(training videos, test videos) of a split file: line 2 and line 4, `, `-separated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if len(lines) < 4:
        reason = "expected 4 lines (title, training videos, title, test videos)"
        raise SplitFormatError(path, f"{reason}, got {len(lines)}")
    train, test = _video_names(lines[1], path, 2), _video_names(lines[3], path, 4)
    both = sorted(set(train) & set(test))
    if both:
        raise SplitFormatError(path, f"videos in both training and test: {both[:5]}")
    return train, test


def _video_names(line: str, path: Path, number: int) -> list[str]:
    names = [name.strip() for name in line.split(",") if name.strip()]
    for name in names:
        if not VIDEO_NAME.fullmatch(name):
            raise SplitFormatError(path, f"{name!r} is not a video name NNNN-V", number)
    return names
