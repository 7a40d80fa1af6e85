"""bench/soak.py end to end, for a few seconds on the tiny model: it starts gd-serve, streams,
sends hostile input, and reports. (The 30-minute soak is run by hand: docs/security.md.)"""

import os
import subprocess
import sys

import pytest

from tests.fuzz.harness import ROOT


@pytest.mark.slow
def test_a_short_soak_runs_and_reports(tmp_path):
    from tests.helpers.tiny_bundle import make_bundle

    bundle = make_bundle(tmp_path / "tiny")
    plot = tmp_path / "soak.png"
    run = subprocess.run(
        [
            sys.executable,
            "bench/soak.py",
            "--minutes",
            "0.15",
            "--streams",
            "2",
            "--model",
            str(bundle.root),
            "--uploads-per-minute",
            "120",
            "--streams-per-minute",
            "60",
            "--plot",
            str(plot),
        ],
        cwd=ROOT,
        # short server timeouts, so that hostile recordings and idle streams end in the run
        # and its event store in tmp_path, not the checkout's data/ (which `make run` shows)
        env={
            **os.environ,
            "GD_DECODE_TIMEOUT_S": "3",
            "GD_IDLE_TIMEOUT_S": "2",
            "GD_DATA_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    for line in ("memory, server:", "healthy:", "hostile uploads by status:", "failures"):
        assert line in out, out
    assert "failures (5xx, undocumented closes, server gone): 0" in out
    assert plot.stat().st_size > 0
