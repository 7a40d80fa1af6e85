"""Where the test suite's time goes: read a `pytest --timeline=DIR` run and print it by work
unit, with a picture of each worker's modules over time.

    PYTHONDONTWRITEBYTECODE= .venv/bin/python -m pytest -n auto -q --timeline=runs/timeline
    .venv/bin/python bench/suite_timeline.py runs/timeline --plot docs/images/suite-timeline.png

"CPU" is what the test process and the child processes it waited for (servers, CLIs) spent;
"not computing" is a unit's wall time less its CPU: waiting on real time (a server starting,
a stream at 30 frames a second, a poll) or on a core another worker holds. On 2 cores the
suite cannot finish before half its CPU seconds; the rest of its wall time is start-up (each
worker collecting the suite), waiting, and workers idle at the end (docs/testing.md).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Unit:
    """A test module on one worker: its first start, last end and what its tests cost."""

    module: str
    worker: str
    start: float
    end: float
    cpu: float = 0.0
    children_cpu: float = 0.0
    tests: int = 0
    spans: list[tuple[float, float]] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return sum(b - a for a, b in self.spans)

    @property
    def not_computing(self) -> float:
        return max(0.0, self.wall - self.cpu - self.children_cpu)


def read_units(folder: Path) -> list[Unit]:
    units: dict[tuple[str, str], Unit] = {}
    for path in sorted(folder.glob("*.jsonl")):
        worker = path.stem
        for line in path.read_text().splitlines():
            nodeid, start, end, cpu, children_cpu = json.loads(line)
            module = nodeid.split("::", 1)[0]
            unit = units.setdefault((worker, module), Unit(module, worker, start, end))
            unit.start, unit.end = min(unit.start, start), max(unit.end, end)
            unit.cpu += cpu
            unit.children_cpu += children_cpu
            unit.tests += 1
            unit.spans.append((start, end))
    if not units:
        raise SystemExit(f"suite_timeline: no <worker>.jsonl in {folder} (run pytest --timeline)")
    return sorted(units.values(), key=lambda u: u.start)


def read_totals(folder: Path) -> dict[str, float]:
    """Each process's CPU seconds in all (`<worker>.json`; `main` is xdist's controller)."""
    return {
        path.stem: json.loads(path.read_text())["cpu_s"]
        for path in folder.glob("*.json")
        if path.name != "session.json"
    }


def summarize(
    units: list[Unit], session: dict | None, top: int, totals: dict[str, float] | None = None
) -> None:
    first, last = min(u.start for u in units), max(u.end for u in units)
    workers = sorted({u.worker for u in units})
    cpu = sum(u.cpu + u.children_cpu for u in units)
    busy = sum(u.wall for u in units)
    print(f"workers: {len(workers)}, tests: {sum(u.tests for u in units)}")
    if session and session.get("start"):
        start, end = session["start"], session["end"]
        print(f"wall: {end - start:.1f} s (start-up to the first test {first - start:.1f} s, "
              f"after the last {end - last:.1f} s)")  # fmt: skip
        jump = session.get("wall_clock_s", end - start) - (end - start)
        if abs(jump) > 1:  # the figures here are on the monotonic clock
            print(f"  (the wall clock moved {jump:+.1f} s more: set, or the machine paused)")
    print(f"first test to last: {last - first:.1f} s")
    print(f"CPU in tests: {cpu:.1f} s (test processes {sum(u.cpu for u in units):.1f}, "
          f"their children {sum(u.children_cpu for u in units):.1f})")  # fmt: skip
    print(f"worker-seconds in tests: {busy:.1f}, not computing: {busy - cpu:.1f}")
    totals = totals or {}
    for w in workers:
        mine = [u for u in units if u.worker == w]
        end = max(u.end for u in mine)
        print(f"  {w}: {sum(u.wall for u in mine):6.1f} s in tests, "
              f"CPU {sum(u.cpu + u.children_cpu for u in mine):6.1f} s, idle at the end "
              f"{last - end:5.1f} s")  # fmt: skip
        if w in totals:  # collecting the suite, pytest's own work, the session's teardown
            print(f"       CPU outside its tests {totals[w] - sum(u.cpu for u in mine):6.1f} s")
    if "main" in totals and "main" not in workers:
        print(f"  the xdist controller: CPU {totals['main']:.1f} s")
    print(
        f"\nthe {top} longest units (wall s, CPU s in the test process + its children, "
        "not computing):"
    )
    for u in sorted(units, key=lambda u: -u.wall)[:top]:
        print(f"  {u.wall:6.1f} {u.cpu:6.1f} + {u.children_cpu:5.1f} {u.not_computing:6.1f}  "
              f"{u.worker}  {u.module}")  # fmt: skip


def plot(units: list[Unit], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min(u.start for u in units)
    workers = sorted({u.worker for u in units})
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.9 * len(workers)))
    for row, w in enumerate(workers):
        for u in (u for u in units if u.worker == w):
            share = min(1.0, (u.cpu + u.children_cpu) / u.wall) if u.wall > 0 else 0.0
            ax.barh(row, u.end - u.start, left=u.start - t0, height=0.8,
                    color=plt.cm.RdYlGn(share), edgecolor="black", linewidth=0.3)  # fmt: skip
            if u.end - u.start > 6:  # room for its name: the module's, without "test_"
                name = Path(u.module).stem.removeprefix("test_")
                ax.text(u.start - t0 + 0.5, row, name, va="center", fontsize=7)
    ax.set_yticks(range(len(workers)), workers)
    ax.set_xlabel("seconds since the first test")
    ax.set_title("test modules by worker; colour: CPU share of the module's wall time "
                 "(red: waiting, green: computing)")  # fmt: skip
    ax.invert_yaxis()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Where a test run's time went, from `pytest --timeline=DIR`: wall, CPU and "
        "waiting by worker and by test module, and a picture of it.",
    )
    parser.add_argument("folder", type=Path, help="the DIR given to pytest --timeline=")
    parser.add_argument("--top", type=int, default=25, help="how many units to list")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="draw each worker's modules")
    args = parser.parse_args(argv)
    units = read_units(args.folder)
    session_file = args.folder / "session.json"
    session = json.loads(session_file.read_text()) if session_file.exists() else None
    summarize(units, session, args.top, read_totals(args.folder))
    if args.plot:
        plot(units, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
