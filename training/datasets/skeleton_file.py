"""Skeleton text files: NTU RGB+D `.skeleton` and PKU-MMD `skeleton/<video>.txt`.

Both give, after body selection, float32 joints `[T, 2, 25, 3]` (camera-space metres, Kinect
v2 joint order). When the second body is absent in a frame it is a copy of the first
(design.md §5), so skeleton features never see a zero body next to a real one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.datasets.errors import DatasetFormatError

NUM_JOINTS = 25
BODY_FIELDS = 10  # bodyID clippedEdges handLeft{Confidence,State} handRight{..} isRestricted
#                   leanX leanY trackingState
JOINT_FIELDS = 12  # x y z depthX depthY colorX colorY orientation{W,X,Y,Z} trackingState
PKU_FIELDS = 2 * NUM_JOINTS * 3


@dataclass(frozen=True)
class Body:
    """One body in one frame of an NTU `.skeleton` file."""

    body_id: int
    flags: np.ndarray  # float64 [9]: the body line after the id
    joints: np.ndarray  # float64 [25, 11]: x y z depthX depthY colorX colorY oW oX oY oZ
    joint_states: np.ndarray  # int64 [25]: 0 not tracked, 1 inferred, 2 tracked

    @property
    def xyz(self) -> np.ndarray:
        return self.joints[:, :3]


class _Lines:
    """A cursor over a file's lines that reports the file and line number on errors."""

    def __init__(self, text: str, source: str):
        self.lines = text.splitlines()  # \n, \r\n and \r alike
        self.source = source
        self.next = 0

    def take(self, what: str) -> str:
        if self.next >= len(self.lines):
            raise DatasetFormatError(
                self.source, f"unexpected end of file, expected {what}", len(self.lines) + 1
            )
        self.next += 1
        return self.lines[self.next - 1]

    def error(self, reason: str) -> DatasetFormatError:
        return DatasetFormatError(self.source, reason, self.next)

    def count(self, what: str) -> int:
        text = self.take(what)
        try:
            value = int(text)
        except ValueError:
            raise self.error(f"expected {what} (an integer), got {text.strip()!r}") from None
        if value < 0:
            raise self.error(f"{what} must be >= 0, got {value}")
        return value

    def fields(self, n: int, what: str) -> list[str]:
        parts = self.take(what).split()
        if len(parts) != n:
            raise self.error(f"expected {what} of {n} fields, got {len(parts)}")
        return parts

    def numbers(self, parts: list[str], what: str) -> np.ndarray:
        try:
            return np.array(parts, dtype=np.float64)
        except ValueError:
            pass
        for part in parts:
            try:
                float(part)
            except ValueError:
                raise self.error(f"{what}: {part!r} is not a number") from None
        raise self.error(f"{what} has a malformed number")

    def block(self, n_lines: int, n_fields: int, what: str) -> np.ndarray:
        """float64 [n_lines, n_fields], converted in one go (the slow part of a large file)."""
        first = self.next
        parts = [self.fields(n_fields, f"{what} {i + 1}") for i in range(n_lines)]
        try:
            return np.array(parts, dtype=np.float64)
        except ValueError:
            self.next = first
            for i in range(n_lines):
                self.numbers(self.take(what).split(), f"{what} {i + 1}")
            raise self.error(f"a {what} line has a malformed number") from None

    def expect_end(self) -> None:
        for line in self.lines[self.next :]:
            self.next += 1
            if line.strip():
                raise self.error(f"unexpected content after the last frame: {line.strip()!r}")


def parse_ntu_skeleton(text: str, source: str = "<string>") -> list[list[Body]]:
    """The bodies of every frame of a `.skeleton` text (`read_skeleton_file.m`'s format).

    A frame may hold 0, 1 or several bodies. Raises DatasetFormatError naming `source` and
    the line when the text is truncated or malformed.
    """
    lines = _Lines(text, source)
    frames = []
    for frame in range(1, lines.count("the frame count") + 1):
        bodies = []
        for _ in range(lines.count(f"the body count of frame {frame}")):
            head = lines.fields(BODY_FIELDS, f"a body line of frame {frame}")
            try:
                body_id = int(head[0])
            except ValueError:
                raise lines.error(f"body id must be an integer, got {head[0]!r}") from None
            flags = lines.numbers(head[1:], "the body line")
            if lines.count("the joint count") != NUM_JOINTS:
                raise lines.error(f"expected {NUM_JOINTS} joints")
            rows = lines.block(NUM_JOINTS, JOINT_FIELDS, "joint")
            if not np.all(np.isfinite(rows)):
                raise lines.error("joint values must be finite")
            bodies.append(Body(body_id, flags, rows[:, :11], rows[:, 11].astype(np.int64)))
        frames.append(bodies)
    lines.expect_end()
    return frames


def read_ntu_skeleton(path: str | os.PathLike) -> list[list[Body]]:
    """`parse_ntu_skeleton` of a file."""
    return parse_ntu_skeleton(_read_text(path), str(path))


def main_bodies(frames: list[list[Body]]) -> np.ndarray:
    """float32 `[T, 2, 25, 3]`: the two most active bodies of an NTU sample.

    As the common NTU preprocessing (and the dataset authors' FAQ): a body is the sequence of
    the m-th body of each frame; its activity is the sum over x, y, z of the standard
    deviation of its joint coordinates over the frames where it is present; the most active
    comes first (ties keep file order). Frames without the second body get a copy of the first.
    """
    n_slots = max((len(bodies) for bodies in frames), default=0)
    slots = np.zeros((max(n_slots, 1), len(frames), NUM_JOINTS, 3), dtype=np.float64)
    for t, bodies in enumerate(frames):
        for m, body in enumerate(bodies):
            slots[m, t] = body.xyz
    order = np.argsort([-_activity(slot) for slot in slots], kind="stable")[:2]
    two = np.zeros((len(frames), 2, NUM_JOINTS, 3), dtype=np.float64)
    two[:, : len(order)] = slots[order].transpose(1, 0, 2, 3)
    return copy_first_where_absent(two).astype(np.float32)


def _activity(slot: np.ndarray) -> float:
    present = slot[np.any(slot != 0, axis=(1, 2))]
    if len(present) == 0:
        return 0.0
    return float(sum(present[..., c].std() for c in range(3)))


def copy_first_where_absent(joints: np.ndarray) -> np.ndarray:
    """`[T, 2, 25, 3]` with body 2 replaced by body 1 in frames where body 2 is all zeros."""
    joints = np.array(joints)
    absent = ~np.any(joints[:, 1] != 0, axis=(1, 2))
    joints[absent, 1] = joints[absent, 0]
    return joints


def parse_pku_skeleton(text: str, source: str = "<string>") -> np.ndarray:
    """float32 `[T, 2, 25, 3]` from a PKU-MMD skeleton text: one line of 150 floats a frame
    (body 1 then body 2, zeros when absent). Trailing blank lines are allowed."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rows = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if len(parts) != PKU_FIELDS:
            reason = f"expected {PKU_FIELDS} numbers (25 joints x 3 x 2 bodies), got {len(parts)}"
            raise DatasetFormatError(source, reason, number)
        try:
            row = np.array(parts, dtype=np.float64)
        except ValueError:
            raise DatasetFormatError(source, "a field is not a number", number) from None
        if not np.all(np.isfinite(row)):
            raise DatasetFormatError(source, "values must be finite", number)
        rows.append(row)
    if not rows:
        raise DatasetFormatError(source, "no frames")
    joints = np.stack(rows).reshape(-1, 2, NUM_JOINTS, 3)
    return copy_first_where_absent(joints).astype(np.float32)


def read_pku_skeleton(path: str | os.PathLike) -> np.ndarray:
    """`parse_pku_skeleton` of a file."""
    return parse_pku_skeleton(_read_text(path), str(path))


def _read_text(path: str | os.PathLike) -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: skeleton file not found")
    try:
        return path.read_bytes().decode("ascii")
    except UnicodeDecodeError as e:
        raise DatasetFormatError(path, f"not a text file (byte {e.start} is not ASCII)") from None
