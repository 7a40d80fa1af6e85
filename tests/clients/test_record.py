"""gd-record through librealsense's software device: the recorder, limits, SIGINT, colour."""

import io
import math
import os
import signal
import threading

import numpy as np
import pytest

from clients.record import main, record_device
from core.clip import frame_timestamps_us
from core.realsense import (
    COLOR,
    DEPTH,
    RealSenseError,
    SoftwareCamera,
    read_color,
    read_depth,
    record,
)

W, H, FPS = 32, 24, 30
CW, CH = 40, 30
T0_US = 7_000_000
COLOR_LAG_US = 9_000  # the colour clock runs a little behind the depth clock, as on a D435


def depth(n: int) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 6000, (n, H, W)).astype(np.uint16)


def color(n: int) -> np.ndarray:
    return np.random.default_rng(4).integers(0, 256, (n, CH, CW, 3)).astype(np.uint8)


class Feeder(threading.Thread):
    """Pushes frames into a software camera as a camera delivers them, until the recorder's
    `stop` is set or `n` frames are out; then optionally sends SIGINT to this process."""

    def __init__(self, camera, stop, n, with_color, sigint):
        super().__init__(daemon=True)
        self.camera, self.stop, self.n = camera, stop, n
        self.with_color, self.sigint = with_color, sigint
        self.pushed = 0

    def run(self):
        ts = frame_timestamps_us(self.n, FPS) + T0_US
        d, c = depth(self.n), color(self.n)
        for i in range(self.n):
            if self.stop.is_set():
                return
            self.camera.push(DEPTH, d[i], ts[i])
            if self.with_color:
                self.camera.push(COLOR, c[i], ts[i] + COLOR_LAG_US)
            self.pushed += 1
        if self.sigint:
            os.kill(os.getpid(), signal.SIGINT)


def run_recording(path, n, with_color=False, sigint=False, **limits):
    camera = SoftwareCamera(W, H, FPS, color_size=(CW, CH) if with_color else None)
    stop = threading.Event()
    feeder = Feeder(camera, stop, n, with_color, sigint)
    out = io.StringIO()
    done = record_device(camera.device, path, color=with_color, stop=stop, progress=out,
                         on_start=feeder.start, **limits)  # fmt: skip
    feeder.join()
    return done, feeder, out.getvalue()


def test_sigint_stops_cleanly_and_the_file_holds_every_frame(tmp_path):
    before = signal.getsignal(signal.SIGINT)  # Python's own, or ignored under nohup
    done, feeder, out = run_recording(tmp_path / "r.db3", 20, sigint=True)
    assert done.stopped_by == "interrupt"
    assert (done.frames, feeder.pushed) == (20, 20)
    rec = read_depth(tmp_path / "r.db3")  # finalized: playback reads it to the end
    assert np.array_equal(rec.frames, depth(20))
    assert np.array_equal(rec.timestamps_us, frame_timestamps_us(20, FPS) + T0_US)
    assert read_color(tmp_path / "r.db3") is None  # colour only when asked for
    assert "20 frames" in out and "stopped: interrupt" in out
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored


def test_max_seconds_counts_the_frames_own_clock(tmp_path):
    max_s = 0.5
    done, feeder, _ = run_recording(tmp_path / "r.db3", 100, max_seconds=max_s)
    # The first frame whose timestamp is max_s after the first one stops the recording.
    period_us = 1e6 / FPS
    n = 1 + math.ceil(max_s * 1e6 / period_us - 1e-9)
    assert done.stopped_by == "max-seconds"
    assert feeder.pushed == done.frames == n
    assert len(read_depth(tmp_path / "r.db3").frames) == n


def test_max_bytes_counts_depth_and_colour(tmp_path):
    per_step = 2 * W * H + 3 * CW * CH  # one depth and one colour frame
    done, feeder, _ = run_recording(tmp_path / "r.db3", 100, with_color=True,
                                    max_bytes=4 * per_step + 1)  # fmt: skip
    # Reached by the depth frame of step 5 (4 full steps plus 2*W*H bytes > the limit); the
    # feeder sees the stop after step 5's colour frame, which is recorded and counted too.
    assert done.stopped_by == "max-bytes"
    assert feeder.pushed == 5
    assert (done.frames, done.bytes) == (10, 5 * per_step)
    assert len(read_depth(tmp_path / "r.db3").frames) == 5


def test_color_is_recorded_with_its_own_timestamps(tmp_path):
    done, _, _ = run_recording(tmp_path / "r.db3", 12, with_color=True, sigint=True)
    assert done.frames == 24
    rec = read_color(tmp_path / "r.db3")
    assert rec is not None and rec.fps == FPS
    assert np.array_equal(rec.frames, color(12))
    assert np.array_equal(rec.timestamps_us, frame_timestamps_us(12, FPS) + T0_US + COLOR_LAG_US)
    assert np.array_equal(read_depth(tmp_path / "r.db3").frames, depth(12))


def test_a_device_without_colour_is_refused_before_any_file(tmp_path):
    camera = SoftwareCamera(W, H, FPS)
    with pytest.raises(RealSenseError, match="no rgb8 colour stream"):
        record_device(camera.device, tmp_path / "r.db3", color=True)
    with pytest.raises(RealSenseError, match="no z16 depth stream at 64x48"):
        record_device(camera.device, tmp_path / "r.db3", size=(64, 48))
    assert not (tmp_path / "r.db3").exists()


def test_record_writes_depth_and_colour_arrays(tmp_path):
    ts = frame_timestamps_us(10, FPS) + T0_US
    cts = ts[:7] * 1 + 20_000  # fewer colour frames, on a clock of their own
    record(tmp_path / "a.db3", depth(10), ts, FPS, color=color(7), color_timestamps_us=cts)
    assert np.array_equal(read_depth(tmp_path / "a.db3").frames, depth(10))
    rec = read_color(tmp_path / "a.db3")
    assert np.array_equal(rec.frames, color(7)) and np.array_equal(rec.timestamps_us, cts)
    with pytest.raises(RealSenseError, match="colour frames need their timestamps"):
        record(tmp_path / "b.db3", depth(10), ts, FPS, color=color(7))


def test_cli_refuses_bag_and_existing_files(tmp_path, capsys):
    assert main([str(tmp_path / "a.bag")]) == 2
    assert "records .db3 files only" in capsys.readouterr().err
    (tmp_path / "a.db3").write_bytes(b"")
    assert main([str(tmp_path / "a.db3")]) == 2
    assert "exists (--force overwrites)" in capsys.readouterr().err


def test_cli_without_a_camera_says_so(tmp_path, capsys):
    import pyrealsense2 as rs

    if len(rs.context().query_devices()):
        pytest.skip("a RealSense camera is connected: gd-record would record from it")
    assert main([str(tmp_path / "a.db3"), "--max-seconds", "1"]) == 1
    assert "no RealSense camera found" in capsys.readouterr().err
    assert not (tmp_path / "a.db3").exists()
