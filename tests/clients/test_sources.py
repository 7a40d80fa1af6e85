"""Frame sources: files of every kind, the synthetic scene, pacing, threads, the camera's checks."""

import asyncio
import itertools
import sys
import time

import cv2
import numpy as np
import pytest

from clients import sources
from clients.sources import SourceError
from core.realsense import record_depth
from synth.generate import detection_video


def depth(n=5, h=6, w=8):
    return (np.arange(n * h * w).reshape(n, h, w) + 500).astype(np.uint16)


def test_npy(tmp_path):
    np.save(tmp_path / "a.npy", depth())
    src = sources.open_file(tmp_path / "a.npy", fps=25)
    frames = list(src.frames)
    assert (src.fps, src.name, src.live) == (25, "a", False)
    assert [t for t, _ in frames] == [0, 40_000, 80_000, 120_000, 160_000]
    assert np.array_equal(np.stack([f for _, f in frames]), depth())


def test_npy_big_endian_becomes_native(tmp_path):
    np.save(tmp_path / "a.npy", depth().astype(">u2"))
    _, frame = next(sources.open_file(tmp_path / "a.npy", fps=25).frames)
    assert frame.dtype == np.uint16 and frame.dtype.isnative and frame[0, 0] == 500


def test_npz_timing(tmp_path):
    ts = np.array([10, 20, 35, 50, 60]) * 1000
    np.savez(tmp_path / "t.npz", depth=depth(), timestamps_us=ts)
    assert [t for t, _ in sources.open_file(tmp_path / "t.npz").frames] == ts.tolist()
    np.savez(tmp_path / "f.npz", frames=depth(), fps=np.array(10.0))
    src = sources.open_file(tmp_path / "f.npz")
    assert src.fps == 10 and [t for t, _ in src.frames][:2] == [0, 100_000]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: np.save(p / "x.npy", depth()), "give its frame rate with --fps"),
        (lambda p: np.save(p / "x.npy", depth().astype(np.float32)), "must be uint16"),
        (lambda p: np.save(p / "x.npy", depth()[0]), "T x H x W"),
        (lambda p: np.savez(p / "x.npz", a=depth(), b=depth()), "needs an array 'depth'"),
        (lambda p: np.savez(p / "x.npz", depth=depth(), timestamps_us=np.arange(4)), "5 integers"),
        (lambda p: np.savez(p / "x.npz", depth=depth(), timestamps_us=np.zeros(5, int)),
         "must increase"),
        (lambda p: (p / "x.mp4").write_bytes(b"x"), "unsupported file"),
        (lambda p: (p / "x.npy").write_bytes(b"not numpy"), "not a readable .npy"),
    ],
)  # fmt: skip
def test_file_errors(tmp_path, make, message):
    make(tmp_path)
    (path,) = tmp_path.iterdir()
    with pytest.raises(SourceError, match=message):
        list(sources.open_file(path).frames)


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        sources.open_file(tmp_path / "none.db3")


def test_png_folder_in_natural_order(tmp_path):
    frames = depth(n=12)
    for i in range(12):  # frame2 must come before frame10
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), frames[i])
    (tmp_path / "notes.txt").write_text("not a frame")
    src = sources.open_file(tmp_path, fps=30)
    got = list(src.frames)
    assert np.array_equal(np.stack([f for _, f in got]), frames)
    assert got[3][0] == 100_000 and src.name == tmp_path.name


def test_png_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="no .png frames"):
        sources.open_file(tmp_path, fps=30)
    cv2.imwrite(str(tmp_path / "1.png"), depth()[0])
    cv2.imwrite(str(tmp_path / "2.png"), depth()[0].astype(np.uint8))
    with pytest.raises(SourceError, match="2.png: PNG must be 16-bit grayscale"):
        list(sources.open_file(tmp_path, fps=30).frames)
    cv2.imwrite(str(tmp_path / "2.png"), depth(h=4)[0])
    with pytest.raises(SourceError, match="all frames must have one size"):
        list(sources.open_file(tmp_path, fps=30).frames)


def test_recording(tmp_path):
    ts = np.array([0, 33_333, 66_667, 100_000, 140_000]) + 5_000_000  # one late frame
    record_depth(tmp_path / "r.db3", depth(), ts, fps=30)
    src = sources.open_file(tmp_path / "r.db3")
    got = list(src.frames)
    assert src.fps == 30 and src.name == "r"
    assert [t for t, _ in got] == ts.tolist()
    assert np.array_equal(np.stack([f for _, f in got]), depth())
    with pytest.raises(SourceError, match="has its own timestamps"):
        sources.open_file(tmp_path / "r.db3", fps=30)
    (tmp_path / "bad.bag").write_bytes(b"#ROSBAG V2.0 and nothing else")
    with pytest.raises(SourceError, match="bad.bag"):
        sources.open_file(tmp_path / "bad.bag")


@pytest.mark.slow
def test_synth_plays_a_scripted_scene():
    src = sources.synth(seed=3, actions=1, size=(32, 48))
    frames = list(src.frames)
    assert src.fps == 30 and src.name == "synth"
    assert all(f.dtype == np.uint16 and f.shape == (32, 48) for _, f in frames)
    assert [t for t, _ in frames] == [round(i * 1e6 / 30) for i in range(len(frames))]
    video = detection_video(3, subject=1, camera=2, n_actions=1, size=(32, 48))
    assert np.array_equal(np.stack([f for _, f in frames]), video.depth)


@pytest.mark.slow
def test_synth_loop_goes_on_with_new_videos():
    one = len(list(sources.synth(seed=3, actions=1, size=(32, 32)).frames))
    looped = sources.synth(seed=3, actions=1, size=(32, 32), loop=True).frames
    frames = list(itertools.islice(looped, one + 30))
    ts = [t for t, _ in frames]
    assert ts == [round(i * 1e6 / 30) for i in range(one + 30)]  # one timeline, no gap
    second = sources.synth(seed=4, actions=1, size=(32, 32)).frames
    assert np.array_equal(frames[one][1], next(second)[1])  # the next video is the next seed


def test_synth_bad_arguments():
    with pytest.raises(SourceError, match="n_actions"):
        sources.synth(actions=0)


class FakeClock:
    """Pacing's clock and sleep, moved by the test instead of by real time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


# Readings and expected values are sums of a few floats under 2 s, where an ulp is at most eps:
# each side carries at most three roundings of half an ulp, so they differ by under 3 eps.
CLOCK_TOL = 4 * sys.float_info.epsilon


def paced_on(frames, clock, speed=1.0):
    """(timestamp, the clock's reading when paced yielded the frame) for each frame."""
    return [(t, clock.now) for t, _ in sources.paced(frames, speed, clock, clock.sleep)]


@pytest.mark.parametrize("speed", [1.0, 3.0])
def test_paced_yields_each_frame_when_its_timestamp_comes_due(speed):
    frames = [(i * 20_000, None) for i in range(10)]  # 50 fps
    got = paced_on(iter(frames), FakeClock(), speed)
    assert [now for _, now in got] == pytest.approx([t / 1e6 / speed for t, _ in frames],
                                                    abs=CLOCK_TOL)  # fmt: skip


def test_paced_restarts_its_clock_after_a_stall_instead_of_bursting():
    clock = FakeClock()
    stall = sources.CATCH_UP_S + 0.2

    def stalling():
        for i in range(8):
            if i == 3:
                clock.now += stall  # the reader stalled before frame 3
            yield i * 20_000, None

    readings = [now for _, now in paced_on(stalling(), clock)]
    assert readings[:3] == pytest.approx([0.0, 0.02, 0.04], abs=CLOCK_TOL)
    # Frame 3 goes at once, and the frames after it keep their periods from there: no burst.
    restart = 0.04 + stall
    assert readings[3:] == pytest.approx([restart + k * 0.02 for k in range(5)], abs=CLOCK_TOL)


def test_threaded_frames_keep_a_read_that_was_cancelled():
    def slow():
        for i in range(3):
            time.sleep(0.1)
            yield i, None

    async def main():
        frames = sources.ThreadedFrames(slow())
        read = asyncio.create_task(anext(frames))
        await asyncio.sleep(0.02)
        read.cancel()  # the connection dropped while the source was reading frame 0
        with pytest.raises(asyncio.CancelledError):
            await read
        got = [t async for t, _ in frames]
        frames.close()
        return got

    assert asyncio.run(main()) == [0, 1, 2]


def test_threaded_frames_pass_on_source_errors():
    def broken():
        yield 0, None
        raise SourceError("the camera went away")

    async def main():
        frames = sources.ThreadedFrames(broken())
        assert (await anext(frames))[0] == 0
        with pytest.raises(SourceError, match="went away"):
            await anext(frames)
        frames.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decimation": 9}, "decimation must be in 1..8"),
        ({"hole_filling": "everywhere"}, "hole filling must be one of left, farthest, nearest"),
        ({"width": 0}, "resolution"),
        ({"fps": 0}, "fps"),
    ],
)
def test_camera_arguments_are_checked_first(kwargs, message):
    with pytest.raises(SourceError, match=message):
        sources.camera(**kwargs)


def test_no_camera_is_a_clear_error():
    import pyrealsense2 as rs

    if len(rs.context().query_devices()):
        pytest.skip("a RealSense camera is connected to this machine")
    start = time.monotonic()
    with pytest.raises(SourceError, match="no RealSense camera found"):
        sources.camera(decimation=2, hole_filling="nearest")
    assert time.monotonic() - start < 5  # asks librealsense for devices; never waits on a pipeline
