"""Stream costs a client controls without sending bytes (issue 12 item 3): what the hello
claims, and how fast timestamps run. Real uvicorn on loopback, real websockets client."""

import asyncio
import dataclasses
import tracemalloc

import pytest

from core.clip import DepthPreprocessor, frame_timestamps_us
from server.stream import pace_delay
from tests.helpers.live import frame_messages, hello, run_stream
from tests.helpers.streams import FRAMES, stream
from tests.helpers.tiny_bundle import TINY_SPEC

REDUCED = DepthPreprocessor(TINY_SPEC, 48, 64).to_millimetres(FRAMES)  # at the model's size
REDUCED_MESSAGES = frame_messages(REDUCED, frame_timestamps_us(len(REDUCED), 30) + 1_000_000)


def test_a_huge_claimed_frame_size_allocates_nothing_of_that_size(server):
    """A hello may announce 4096x2047 (16 MiB frames, just under the limit) and then send
    small frames: the server keeps no buffer of the announced size (tracemalloc sees every
    thread of this process, the server's included)."""
    claimed = 2 * 4096 * 2047
    tracemalloc.start()
    try:
        big = asyncio.run(
            run_stream(server.ws_url, messages=REDUCED_MESSAGES, hello_message=hello(4096, 2047))
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert big.close_code == 1000
    assert big.ready["max_frame_bytes"] >= claimed  # it would take such frames
    assert peak < claimed / 2, peak
    normal = asyncio.run(run_stream(server.ws_url, messages=REDUCED_MESSAGES))
    assert big.of("scores") == normal.of("scores")


def test_the_claimed_fps_changes_nothing(server):
    """Streams are resampled by their timestamps: `fps` in the hello (bounded to (0, 1000])
    costs nothing and does not change a score."""
    slow = asyncio.run(run_stream(server.ws_url, FRAMES, hello_message=hello(fps=0.001)))
    fast = asyncio.run(run_stream(server.ws_url, FRAMES, hello_message=hello(fps=1000)))
    assert slow.close_code == fast.close_code == 1000
    assert slow.of("scores") == fast.of("scores") == stream(server.ws_url).of("scores")


@pytest.mark.parametrize(
    ("kept", "elapsed_s", "delay"),
    [
        (0, 0.0, 0.0),
        (600, 0.0, 0.0),  # 60 s of video at 10 fps: exactly the burst
        (700, 0.0, 2.5),  # 10 s of video over it, at 4x real time
        (700, 2.5, 0.0),
        (700, 1.0, 1.5),
        (1000, 100.0, 0.0),
    ],
)
def test_pace_delay(kept, elapsed_s, delay):
    assert pace_delay(kept, elapsed_s, 10.0, 4.0, 60.0) == pytest.approx(delay, abs=1e-12)


def test_a_paced_stream_scores_the_same(make_server, test_settings):
    """A 1 s burst then 50x real time: the server waits between frames (its queue is large
    enough to hold them all), and every clip comes out as without pacing."""
    settings = dataclasses.replace(test_settings, max_stream_speed=50.0, stream_burst_s=1.0)
    paced = stream(make_server(settings).ws_url)
    reference = stream(make_server(test_settings).ws_url)
    assert paced.close_code == 1000 and paced.events[-1]["frames_dropped"] == 0
    assert paced.of("scores") == reference.of("scores") and paced.ends == reference.ends


def test_a_stream_faster_than_its_allowance_loses_its_oldest_frames(make_server, test_settings):
    """Real time after half a second of video, and a queue of 4 frames: 5 s of video sent at
    once cannot all be taken (the client sends it in milliseconds; the server takes it at
    one second per second), so the oldest frames are dropped and the client is told."""
    settings = dataclasses.replace(
        test_settings, max_stream_speed=1.0, stream_burst_s=0.5, queue_frames=4
    )
    r = stream(make_server(settings).ws_url)
    assert r.close_code == 1000
    end = r.events[-1]
    assert end["frames_dropped"] > 0 and end["clips"] < 12
    (warning, *_) = [w for w in r.of("warning") if w["code"] == "frames_dropped"]
    assert "faster than 1x real time" in warning["message"]
