"""README's quick start, run for real: a gd-serve subprocess serving models/default with the
development token file (what `make run` starts, without the demo), and the installed commands
run as a newcomer types them: make a sample recording, upload it (writing prediction files),
score them against the sample's ground truth, draw the timeline, and stream a synthetic scene
with its ground truth beside each detection.

Also the demo's log (server/demo.py) against the tiny test model, whose detections are known
exactly (tests/e2e/test_clients_e2e.py works them out).
"""

import asyncio
import functools
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.truth import TrueAction, TruthCheck
from server import demo
from tests.helpers.live import TOKEN, FrameClock
from tests.helpers.tiny_bundle import scene

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # .venv/bin, where `make setup` installs the commands
DEV_TOKEN = (ROOT / "docker" / "dev-tokens.txt").read_text().splitlines()[-1]  # README's `tail -1`


class GdServe:
    """A started gd-serve process; `url` waits for its port to answer the first time it is
    read, so that a test does its own work (making the sample) while the server starts."""

    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc, self.port = proc, port

    @functools.cached_property
    def url(self) -> str:
        while True:  # ready when the port answers; a server that exits shows its stderr
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return f"http://127.0.0.1:{self.port}"
            except OSError:
                assert self.proc.poll() is None, self.proc.stderr.read()
                time.sleep(0.05)


@pytest.fixture(scope="module")
def gd_serve():
    """`gd-serve --model models/default --tokens-file docker/dev-tokens.txt` on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [BIN / "gd-serve", "--model", "models/default", "--tokens-file",
         "docker/dev-tokens.txt", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield GdServe(proc, port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start(*argv: str, cwd: Path) -> subprocess.Popen:
    """One of the quick start's commands, as installed, in the newcomer's shell, started."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([str(BIN / argv[0]), *argv[1:]], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    """A started command's output, once it has exited, successfully."""
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # timed out (or interrupted): leave no process behind
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"{proc.args}: {err}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """One of the quick start's commands, run to its end."""
    return finish(start(*argv, cwd=cwd))


@pytest.mark.slow
def test_sample_upload_score_and_plot(gd_serve, tmp_path):
    # gd-serve starts meanwhile: its url waits for it (GdServe)
    out = run("gd-synth", "sample", "--out", "runs/sample", cwd=tmp_path).stdout
    assert out == (
        "wrote runs/sample/sample.db3, its ground truth runs/sample/label/ and its reference "
        "runs/sample/reference/sample.png\n"
    )
    truth = (tmp_path / "runs" / "sample" / "label" / "sample.txt").read_text().splitlines()
    assert len(truth) >= 6  # 6 scripted actions, and any unscripted transition the script labels
    uploaded = run("gd-upload", "runs/sample/sample.db3", "--camera-id", "sample", "--reference",
                   "runs/sample/reference/sample.png", "--url", gd_serve.url, "--token", DEV_TOKEN,
                   "--pred", "runs/pred", cwd=tmp_path)  # fmt: skip
    table = uploaded.stdout.splitlines()
    assert re.fullmatch(r"sample\.db3: \d+ frames 160x120, [\d.]+ s, \d+ clips; model default .*",
                        table[0]), table[0]  # fmt: skip
    detections = len(table) - 2  # the header line and the column titles
    assert f"wrote {detections} detections to runs/pred/sample.txt" in uploaded.stderr
    # Scoring and plotting read the same files and write nothing the other reads: side by side.
    scoring = start("gd-eval", "--gt", "runs/sample/label", "--pred", "runs/pred", cwd=tmp_path)
    plotting = start("gd-eval", "plot", "--gt", "runs/sample/label", "--pred", "runs/pred",
                     "--video", "sample", "--classes", str(ROOT / "models/default/model.json"),
                     "--out", "runs/timeline.png", cwd=tmp_path)  # fmt: skip
    scored, plotted = finish(scoring).stdout, finish(plotting).stdout
    assert scored.startswith("PKU-MMD detection protocol: 1 videos (0 without a detection file)")
    assert f"{len(truth)} instances, {detections} detections" in scored.splitlines()[0]
    assert re.fullmatch(
        rf"wrote runs/timeline.png: \d+ of {detections} detections hit, \d+ of {len(truth)} true "
        r"actions found \(tIoU >= 0.5\)\n", plotted,
    )  # fmt: skip
    assert (tmp_path / "runs/timeline.png").stat().st_size > 10_000


@pytest.mark.slow
def test_stream_synth_prints_the_truth_beside_each_detection(gd_serve, tmp_path):
    out = run("gd-stream", "synth", "--url", gd_serve.url.replace("http", "ws") + "/v1/stream",
              "--token", DEV_TOKEN, "--actions", "3", "--width", "64", "--height", "64",
              "--fast", cwd=tmp_path).stdout.splitlines()  # fmt: skip
    ends = [line for line in out if " end " in line]
    assert ends, out
    for k, line in enumerate(ends, 1):
        assert re.search(r"; truth: (.+ [\d.]+-[\d.]+ s \(tIoU [\d.]+\), (hit|miss)|no action "
                         rf"there); hit rate \d+/{k}$", line), line  # fmt: skip
    assert re.search(
        rf"; \d+ of {len(ends)} detections hit, \d+ of \d+ true actions found", out[-1]
    )


@pytest.mark.slow
def test_demo_logs_the_truth_and_the_hit_rate(server, caplog):
    # The tiny model finds "small" in frames 24..71 ([0.8, 2.4) s) and "large" in 96..131
    # ([3.2, 4.4) s). The truth says the first was "small" there, the second something else.
    frames = scene(150, actions=((24, 72, 0.15), (96, 132, 0.5)))
    truth = TruthCheck()
    truth.add([TrueAction("small", 0.8, 2.4), TrueAction("falling down", 3.2, 4.4)])
    with caplog.at_level(logging.INFO, logger="gd.demo"):
        clock = FrameClock(demo.FPS).monotonic  # its 5 s pass without waiting
        actions = asyncio.run(
            demo.stream_scene(server.ws_url, TOKEN, frames, "zstd", truth, clock=clock)
        )
    assert actions == 2
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "demo: small from 0.8 s to 2.4 s (confidence 0.99); truth: small 0.8-2.4 s (tIoU 1.00), "
        "hit; hit rate 1/1",
        "demo: large from 3.2 s to 4.4 s (confidence 1.00); truth: falling down 3.2-4.4 s "
        "(tIoU 1.00), miss; hit rate 1/2",
    ]
