"""Timestamp gaps (issue 12 item 3): a jump over `max_gap_s` starts a new segment of the stream
instead of synthesizing clips for the gap. Real uvicorn on loopback, real websockets client."""

import asyncio
import dataclasses
import time

import numpy as np
import pytest

from core.clip import frame_timestamps_us
from server.settings import Settings, SettingsError, from_env
from tests.helpers.live import T0_US, frame_messages, hello, run_stream
from tests.helpers.streams import FRAMES, TS
from tests.helpers.tiny_bundle import TINY_SPEC

T0 = T0_US


def gapped(url, split, jump_us):
    """FRAMES with every timestamp from frame `split` on moved `jump_us` later."""
    ts = TS.copy()
    ts[split:] += jump_us
    return asyncio.run(run_stream(url, messages=frame_messages(FRAMES, ts)))


def test_two_frames_3000_s_apart_make_no_clip(server):
    r = asyncio.run(
        run_stream(server.ws_url, messages=frame_messages(FRAMES[:2], [T0, T0 + 3_000_000_000]))
    )
    assert r.close_code == 1000
    (warning,) = r.of("warning")
    assert warning["code"] == "timestamp_gap" and warning["clip"] == 0
    assert warning["gap_s"] == 3000 and warning["timestamp_us"] == T0 + 3_000_000_000
    assert warning["frame_index"] == 1 and "new segment" in warning["message"]
    assert not r.of("scores") and r.events[-1]["clips"] == 0


def test_clips_are_bounded_by_the_frames_received(server):
    """40 frames, each 1,000 s after the last: 40 segments of one kept frame, no clip."""
    ts = T0 + 1_000_000_000 * np.arange(40)
    r = asyncio.run(run_stream(server.ws_url, messages=frame_messages(FRAMES[:40], ts)))
    assert r.close_code == 1000
    assert [w["code"] for w in r.of("warning")] == ["timestamp_gap"] * 39
    assert r.events[-1] == {"type": "end", "clips": 0, "frames_received": 40, "frames_dropped": 0}


def test_a_gap_closes_the_open_action_and_starts_afresh(server):
    """FRAMES with a 100 s jump at frame 60, inside the first action (frames 24-71).

    Before the gap: 60 frames = 20 kept = clips 0-4, the action open since clip 2 ends at
    clip 4. After it: the other 90 frames are scored exactly as a stream of their own
    (fresh resampler, clip buffer and window), clip numbers going on from 5, frames and
    seconds counted from the stream's first frame, timestamps the client's own.
    """
    jump = 100_000_000
    r = gapped(server.ws_url, 60, jump)
    alone = asyncio.run(run_stream(server.ws_url, FRAMES[60:]))
    assert r.close_code == alone.close_code == 1000
    scores = r.of("scores")
    assert [s["clip"] for s in scores] == list(range(5 + len(alone.of("scores"))))

    kinds = [(e["type"], e.get("state")) for e in r.events]
    gap = kinds.index(("warning", None))
    (warning,) = r.of("warning")
    assert warning["clip"] == 5 and warning["frame_index"] == 60
    assert warning["gap_s"] == pytest.approx(jump / 1e6 + 1 / 30, abs=1e-6)
    before = r.events[:gap]
    assert [s["clip"] for s in before if s["type"] == "scores"] == [0, 1, 2, 3, 4]
    (closed,) = [e for e in before if e["type"] == "action" and e["state"] == "end"]
    assert (closed["first_clip"], closed["last_clip"], closed["label"]) == (2, 4, "small")
    assert kinds[gap - 1] == ("action", "end")  # closed at the gap, before the warning

    offset_frames = round((TS[60] + jump - T0) * 30 / 1e6)  # 3060: frame 60, 100 s later
    for got, want in zip(scores[5:], alone.of("scores"), strict=True):
        assert got["clip"] == want["clip"] + 5
        assert got["top"] == want["top"] and got["activity"] == want["activity"]
        assert got["start_frame"] == want["start_frame"] + offset_frames
        assert got["end_s"] == pytest.approx(want["end_s"] + offset_frames / 30, abs=1e-9)
        shift = TS[60] + jump - T0  # alone's first frame is at T0
        assert got["start_timestamp_us"] == want["start_timestamp_us"] + shift
        assert got["frame_index"] == want["frame_index"] + 60
    after = [e for e in r.ends if e["first_clip"] >= 5]
    assert len(after) == len(alone.ends) == 2
    for got, want in zip(after, alone.ends, strict=True):
        assert (got["first_clip"], got["last_clip"]) == (
            want["first_clip"] + 5,
            want["last_clip"] + 5,
        )
        assert (got["label"], got["confidence"]) == (want["label"], want["confidence"])
        assert got["start_frame"] == want["start_frame"] + offset_frames
        assert got["end_timestamp_us"] == want["end_timestamp_us"] + shift
    assert r.events[-1]["clips"] == 5 + alone.events[-1]["clips"]


def test_a_jump_under_max_gap_s_is_bridged(server, make_server, test_settings):
    """A 1.5 s jump: the default 2 s bridges it (repeating the nearest frame, as before);
    a server with max_gap_s 1 starts a new segment."""
    r = gapped(server.ws_url, 60, 1_500_000)
    assert r.close_code == 1000 and not r.of("warning")
    # ticks every 0.1 s from 0 to 149/30 + 1.5 s = 6.47 s: 65 kept frames = 16 clips
    assert r.events[-1]["clips"] == 16
    live = make_server(dataclasses.replace(test_settings, max_gap_s=1.0))
    split = gapped(live.ws_url, 60, 1_500_000)
    assert [w["code"] for w in split.of("warning")] == ["timestamp_gap"]
    assert split.events[-1]["clips"] == 5 + 7  # 20 kept frames, then 90 frames = 30 kept


def test_frames_at_the_model_rate_are_never_a_gap(make_server, test_settings):
    """max_gap_s below two kept-frame periods is raised to them: frames a client reduced to
    the model's rate must still make clips."""
    live = make_server(dataclasses.replace(test_settings, max_gap_s=0.01))
    kept = FRAMES[::3]  # 10 fps, 0.1 s apart
    ts = frame_timestamps_us(len(kept), TINY_SPEC.kept_fps) + T0
    r = asyncio.run(
        run_stream(live.ws_url, messages=frame_messages(kept, ts), hello_message=hello())
    )
    assert r.close_code == 1000 and not r.of("warning")
    assert r.events[-1]["clips"] == 12


def test_max_gap_s_setting():
    assert Settings().max_gap_s == 2.0
    assert from_env({"GD_MAX_GAP_S": "5"}).max_gap_s == 5.0
    with pytest.raises(SettingsError, match="max_gap_s must be positive"):
        Settings(max_gap_s=0)


def test_a_stream_ending_with_gaps_queued_closes_cleanly(make_server, test_settings):
    """Regression: a stream that ends (here idle) while segment boundaries still wait in its
    clip queue behind a slow model closes with its own code, not 1011."""
    live = make_server(dataclasses.replace(test_settings, idle_timeout_s=0.3))
    engine = live.service.engine
    real = engine.visual

    def slow(x):  # holds the first clip well past the idle timeout
        time.sleep(1.0)
        return real(x)

    engine.visual = slow
    ts = np.concatenate([TS[:12] + k * 10_000_000 for k in range(5)])  # 5 segments of a clip
    frames = np.concatenate([FRAMES[:12]] * 5)
    r = asyncio.run(run_stream(live.ws_url, messages=frame_messages(frames, ts), end=False))
    assert r.close_code == 4408 and r.of("error")[0]["code"] == "idle"
    engine.visual = real
