"""End to end without a camera: a `.db3` recorded through librealsense's software device and
recorder, played by `gd-stream` / `gd-upload` into a real server on loopback.

The recording is the tiny test model's scene (tests/helpers/tiny_bundle.py): 150 frames at 30 fps
with a small near object in frames 24..71 and a large one in frames 96..131. By hand: the model
keeps every 3rd frame (10 fps) and makes clips of 4 kept frames (12 source frames), so the
objects cover clips 2..5 ("small") and 8..10 ("large"), i.e. source frames 24..71 and 96..131.
"""

import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect

from clients import stream, upload
from clients.api import Client
from core.clip import frame_timestamps_us
from core.realsense import record_depth
from server.app import create_app
from server.cli import uvicorn_config
from synth.formats import write_depth_pngs
from tests.helpers.live import TOKEN, hello, uvicorn_server
from tests.helpers.tiny_bundle import TINY_SPEC, scene

pytestmark = pytest.mark.slow  # a real server, a recording, the clients (some as processes)

ROOT = Path(__file__).resolve().parents[2]
FRAMES = scene(150, actions=((24, 72, 0.15), (96, 132, 0.5)))
T0_US = 1_000_000  # the recording's first timestamp
EXPECTED_ENDS = [("small", 2, 5, 24, 71), ("large", 8, 10, 96, 131)]
EXPECTED_DETECTIONS = [("small", 24, 71), ("large", 96, 131)]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("recording") / "ward3-bed2.db3"
    record_depth(path, FRAMES, frame_timestamps_us(len(FRAMES), 30) + T0_US, fps=30)
    return path


def run_stream(capsys, *argv: str) -> tuple[int, list[dict], str]:
    """`gd-stream ARGV --json` in this process: exit code, events, stderr."""
    code = stream.main([*argv, "--json"])
    out = capsys.readouterr()
    return code, [json.loads(line) for line in out.out.splitlines()], out.err


def actions(events, state):
    return [e for e in events if e["type"] == "action" and e["state"] == state]


@pytest.mark.parametrize("encoding", ["zstd", "raw", "png"])
def test_streamed_recording_gives_the_actions(server, recording, capsys, encoding):
    code, events, err = run_stream(
        capsys, "file", str(recording), "--fast", "--url", server.ws_url, "--token", TOKEN,
        "--encoding", encoding,
    )  # fmt: skip
    assert code == 0, err
    assert events[0]["type"] == "ready" and events[-1]["type"] == "end"
    assert [(e["label"], e["clip"]) for e in actions(events, "start")] == [
        ("small", 2),
        ("large", 8),
    ]
    ends = actions(events, "end")
    got = [
        (e["label"], e["first_clip"], e["last_clip"], e["start_frame"], e["end_frame"])
        for e in ends
    ]
    assert got == EXPECTED_ENDS
    # Times come back in the recording's own timestamps: clip 2 starts at frame 24 = 0.8 s.
    assert ends[0]["start_timestamp_us"] == T0_US + 800_000
    # The client sent only the model's 10 fps (50 of 150 frames), each stamped with its source
    # frame: clip 3's last kept frame is source frame 45.
    assert events[-1]["frames_received"] == 50 and events[-1]["frames_dropped"] == 0
    assert [e["frame_index"] for e in events if e["type"] == "scores"][3] == 45


def test_readable_output(server, recording, capsys):
    code = stream.main(
        ["file", str(recording), "--fast", "--url", server.ws_url, "--token", TOKEN, "--camera-id",
         "bed-2"]
    )  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [line.split(" ", 2)[2] for line in lines if " start " in line or " end " in line] == [
        "start small at 0.8 s (0.99)",
        "end   small 0.8-2.4 s (0.99)",
        "start large at 3.2 s (1.00)",
        "end   large 3.2-4.4 s (1.00)",
    ]
    assert all(line.split(" ")[1] == "bed-2" for line in lines)
    assert lines[-1].endswith("done: 12 clips scored, 50 frames received, 0 dropped")


def test_array_and_png_sources_match_the_recording(server, tmp_path, capsys):
    np.save(tmp_path / "clip.npy", FRAMES)
    write_depth_pngs(tmp_path / "pngs", FRAMES, pattern="depth-{}.png")  # natural order matters
    for path in ("clip.npy", "pngs"):
        code, events, err = run_stream(
            capsys, "file", str(tmp_path / path), "--fps", "30", "--fast", "--url", server.url,
            "--token", TOKEN,
        )  # fmt: skip
        assert code == 0, err
        ends = actions(events, "end")
        assert [(e["label"], e["start_frame"], e["end_frame"]) for e in ends] == EXPECTED_DETECTIONS


def test_upload_recording(server, recording, capsys):
    code = upload.main([str(recording), "--url", server.url, "--token", TOKEN, "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    found = [(d["label"], d["start_frame"], d["end_frame"]) for d in result["detections"]]
    assert found == EXPECTED_DETECTIONS
    assert result["video"]["frames"] == 150 and result["video"]["format"] == "db3"


def test_upload_table(server, recording, capsys):
    code = upload.main([str(recording), "--url", server.url, "--token", TOKEN])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].startswith("ward3-bed2.db3: 150 frames 64x48, 5.0 s, 12 clips; model tiny")
    assert lines[2].split() == ["1", "small", "0.80", "s", "2.40", "s", "24-71", "0.99"]
    assert lines[3].split() == ["2", "large", "3.20", "s", "4.40", "s", "96-131", "1.00"]


def test_client_upload_progress_and_png_folder(server, tmp_path):
    write_depth_pngs(tmp_path / "frames", FRAMES)
    calls = []
    client = Client(server.ws_url, TOKEN)  # the stream URL works for uploads too
    result = client.upload(tmp_path / "frames", fps=30, clip_scores=True,
                           progress=lambda sent, total: calls.append((sent, total)))  # fmt: skip
    assert [(d.label, d.start_frame, d.end_frame) for d in result.detections] == (
        EXPECTED_DETECTIONS
    )
    assert result.video["format"] == "png-zip" and len(result.clip_scores) == 12
    sent = [s for s, _ in calls]
    assert sent == sorted(sent) and calls[-1][0] == calls[-1][1] and len({t for _, t in calls}) == 1


def test_upload_errors(server, recording, tmp_path, capsys):
    np.save(tmp_path / "clip.npy", FRAMES)
    assert upload.main([str(recording), "--url", server.url, "--token", "wrong"]) == 3
    assert "unauthorized" in capsys.readouterr().err
    assert upload.main([str(tmp_path / "clip.npy"), "--url", server.url, "--token", TOKEN]) == 1
    assert "fps" in capsys.readouterr().err  # the server's 422 says what is missing
    assert upload.main([str(tmp_path / "none.npy"), "--url", server.url]) == 2
    assert "no such file" in capsys.readouterr().err


def test_wrong_token_exits_3_with_a_clear_message(server, recording):
    r = subprocess.run(
        [sys.executable, "-m", "clients.stream", "file", str(recording), "--fast", "--url",
         server.ws_url],
        cwd=ROOT, env={**os.environ, "GD_TOKEN": "wrong"}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip() == (
        "gd-stream: unauthorized: a valid bearer token is required; give a valid --token or "
        "--token-file"
    )


def test_too_many_streams_exits_4(test_settings, make_server, recording):
    live = make_server(dataclasses.replace(test_settings, max_streams=1))
    argv = ["file", str(recording), "--fast", "--url", live.ws_url, "--token", TOKEN]

    async def main():
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with connect(live.ws_url, additional_headers=headers) as ws:  # holds the one slot
            await ws.send(json.dumps(hello()))
            assert json.loads(await ws.recv())["type"] == "ready"
            return await asyncio.wait_for(asyncio.to_thread(stream.main, argv), 30)

    assert asyncio.run(main()) == 4


def test_flow_control_keeps_a_small_server_queue_from_overflowing(
    test_settings,
    make_server,
    recording,
    capsys,
):
    # The client holds at most clip_len + 2 clip_step frames past the last scored clip, so a
    # queue of that size cannot overflow however slow the server is (the recording's 50 kept
    # frames sent --fast without flow control would).
    limit = TINY_SPEC.clip_len + 2 * TINY_SPEC.clip_step
    live = make_server(dataclasses.replace(test_settings, queue_frames=limit))
    code, events, err = run_stream(
        capsys, "file", str(recording), "--fast", "--url", live.ws_url, "--token", TOKEN
    )
    assert code == 0, err
    assert events[-1]["frames_dropped"] == 0 and events[-1]["clips"] == 12


def test_synthetic_scene(server, capsys):
    code, events, err = run_stream(
        capsys, "synth", "--actions", "1", "--width", "64", "--height", "48", "--fast", "--url",
        server.ws_url, "--token", TOKEN,
    )  # fmt: skip
    assert code == 0, err
    assert events[0]["type"] == "ready" and events[-1]["type"] == "end"
    assert events[-1]["clips"] == sum(e["type"] == "scores" for e in events) > 0


def test_gives_up_when_no_server_answers(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    np.save(tmp_path / "clip.npy", FRAMES[:12])  # any source: a file's is ready at once
    code, events, err = run_stream(
        capsys, "file", str(tmp_path / "clip.npy"), "--fps", "30", "--fast", "--url",
        f"ws://127.0.0.1:{port}/v1/stream", "--retries", "2", "--backoff", "0.01",
    )  # fmt: skip
    assert code == 1
    assert [e["type"] for e in events] == ["reconnecting", "reconnecting", "error"]
    assert [e["attempt"] for e in events[:2]] == [1, 2]
    assert "giving up after 2 reconnects" in err


# --- a server restart in the middle of a stream ------------------------------------------------


class PortServer:
    """A server on a fixed port, so that a restart comes back at the same address."""

    def __init__(self, settings, port: int) -> None:
        app = create_app(settings)
        self.service = app.state.service
        config = uvicorn_config(
            app, settings, host="127.0.0.1", port=port, log_level="warning",
            timeout_graceful_shutdown=1,
        )  # fmt: skip
        self.server = uvicorn_server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_reconnects_after_a_server_restart_and_resumes_the_file(test_settings, recording, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    first = PortServer(test_settings, port)
    # 5 s of frames at 5x speed: 1 s. The server is stopped as soon as it has scored 3 clips
    # (1.2 s of frames), within milliseconds: the other 9 cannot all be scored in less than
    # the 0.76 s their frames take to come, wide enough a margin under load. gd-stream runs in
    # this process, on a thread of its own (its output: capsys).
    argv = ["file", str(recording), "--speed", "5", "--json", "--url",
            f"ws://127.0.0.1:{port}/v1/stream", "--token", TOKEN, "--backoff", "0.05",
            "--retries", "40"]  # fmt: skip
    exits: list[int] = []
    client = threading.Thread(target=lambda: exits.append(stream.main(argv)), daemon=True)
    client.start()
    second = None
    try:
        scored, deadline = first.service.metrics.clips, time.monotonic() + 20
        while scored._value.get() < 3:  # mid-stream: 3 of 12 clips scored
            assert client.is_alive() and time.monotonic() < deadline, capsys.readouterr()
            time.sleep(0.01)
        first.stop()
        second = PortServer(test_settings, port)
        client.join(30)
        assert exits == [0], capsys.readouterr().err
    finally:
        first.stop()
        if second is not None:
            second.stop()
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds.count("ready") == 2 and "reconnecting" in kinds and kinds[-1] == "end"
    cut = len(kinds) - 1 - kinds[::-1].index("ready")
    before = [e for e in events[:cut] if e["type"] == "scores"]
    after = [e for e in events[cut:] if e["type"] == "scores"]
    # Resumed, not restarted: the new stream goes on from later frames of the recording, to
    # the end (frame 149 at 4.97 s).
    assert after[0]["timestamp_us"] > before[-1]["timestamp_us"]
    assert after[-1]["timestamp_us"] >= T0_US + 4_000_000
    # Fewer frames than a restart would send: the scored clips' frames are not sent again,
    # except up to one clip of frames in flight when the first server went away.
    in_flight = TINY_SPEC.clip_len
    assert 0 < events[-1]["frames_received"] <= 50 - 4 * len(before) + in_flight
