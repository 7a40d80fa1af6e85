"""`pytest --timeline` (tests/helpers/timeline.py) and bench/suite_timeline.py, which reads it."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "suite_timeline", Path(__file__).resolve().parents[2] / "bench" / "suite_timeline.py"
)
timeline = importlib.util.module_from_spec(SPEC)
sys.modules["suite_timeline"] = timeline  # dataclasses look their module up there
SPEC.loader.exec_module(timeline)

pytest_plugins = ["pytester"]


def test_a_run_with_timeline_writes_one_row_a_test(pytester):
    pytester.makepyfile(
        test_two="""
        import time

        def test_computes():
            sum(range(200_000))

        def test_waits():
            time.sleep(0.05)
        """
    )
    folder = pytester.path / "timeline"
    result = pytester.runpytest("-p", "tests.helpers.timeline", "--timeline", str(folder))
    result.assert_outcomes(passed=2)
    rows = [json.loads(line) for line in (folder / "main.jsonl").read_text().splitlines()]
    assert [r[0] for r in rows] == ["test_two.py::test_computes", "test_two.py::test_waits"]
    for _, start, end, cpu, children in rows:
        assert start <= end and cpu >= 0 and children >= 0
    assert rows[1][2] - rows[1][1] >= 0.05  # the sleep is inside its test's span
    session = json.loads((folder / "session.json").read_text())
    assert session["start"] <= rows[0][1] and rows[1][2] <= session["end"]  # one clock
    assert session["wall_clock_s"] > 0
    # the process's CPU in all, beyond its tests' (collecting them, at least)
    totals = json.loads((folder / "main.json").read_text())
    assert totals["cpu_s"] > sum(r[3] for r in rows) and totals["children_cpu_s"] >= 0


def write_rows(folder: Path, worker: str, rows: list) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{worker}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_units_add_their_tests_and_the_summary_says_what_waited(tmp_path, capsys):
    # gw0: a module of two tests, 4 s of wall of which 1 s computing in the test process and
    # 1 s in a child; gw1: one test of 2 s, all computing
    write_rows(tmp_path, "gw0", [["tests/a.py::x", 100.0, 101.0, 0.5, 0.0],
                                 ["tests/a.py::y", 101.0, 104.0, 0.5, 1.0]])  # fmt: skip
    write_rows(tmp_path, "gw1", [["tests/b.py::z", 100.5, 102.5, 2.0, 0.0]])
    # the wall clock moved 50 s more than the monotonic one, on which the figures are
    session = {"start": 90.0, "end": 105.0, "wall_clock_s": 65.0}
    (tmp_path / "session.json").write_text(json.dumps(session))
    # each worker's CPU in all, and the controller's ("main", with no tests of its own)
    for name, cpu_s in {"gw0": 7.0, "gw1": 2.5, "main": 1.5}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"cpu_s": cpu_s, "children_cpu_s": 1}))
    units = timeline.read_units(tmp_path)
    a = next(u for u in units if u.module == "tests/a.py")
    assert (a.worker, a.tests, a.wall, a.cpu, a.children_cpu) == ("gw0", 2, 4.0, 1.0, 1.0)
    assert a.not_computing == 2.0
    assert timeline.main([str(tmp_path), "--plot", str(tmp_path / "t.png")]) == 0
    out = capsys.readouterr().out
    assert "wall: 15.0 s (start-up to the first test 10.0 s, after the last 1.0 s)" in out
    assert "(the wall clock moved +50.0 s more: set, or the machine paused)" in out
    assert "CPU in tests: 4.0 s" in out and "not computing: 2.0" in out
    assert "gw1:    2.0 s in tests, CPU    2.0 s, idle at the end   1.5 s" in out
    # outside its tests: 7 - 1 s for gw0 (children not counted: those a test waited for are
    # the tests'), 2.5 - 2 s for gw1
    assert "CPU outside its tests    6.0 s" in out and "CPU outside its tests    0.5 s" in out
    assert "the xdist controller: CPU 1.5 s" in out
    assert (tmp_path / "t.png").stat().st_size > 0


def test_an_empty_folder_says_how_to_fill_it(tmp_path):
    with pytest.raises(SystemExit, match="run pytest --timeline"):
        timeline.read_units(tmp_path)
