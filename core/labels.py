"""Label files: one video's action instances, one per line, `label,start,end[,confidence]`.

This is the PKU-MMD label format (`label/<video>.txt`), used for ground truth and for
detections alike: `label` is a class id 1..L, `start` and `end` are frames (30 fps in
PKU-MMD), `confidence` a score (PKU-MMD's ground truth has a 4th column too; it is never used
for matching). Fields are separated by commas (spaces around them allowed) or by whitespace, as
the official evaluation script splits them, but an empty field is an error; blank lines,
trailing spaces, CRLF line ends and a UTF-8 BOM are tolerated.

In memory a file is a float64 array `[N, 4]` (columns `LABEL, START, END, CONFIDENCE`); a
3-column line gets confidence 1.0.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.files import atomic_write_bytes

LABEL, START, END, CONFIDENCE = range(4)
SUFFIX = ".txt"


class LabelFormatError(ValueError):
    """A label file (or rows to write) is malformed; the message says where and why."""

    def __init__(self, path: str | os.PathLike, line: int | None, reason: str):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {reason}")


def first_problem(rows: np.ndarray) -> tuple[int, str] | None:
    """The first invalid row of `rows` `[N, 3 or 4]` and why, or None if all are valid."""
    checks = (
        (~np.all(np.isfinite(rows), axis=1), "fields must be finite numbers"),
        (
            (rows[:, LABEL] != np.round(rows[:, LABEL])) | (rows[:, LABEL] < 1),
            "label must be an integer >= 1",
        ),
        (rows[:, END] < rows[:, START], "end is before start"),
    )
    bad = [(int(np.argmax(mask)), reason) for mask, reason in checks if mask.any()]
    if not bad:
        return None
    i, reason = min(bad, key=lambda b: b[0])  # the first row; for a tie, the first check
    return i, f"{reason}: {','.join(format_number(x) for x in rows[i])}"


def parse_line(text: str) -> list[float]:
    """The fields of one line, separated by commas or by whitespace (ValueError if not numbers)."""
    fields = text.replace(",", " ").split()
    commas = text.count(",")
    if commas and commas != len(fields) - 1:
        raise ValueError("empty field")
    return [float(f) for f in fields]


def read_label_file(path: str | os.PathLike, need_confidence: bool = False) -> np.ndarray:
    """Instances of one label file as float64 `[N, 4]`, in file order.

    `need_confidence` makes a line without the 4th column an error (detections need it).
    """
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    wanted = (4,) if need_confidence else (3, 4)
    rows, line_numbers = [], []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            row = parse_line(text)
        except ValueError:
            reason = f"expected numbers label,start,end[,confidence], got {text.strip()!r}"
            raise LabelFormatError(path, number, reason) from None
        if len(row) not in wanted:
            fields = " or ".join(map(str, wanted))
            reason = f"expected {fields} fields (label,start,end,confidence), got {len(row)}"
            raise LabelFormatError(path, number, reason)
        rows.append(row if len(row) == 4 else [*row, 1.0])
        line_numbers.append(number)
    table = np.array(rows, dtype=np.float64).reshape(-1, 4)
    problem = first_problem(table)
    if problem:
        raise LabelFormatError(path, line_numbers[problem[0]], problem[1])
    return table


def read_label_dir(
    directory: str | os.PathLike, need_confidence: bool = False
) -> dict[str, np.ndarray]:
    """`{video: instances}` for every `<video>.txt` in `directory`, sorted by video name.

    Hidden files, other suffixes and sub-directories are ignored.
    """
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory}: not a directory")
    paths = sorted(
        p
        for p in directory.iterdir()
        if p.suffix == SUFFIX and not p.name.startswith(".") and p.is_file()
    )
    return {p.stem: read_label_file(p, need_confidence) for p in paths}


def format_number(x: float) -> str:
    """Integers without a decimal point, other floats exactly (shortest round-trip form)."""
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 2**53 else repr(x)


def write_label_file(path: str | os.PathLike, rows: np.ndarray) -> None:
    """Writes instances `[N, 3]` or `[N, 4]` atomically (temp file, then os.replace)."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.size == 0:
        rows = rows.reshape(0, 4)
    if rows.ndim != 2 or rows.shape[1] not in (3, 4):
        raise LabelFormatError(path, None, f"rows must be [N, 3] or [N, 4], got {rows.shape}")
    problem = first_problem(rows)
    if problem:
        raise LabelFormatError(path, None, f"row {problem[0]}: {problem[1]}")
    lines = [",".join(format_number(x) for x in row) + "\n" for row in rows.tolist()]
    atomic_write_bytes(path, "".join(lines).encode("utf-8"))
