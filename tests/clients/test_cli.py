"""gd-stream / gd-upload arguments, tokens, backoff and output lines (no server needed)."""

import dataclasses
import io
import json
import random
import subprocess
import sys

import pytest

from clients import options, stream, upload
from clients.api import ActionEnd, ActionStart, End, Score, Scores, ServerWarning
from core.clip import ClipSpec
from core.wire import Ready


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: source"),
        (["webcam"], "invalid choice: 'webcam'"),
        (["file"], "the following arguments are required: path"),
        (["synth", "--encoding", "jpeg"], "argument --encoding: invalid choice: 'jpeg'"),
        (["synth", "--retries", "-1"], "--retries must be >= 0"),
        (["synth", "--backoff", "0"], "--backoff must be positive"),
        (["file", "x.npy", "--speed", "0"], "--speed must be positive"),
        (["realsense", "--hole-filling", "everywhere"], "invalid choice: 'everywhere'"),
        (["realsense", "--fast"], "unrecognized arguments: --fast"),  # a camera is real time
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        stream.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_unreadable_sources_exit_2(tmp_path, capsys):
    assert stream.main(["file", str(tmp_path / "none.db3")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert stream.main(["synth", "--actions", "0"]) == 2
    assert "n_actions" in capsys.readouterr().err
    assert stream.main(["synth", "--url", "localhost:8000"]) == 2
    assert "server URL" in capsys.readouterr().err


def test_token_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("GD_TOKEN", "from-env")
    assert options.token(stream.parse_args(["synth"])) == "from-env"
    assert options.token(stream.parse_args(["synth", "--token", "flag"])) == "flag"
    file = tmp_path / "tokens"
    file.write_text("# the site's streamer token\n\n  t0ken  \nsecond\n")
    args = stream.parse_args(["synth", "--token-file", str(file)])
    assert options.token(args) == "t0ken"
    file.write_text("# nothing here\n")
    with pytest.raises(ValueError, match="no token"):
        options.token(args)
    with pytest.raises(ValueError, match="cannot read the token file"):
        options.token(stream.parse_args(["synth", "--token-file", str(tmp_path / "none")]))


def test_url_defaults(monkeypatch):
    monkeypatch.delenv("GD_URL", raising=False)
    assert stream.parse_args(["synth"]).url == "ws://127.0.0.1:8000/v1/stream"
    assert upload.parse_args(["x.db3"]).url == "http://127.0.0.1:8000"
    monkeypatch.setenv("GD_URL", "https://gd.example.org")
    assert stream.parse_args(["synth"]).url == "https://gd.example.org"


def test_backoff_doubles_with_jitter_up_to_a_cap():
    random.seed(0)
    for failures, full in [(1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (50, 30.0)]:
        delays = [stream.backoff(failures, 0.5) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert max(delays) - min(delays) > full / 10  # jittered: cameras do not return in step


SPEC = ClipSpec(height=32, width=48)
READY = Ready({"name": "m", "version": "2"}, SPEC, ("background", "fall", "wave"), 0.4, True,
              ((480, 640), (32, 48)), 1 << 16)  # fmt: skip
T0 = 7_000_000


def printer(json_lines=False, verbose=False):
    p = stream.Printer(json_lines, "bed-2", verbose, io.StringIO(), io.StringIO())
    p.origin_us = T0
    return p


def test_readable_lines():
    p = printer()
    start = ActionStart("fall", 1, 0.91, 4, 36, 1.2, T0 + 1_200_000)
    end = ActionEnd("fall", 1, 36, 71, 1.2, 2.4, 0.876, T0 + 1_200_000, T0 + 2_400_000, 4, 5)
    scores = Scores(5, 60, 71, 2.0, 2.4, T0 + 2_000_000, 0, 0.8, (Score("wave", 2, 0.7),), 59, 0)
    assert p.line(READY) == "ready: model m 2 (fall, wave); sending 48x32 at 10 fps"
    crop = dataclasses.replace(READY, clip=dataclasses.replace(SPEC, person_crop=True),
                               sizes=((480, 640),))  # fmt: skip
    assert p.line(crop) == "ready: model m 2 (fall, wave); sending 640x480 at 10 fps"
    assert p.line(start) == "start fall at 1.2 s (0.91)"
    assert p.line(end) == "end   fall 1.2-2.4 s (0.88)"
    assert p.line(ServerWarning("frames_dropped", "dropped 3")) == "warning: dropped 3"
    assert p.line(End(12, 120, 3)) == "done: 12 clips scored, 120 frames received, 3 dropped"
    assert p.line(scores) is None  # clips only with --verbose
    assert printer(verbose=True).line(scores) == "clip 5 at 2.0 s: activity 0.80, wave 0.70"
    p.event(start)
    assert p.out.getvalue().split(" ", 1)[1] == "bed-2 start fall at 1.2 s (0.91)\n"


def test_json_lines_are_the_servers_messages():
    p = printer(json_lines=True)
    message = {"type": "end", "clips": 1, "frames_received": 4, "frames_dropped": 0, "new": 1}
    p.event(End(1, 4, 0, raw=message))
    p.event(READY)
    p.client("reconnecting", "lost", attempt=1)
    lines = [json.loads(x) for x in p.out.getvalue().splitlines()]
    assert lines[0] == message
    assert lines[1]["type"] == "ready" and lines[1]["clip"]["height"] == 32
    assert lines[2] == {"type": "reconnecting", "message": "lost", "attempt": 1}
    assert p.err.getvalue() == ""  # only errors go to stderr in JSON mode
    p.client("error", "boom")
    assert p.err.getvalue() == "gd-stream: boom\n"


def test_upload_bad_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        upload.main([])
    assert e.value.code == 2
    assert "the following arguments are required: file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        upload.main(["x.db3", "--fps", "fast"])
    assert e.value.code == 2
    assert "argument --fps: invalid float value: 'fast'" in capsys.readouterr().err


def test_upload_unreachable_server_exits_1(tmp_path, capsys):
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY")
    assert upload.main([str(tmp_path / "x.npy"), "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.slow
def test_clients_import_neither_the_server_nor_torch():
    code = (
        "import sys, clients.api, clients.stream, clients.upload; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('server', 'torch', 'training'"
        ")))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
