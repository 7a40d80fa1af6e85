"""`pytest --timeline=DIR`: when each test ran, on which worker, and the CPU it cost. (With
the `=`: the xdist workers read their command line before this plugin is loaded, and would
take a separate DIR for a folder of tests.)

Each process of the run (the one pytest process, or each xdist worker and the controller)
writes `DIR/<worker>.jsonl`: one line a test, `[nodeid, start, end, cpu_s, children_cpu_s]`
(seconds on the monotonic clock; the CPU seconds of the process, and of the child processes
it waited for, spent in the test's setup, call and teardown). The controller writes
`DIR/session.json` with the run's start and end, and each process `DIR/<worker>.json` with
its CPU seconds in all (what its tests did not spend went to collecting the suite, pytest's own
work and the session's teardown; under xdist, `main.json` is the controller's).
`bench/suite_timeline.py DIR` reads them: where the suite's time goes, and how much of it the
workers spent waiting rather than computing (docs/testing.md, "The suite's time").

Times are on the machine's monotonic clock, which its processes share, not the wall clock: one
run here saw the wall clock move 53 s more than the monotonic one in the middle of the run
(set forward, or the virtual machine paused), with every test apparently waiting meanwhile.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--timeline",
        metavar="DIR",
        type=Path,
        help="write when each test ran and its CPU seconds to DIR (bench/suite_timeline.py)",
    )


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) of this process, and of its children waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _folder(config: pytest.Config) -> Path | None:
    return config.getoption("timeline", None)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    folder = _folder(session.config)
    if folder is not None and not _is_worker(session.config):
        folder.mkdir(parents=True, exist_ok=True)
        for old in [*folder.glob("*.jsonl"), *folder.glob("*.json")]:  # a previous run's
            old.unlink()
        session.config.stash[_START] = (time.monotonic(), time.time())


def _name(config: pytest.Config) -> str:
    return getattr(config, "workerinput", {}).get("workerid", "main")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    folder = _folder(session.config)
    if folder is None:
        return
    # the process's CPU seconds in all: beyond its tests', collecting the suite, pytest's own
    # work between tests and the session's teardown (under xdist "main" is the controller)
    own, children = cpu_seconds()
    totals = {"cpu_s": own, "children_cpu_s": children}
    (folder / f"{_name(session.config)}.json").write_text(json.dumps(totals) + "\n")
    if _is_worker(session.config):
        return
    start, wall_start = session.config.stash[_START]
    record = {
        "start": start,
        "end": time.monotonic(),
        "wall_clock_s": time.time() - wall_start,  # the same span as the wall clock saw it
    }
    (folder / "session.json").write_text(json.dumps(record) + "\n")


_START = pytest.StashKey[tuple[float, float]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    folder = _folder(item.config)
    if folder is None:
        return (yield)
    start, (own, children) = time.monotonic(), cpu_seconds()
    result = yield
    end, (own_after, children_after) = time.monotonic(), cpu_seconds()
    row = [item.nodeid, start, end, own_after - own, children_after - children]
    with open(folder / f"{_name(item.config)}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return result
