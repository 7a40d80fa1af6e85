"""`gd-labels`: the label file of a folder of site recordings, its checker and importers.

A label file is a CSV with a header (docs/retraining.md):

    recording,label,start,end[,subset]
    kitchen-001.db3,falling down,12.400,14.000
    kitchen-001.db3,leaves bed,31.250,35.000,test

`recording` is a file name in the recordings folder; `label` any action name (one the
default model lacks is fine); `start` and `end` are seconds from the recording's first depth
frame, the interval `[start, end)` (end exclusive); `subset` (optional column, per
recording) puts a recording in `train` or `test` instead of the seeded split.

`gd-labels check` names every bad row with its line number; `gd-labels import --from elan`
turns ELAN `.eaf` files (tiers = labels) into a label file. In `core` because `gd-synth
recordings` writes label files too.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.files import atomic_write_text
from core.realsense import RealSenseError, play

COLUMNS = ("recording", "label", "start", "end")
LABELS_FILE = "labels.csv"  # a recordings folder's label file, and its class list (optional)
CLASSES_FILE = "classes.txt"
SUBSET_COLUMN = "subset"
SUBSETS = ("train", "test")
# Labels are kept at millisecond precision and timestamps at microseconds: an end up to half
# of each past a recording's last frame is the rounding of that frame's end, not beyond it.
ROUNDING_S = 0.0005 + 0.0000005


class LabelFileError(ValueError):
    """A label file cannot be used; the message lists every bad row."""


@dataclass(frozen=True)
class Segment:
    line: int  # 1-based line in the label file (the header is line 1)
    recording: str
    label: str
    start: float  # seconds from the recording's first depth frame
    end: float  # exclusive
    subset: str | None = None


@dataclass(frozen=True)
class Problem:
    line: int | None  # None: about the file, not a row
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


# --- reading and writing -------------------------------------------------------------------


def parse_labels(text: str) -> tuple[list[Segment], list[Problem]]:
    """The rows of a label file that parse, and a problem for each that does not."""
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    if not rows or tuple(c.strip() for c in rows[0][:4]) != COLUMNS:
        found = ",".join(rows[0]) if rows else "an empty file"
        return [], [Problem(1, f"the header must be {','.join(COLUMNS)}[,subset], got {found}")]
    header = [c.strip() for c in rows[0]]
    if header[4:] not in ([], [SUBSET_COLUMN]):
        return [], [Problem(1, f"unknown columns {header[4:]}; only 'subset' may follow 'end'")]
    segments, problems = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue  # blank line
        if len(row) != len(header):
            problems.append(Problem(line, f"{len(row)} fields, the header has {len(header)}"))
            continue
        recording, label, start, end, *subset = (c.strip() for c in row)
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            problems.append(Problem(line, f"start and end must be seconds, got {start!r}, {end!r}"))
            continue
        if not recording or not label:
            problems.append(Problem(line, "recording and label must not be empty"))
            continue
        chosen = subset[0] if subset and subset[0] else None
        if chosen is not None and chosen not in SUBSETS:
            problems.append(Problem(line, f"subset must be train or test, got {chosen!r}"))
            continue
        segments.append(Segment(line, recording, label, start_s, end_s, chosen))
    return segments, problems


def format_labels(segments: Iterable[Segment]) -> str:
    """A label file's text; times at millisecond precision, rows in file order."""
    segments = list(segments)
    with_subset = any(s.subset for s in segments)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*COLUMNS, *([SUBSET_COLUMN] if with_subset else [])])
    for s in segments:
        row = [s.recording, s.label, f"{s.start:.3f}", f"{s.end:.3f}"]
        writer.writerow(row + ([s.subset or ""] if with_subset else []))
    return out.getvalue()


def read_class_list(path: Path) -> list[str]:
    """Class names, one a line; blank lines and `#` comments are skipped."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# --- checking --------------------------------------------------------------------------------


def recording_duration(path: Path) -> float:
    """Seconds a recording's depth frames cover: first to last timestamp plus one frame."""
    stamps: list[int] = []
    info = play(path, "depth", lambda t_us, _: stamps.append(t_us))
    if info is None or not stamps:
        raise RealSenseError(f"{path.name}: no depth frames")
    return (stamps[-1] - stamps[0]) / 1e6 + 1.0 / info.fps


def check_segments(
    segments: Sequence[Segment],
    durations: dict[str, float | str],
    classes: Sequence[str] | None = None,
) -> list[Problem]:
    """Every bad row: unknown label (when `classes` is given), start negative, end not after
    start, end beyond the recording, missing or unreadable recording (`durations` maps a
    name to its duration, or to why it cannot be read; absent = missing), overlaps and
    disagreeing subsets within a recording."""
    problems = []
    by_recording: dict[str, list[Segment]] = defaultdict(list)
    for s in segments:
        if classes is not None and s.label not in classes:
            problems.append(Problem(s.line, f"unknown label {s.label!r}"))
        if s.start < 0:
            problems.append(Problem(s.line, f"start {s.start:g} s is before the recording"))
        if s.end <= s.start:
            problems.append(Problem(s.line, f"end {s.end:g} s is not after start {s.start:g} s"))
        duration = durations.get(s.recording)
        if duration is None:
            problems.append(Problem(s.line, f"no recording {s.recording!r}"))
        elif isinstance(duration, str):
            problems.append(Problem(s.line, f"recording {s.recording!r} unreadable: {duration}"))
        elif s.end > duration + ROUNDING_S:
            problems.append(
                Problem(s.line, f"end {s.end:g} s is beyond {s.recording} ({duration:.3f} s long)")
            )
        by_recording[s.recording].append(s)
    for rows in by_recording.values():
        ordered = sorted(rows, key=lambda s: (s.start, s.line))
        latest = ordered[0]  # the row reaching furthest so far
        for s in ordered[1:]:
            if s.start < latest.end:
                problems.append(Problem(s.line, f"overlaps line {latest.line} ({latest.label})"))
            if s.end > latest.end:
                latest = s
        subsets = {s.subset for s in rows}
        if len(subsets) > 1:
            lines = ", ".join(str(s.line) for s in rows)
            problems.append(
                Problem(rows[0].line, f"{rows[0].recording}: lines {lines} disagree on subset")
            )
    return sorted(problems, key=lambda p: (p.line or 0, p.message))


def describe(labels: Path, problems: Sequence[Problem]) -> str:
    """`N problem(s):` and one `FILE:LINE: message` line each, as compilers name them."""
    lines = (f"{labels}:{p.line}: {p.message}" if p.line else f"{labels}: {p}" for p in problems)
    return f"{len(problems)} problem(s):\n" + "\n".join(lines)


def durations_of(folder: Path, names: Iterable[str]) -> dict[str, float | str]:
    """Each named recording's duration, or why it cannot be read; missing files left out."""
    out: dict[str, float | str] = {}
    for name in sorted(set(names)):
        path = folder / name
        if path.is_file():
            try:
                out[name] = recording_duration(path)
            except RealSenseError as e:
                out[name] = str(e)
    return out


def load_checked(
    labels: Path, recordings: Path, classes: Sequence[str] | None = None
) -> tuple[list[Segment], dict[str, float]]:
    """The segments of a label file and the durations of their recordings; raises
    `LabelFileError` listing every problem (so training never starts on bad labels)."""
    segments, problems = parse_labels(labels.read_text(encoding="utf-8"))
    durations = durations_of(recordings, (s.recording for s in segments))
    problems += check_segments(segments, durations, classes)
    if problems:
        raise LabelFileError(describe(labels, problems))
    return segments, {k: v for k, v in durations.items() if isinstance(v, float)}


# --- importing -------------------------------------------------------------------------------


def from_elan(path: Path, recording: str | None = None, label_from: str = "tier") -> list[Segment]:
    """The time-aligned annotations of an ELAN `.eaf` file: each tier is a label (or, with
    `label_from="value"`, each annotation's text is). The recording is `recording`, else the
    `.eaf` file's name with `.db3`."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise LabelFileError(f"{path}: not an ELAN .eaf file ({e})") from e
    if root.tag != "ANNOTATION_DOCUMENT":
        raise LabelFileError(f"{path}: not an ELAN .eaf file (root <{root.tag}>)")
    slots = {
        s.get("TIME_SLOT_ID"): s.get("TIME_VALUE") for s in root.iter("TIME_SLOT")
    }  # milliseconds; absent for unaligned slots
    name = recording or path.with_suffix(".db3").name
    out = []
    for tier in root.iter("TIER"):
        for a in tier.iter("ALIGNABLE_ANNOTATION"):
            t0, t1 = slots.get(a.get("TIME_SLOT_REF1")), slots.get(a.get("TIME_SLOT_REF2"))
            if t0 is None or t1 is None:
                raise LabelFileError(
                    f"{path}: annotation {a.get('ANNOTATION_ID')} on tier "
                    f"{tier.get('TIER_ID')!r} is not aligned to time"
                )
            value = (a.findtext("ANNOTATION_VALUE") or "").strip()
            label = tier.get("TIER_ID", "") if label_from == "tier" else value
            out.append(Segment(0, name, label.strip(), int(t0) / 1000, int(t1) / 1000))
    return sorted(out, key=lambda s: (s.recording, s.start, s.label))


# --- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gd-labels",
        description="Label files of site recordings (docs/retraining.md): check one against "
        "its recordings, or import annotations made in ELAN.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser(
        "check",
        help="name every bad row; exit 1 if any",
        description="Check a label file: unknown labels (with --classes), end not after start, "
        "beyond the recording, overlaps within a recording, missing or unreadable recordings. "
        "Exit 0 when clean, 1 with the list.",
    )
    c.add_argument("labels", type=Path, help="the label file (CSV)")
    c.add_argument("--recordings", type=Path, required=True, help="the recordings folder")
    c.add_argument("--classes", type=Path, help="allowed labels, one a line (default: any)")
    i = sub.add_parser(
        "import",
        help="annotations from an annotation tool -> a label file",
        description="Convert ELAN .eaf files (tiers = labels; recording = the .eaf's name with "
        ".db3) into one label file.",
    )
    i.add_argument("files", type=Path, nargs="+", help="annotation files")
    i.add_argument("--from", dest="tool", choices=("elan",), required=True, help="their format")
    i.add_argument(
        "--label",
        choices=("tier", "value"),
        default="tier",
        help="tier = each tier's name is the label (default); value = each annotation's text",
    )
    i.add_argument("--out", type=Path, help="label file to write (default: stdout)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            classes = read_class_list(args.classes) if args.classes else None
            segments, _ = load_checked(args.labels, args.recordings, classes)
            print(f"{args.labels}: {len(segments)} segments, no problems")
            return 0
        segments = [s for f in args.files for s in from_elan(f, label_from=args.label)]
        text = format_labels(segments)
    except LabelFileError as e:
        print(f"gd-labels: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"gd-labels: error: {e}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(args.out, text)
        print(f"wrote {len(segments)} segments to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
