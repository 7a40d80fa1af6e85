"""WS /v1/stream against a real uvicorn on loopback with a real websockets client."""

import asyncio
import dataclasses
import json
import socket

import numpy as np
import pytest
import zstandard
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from core.clip import frame_timestamps_us
from core.wire import pack_frame, pack_header
from tests.helpers.live import (
    TOKEN,
    collect,
    frame_messages,
    hello,
    npy_bytes,
    run_stream,
    upload,
)
from tests.helpers.streams import FRAMES, stream
from tests.helpers.tiny_bundle import (
    CLASSES,
    PROB_TOL,
    TINY_SPEC,
    make_bundle,
    reference_probs,
    scene,
)


def test_happy_path_events(server):
    r = stream(server.ws_url)
    assert r.close_code == 1000
    assert r.ready["clip"] == dataclasses.asdict(TINY_SPEC)
    assert r.ready["classes"] == list(CLASSES)
    scores = r.of("scores")
    assert [s["clip"] for s in scores] == list(range(12))
    starts = [e for e in r.of("action") if e["state"] == "start"]
    assert [(e["clip"], e["label"]) for e in starts] == [(2, "small"), (8, "large")]
    assert [(e["first_clip"], e["last_clip"], e["label"]) for e in r.ends] == [
        (2, 5, "small"),
        (8, 10, "large"),
    ]
    first = r.ends[0]  # clips 2..5 = source frames 24..71 = 0.8 s .. 2.4 s
    assert (first["start_frame"], first["end_frame"]) == (24, 71)
    assert (first["start_s"], first["end_s"]) == (0.8, 2.4)
    assert (first["start_timestamp_us"], first["end_timestamp_us"]) == (1_800_000, 3_400_000)
    end = r.events[-1]
    assert end == {"type": "end", "clips": 12, "frames_received": 150, "frames_dropped": 0}
    # Events come in order: clip c's scores before the actions that clip closes.
    kinds = [(e["type"], e.get("clip", e.get("last_clip"))) for e in r.events]
    assert kinds.index(("scores", 6)) < kinds.index(("action", 5))


@pytest.mark.numerics
def test_scores_event_content(server):
    scores = stream(server.ws_url).of("scores")
    s = scores[3]  # a "small" clip: its 4 kept frames are source frames 36, 39, 42, 45
    assert (s["start_frame"], s["end_frame"], s["start_s"], s["end_s"]) == (36, 47, 1.2, 1.6)
    # The frame that completed clip 3 is its last kept frame, source frame 45.
    assert s["frame_index"] == 45
    assert s["timestamp_us"] == 1_000_000 + round(45 * 1e6 / 30)
    labels = [t["label"] for t in s["top"]]
    assert labels == ["small", "large"]  # L = 2 < top_k = 5: all actions, best first
    p = [t["score"] for t in s["top"]]
    assert p[0] > p[1] and 1 - s["activity"] + sum(p) == pytest.approx(1, abs=PROB_TOL)


@pytest.mark.parametrize("encoding", ["zstd", "png"])
def test_encodings_give_the_same_scores(server, encoding):
    raw = stream(server.ws_url).of("scores")
    other = stream(server.ws_url, encoding=encoding).of("scores")
    assert other == raw


def test_frames_reduced_by_the_client(server):
    """A client may send frames already at the model's size (and rate): same result."""
    from core.clip import DepthPreprocessor

    small = DepthPreprocessor(TINY_SPEC, 48, 64).to_millimetres(FRAMES)
    kept = small[::3]  # the model's 10 fps
    ts = frame_timestamps_us(len(kept), 10) + 1_000_000
    messages = frame_messages(kept, ts)
    reduced = asyncio.run(
        run_stream(server.ws_url, messages=messages, hello_message=hello(640, 480, 30))
    )
    assert reduced.close_code == 1000
    full = stream(server.ws_url)
    assert [e["top"] for e in reduced.of("scores")] == [e["top"] for e in full.of("scores")]
    assert reduced.ends == full.ends


def test_token_in_hello(server):
    r = stream(server.ws_url, header_token=False)
    assert r.close_code == 1000 and len(r.of("scores")) == 12


def test_stream_equals_upload(server):
    """Issue item 6: same labels, boundaries within one clip."""
    streamed = stream(server.ws_url).ends
    response = upload(server.url, npy_bytes(FRAMES), fps=30)
    assert response.status_code == 200
    uploaded = response.json()["detections"]
    assert [d["label"] for d in uploaded] == [e["label"] for e in streamed] == ["small", "large"]
    clip_s = TINY_SPEC.clip_seconds
    for d, e in zip(uploaded, streamed, strict=True):
        assert abs(d["start_s"] - e["start_s"]) <= clip_s
        assert abs(d["end_s"] - e["end_s"]) <= clip_s
        assert abs(d["start_frame"] - e["start_frame"]) <= TINY_SPEC.clip_len * 3
        assert abs(d["end_frame"] - e["end_frame"]) <= TINY_SPEC.clip_len * 3


def test_irregular_timestamps_are_resampled(server):
    """A 15 fps camera with jitter and a dropped frame still yields one clip per 0.4 s."""
    rng = np.random.default_rng(3)
    n = 60  # 4 s at 15 fps
    ts = 1_000_000 + np.round(np.arange(n) * 1e6 / 15 + rng.integers(-3000, 3000, n))
    keep = np.ones(n, bool)
    keep[20] = False
    frames = scene(n, actions=((12, 36, 0.15),))[keep]
    messages = frame_messages(frames, ts[keep])
    r = asyncio.run(run_stream(server.ws_url, messages=messages, hello_message=hello(fps=15)))
    assert r.close_code == 1000
    # kept ticks every 100 ms up to the last frame (~3.93 s): 40 kept frames = 10 clips
    assert len(r.of("scores")) == 10
    assert [(e["first_clip"], e["last_clip"]) for e in r.ends] == [(2, 5)]


@pytest.mark.numerics
def test_window_rule_uses_the_last_t_w_clips(make_server, test_settings, tmp_path):
    """With a sequence encoder that averages its window, clip c's scores must be those of
    the mean feature over clips max(0, c - T_w + 1) .. c (computed here in numpy)."""
    bundle = make_bundle(tmp_path / "cummean", mixing="cummean")
    live = make_server(dataclasses.replace(test_settings, model=bundle.root))
    rng = np.random.default_rng(7)
    n_clips = 9
    areas = rng.choice([0.0, 0.02, 0.06, 0.15, 0.3], n_clips)
    frames = np.concatenate([scene(12, 32, 32, ((0, 12, a),), seed=c) for c, a in enumerate(areas)])
    r = asyncio.run(run_stream(live.ws_url, frames))
    # near fraction per clip from its kept frames (every 3rd), frames already at model size
    kept = frames[::3].astype(np.int64)
    near = ((kept >= TINY_SPEC.depth_min_mm) & (kept < 2250)).mean(axis=(1, 2))
    n_clip = near.reshape(n_clips, TINY_SPEC.clip_len).mean(axis=1)
    t_w = TINY_SPEC.window
    for s in r.of("scores"):
        c = s["clip"]
        want = reference_probs(n_clip[max(0, c - t_w + 1) : c + 1].mean())
        got = {t["class_id"]: t["score"] for t in s["top"]}
        assert s["activity"] == pytest.approx(1 - want[0], abs=PROB_TOL)
        assert got[1] == pytest.approx(want[1], abs=PROB_TOL)
        assert got[2] == pytest.approx(want[2], abs=PROB_TOL)
    assert len(r.of("scores")) == n_clips


def test_many_concurrent_streams_each_get_their_own_result(server):
    scenes = [scene(90, actions=((12 * (i % 4), 12 * (i % 4) + 36, 0.15 + 0.35 * (i % 2)),),
                    seed=i) for i in range(24)]  # fmt: skip

    async def all_streams():
        return await asyncio.gather(*(run_stream(server.ws_url, f) for f in scenes))

    results = asyncio.run(all_streams())
    for i, r in enumerate(results):
        assert r.close_code == 1000
        first = i % 4
        label = "large" if i % 2 else "small"
        assert [(e["first_clip"], e["last_clip"], e["label"]) for e in r.ends] == [
            (first, first + 2, label)
        ], i


@pytest.mark.slow
def test_slow_sender_among_fast_ones(server):
    """A client trickling frames slower than real time is scored by its timestamps, exactly as
    a fast one, while bursts from other streams come and go."""
    frames = FRAMES[:60]

    async def both():
        slow = asyncio.create_task(run_stream(server.ws_url, frames, interval=0.02))
        fast = [await run_stream(server.ws_url, FRAMES) for _ in range(3)]
        return await slow, fast

    slow, fast = asyncio.run(both())
    alone = stream(server.ws_url, frames)
    assert slow.close_code == 1000 and slow.of("scores") == alone.of("scores")
    assert all(r.close_code == 1000 and r.ends == fast[0].ends for r in fast)


# --- bad input: each gets its specific error, and the other streams go on unharmed --------

H, W = 48, 64
GOOD = pack_frame(1_000_000, 0, FRAMES[0])
NEXT = 1_033_333


BAD_STREAMS = {
    # name: (run_stream kwargs, close code, error code, message fragment)
    "bad_json_hello": (dict(messages=[], hello_message="{not json"), 4400, "bad_request", "JSON"),
    "binary_first": (dict(messages=[], hello_message=GOOD), 4400, "bad_request", "JSON hello"),
    "hello_missing_fps": (
        dict(messages=[], hello_message={k: v for k, v in hello().items() if k != "fps"}),
        4400, "bad_request", "lacks 'fps'",
    ),
    "unknown_encoding": (
        dict(messages=[], hello_message=hello(encoding="jpeg")), 4400, "bad_request", "jpeg",
    ),
    "wrong_protocol": (
        dict(messages=[], hello_message=hello(protocol=2)), 4400, "bad_request", "protocol 2",
    ),
    "huge_frames_declared": (
        dict(messages=[], hello_message=hello(4096, 4096)), 4413, "frame_too_large", "4096x4096",
    ),
    "wrong_size": (
        dict(messages=[pack_header(1, 0) + b"\0" * (2 * 40 * 40)]),
        4400, "bad_request", "not a uint16 image of 64x48 or 32x32",
    ),
    "wrong_dtype": (  # float32 pixels: twice the bytes of the uint16 frame
        dict(messages=[pack_header(1, 0) + np.zeros((H, W), np.float32).tobytes()]),
        4413, "frame_too_large", "exceeds",
    ),
    "truncated_payload": (
        dict(messages=[GOOD[: len(GOOD) // 2]]), 4400, "bad_request", "not a uint16 image",
    ),
    "header_only": (dict(messages=[GOOD[:12]]), 4400, "bad_request", "12-byte header"),
    "oversized_message": (
        dict(messages=[GOOD + b"\0" * 20000]), 4413, "frame_too_large", "exceeds",
    ),
    "non_monotonic": (
        dict(messages=[GOOD, pack_frame(NEXT, 1, FRAMES[1]), pack_frame(900_000, 2, FRAMES[2])]),
        4400, "bad_timestamp", "timestamps must increase",
    ),
    "repeated_timestamp": (
        dict(messages=[GOOD, pack_frame(1_000_000, 1, FRAMES[1])]),
        4400, "bad_timestamp", "timestamps must increase",
    ),
    "corrupt_png": (
        dict(
            encoding="png",
            messages=[pack_header(1, 0) + b"\x89PNG\r\n\x1a\n" + b"\0" * 30 + b"garbage" * 20],
        ),
        4400, "bad_request", "PNG",
    ),
    "zstd_bomb": (
        dict(
            encoding="zstd",
            messages=[pack_header(1, 0) + zstandard.ZstdCompressor().compress(b"\0" * (1 << 24))],
        ),
        4413, "frame_too_large", "declares 16777216 bytes",
    ),
    "unknown_message": (dict(messages=[{"type": "pause"}]), 4400, "bad_request", "'pause'"),
    "text_not_json": (
        dict(messages=[GOOD, "{broken"], end=False), 4400, "bad_request", "not valid JSON",
    ),
    "no_token": (dict(messages=[], token=None), 4401, "unauthorized", "token"),
    "wrong_token": (dict(messages=[], token="nope"), 4401, "unauthorized", "token"),
    "wrong_token_in_hello": (
        dict(messages=[], token="nope", header_token=False), 4401, "unauthorized", "token",
    ),
}  # fmt: skip


def test_every_bad_input_gets_its_error_while_good_streams_go_on(server):
    async def everything():
        good = [run_stream(server.ws_url, FRAMES) for _ in range(3)]
        bad = [run_stream(server.ws_url, **kwargs) for kwargs, *_ in BAD_STREAMS.values()]
        return await asyncio.gather(*good), await asyncio.gather(*bad)

    reference = stream(server.ws_url)
    good, bad = asyncio.run(everything())
    for r in good:
        assert r.close_code == 1000
        assert r.of("scores") == reference.of("scores") and r.ends == reference.ends
    for (name, (_, close, code, fragment)), r in zip(BAD_STREAMS.items(), bad, strict=True):
        errors = r.of("error")
        assert r.close_code == close, (name, r.close_code, r.events)
        assert r.close_reason == code, name
        assert len(errors) == 1 and errors[0]["code"] == code, (name, errors)
        assert fragment in errors[0]["message"], (name, errors[0]["message"])
    assert server.service.active_streams == 0


def test_idle_and_stalled_streams_time_out(make_server, test_settings):
    live = make_server(dataclasses.replace(test_settings, idle_timeout_s=0.3))

    async def stalled(after_frames):
        async with connect(
            live.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}
        ) as ws:
            await ws.send(json.dumps(hello()))
            for i in range(after_frames):
                await ws.send(pack_frame(1_000_000 + i * 33_333, i, FRAMES[i]))
            events = await collect(ws)
            return ws.close_code, events

    async def both():
        return await asyncio.gather(stalled(0), stalled(20))

    for code, events in asyncio.run(both()):
        assert code == 4408
        assert events[-1]["code"] == "idle"

    async def silent():  # connects and never says hello
        async with connect(live.ws_url) as ws:
            await ws.wait_closed()
            return ws.close_code

    assert asyncio.run(silent()) == 4408


def test_too_many_streams(make_server, test_settings):
    live = make_server(dataclasses.replace(test_settings, max_streams=2))

    async def scenario():
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            connect(live.ws_url, additional_headers=auth) as a,
            connect(live.ws_url, additional_headers=auth) as b,
        ):
            for ws in (a, b):
                await ws.send(json.dumps(hello()))
                assert json.loads(await ws.recv())["type"] == "ready"
            third = await run_stream(live.ws_url, FRAMES)
        # the two are gone: a new stream gets in
        fourth = await run_stream(live.ws_url, FRAMES)
        return third, fourth

    third, fourth = asyncio.run(scenario())
    assert third.close_code == 4429 and third.of("error")[0]["code"] == "too_many_streams"
    assert fourth.close_code == 1000


def test_vanishing_client_is_cleaned_up(server):
    async def vanish():
        async with connect(
            server.ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}
        ) as ws:
            await ws.send(json.dumps(hello()))
            await ws.recv()
            for i in range(30):
                await ws.send(pack_frame(1_000_000 + i * 33_333, i, FRAMES[i]))
            ws.transport.abort()  # no close frame: the TCP connection just drops

    asyncio.run(vanish())
    for _ in range(100):
        if server.service.active_streams == 0:
            break
        asyncio.run(asyncio.sleep(0.02))
    assert server.service.active_streams == 0
    assert stream(server.ws_url).close_code == 1000  # and the server serves on


@pytest.mark.slow
def test_client_that_stops_reading_is_dropped(make_server, test_settings, tmp_path):
    """A client that sends but never reads: once its buffers are full the server's sends block;
    it gives up after send_timeout_s (close 4408) and other streams are unaffected."""
    # 400 extra classes and top_k 400: ~20 kB scores events fill the socket buffers quickly.
    bundle = make_bundle(tmp_path / "wide", extra_classes=400)
    settings = dataclasses.replace(
        test_settings,
        model=bundle.root,
        top_k=400,
        send_timeout_s=0.3,
        queue_frames=64,
        max_wait_ms=0.2,
    )
    live = make_server(settings, send_buffer=4096)  # else loopback buffers hold megabytes
    closed = live.service.metrics.streams_closed.labels("4408")

    async def not_reading():
        sock = socket.create_connection(live.sock.getsockname())
        # 4 x loopback's MSS (64 kB), well above it; the events of a few dozen clips fill it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ws = await connect(live.ws_url, sock=sock, additional_headers=auth, max_queue=1)
        await ws.send(json.dumps(hello(32, 32)))
        frames = scene(4, 32, 32)
        sending = None
        try:
            for i in range(100_000):  # at the model's 10 fps: a clip every 4 frames
                sending = asyncio.ensure_future(
                    ws.send(pack_frame(1_000_000 + i * 100_000, i, frames[i % 4]))
                )
                # a send the server stops reading for waits; the 4408 ends the wait at once
                async with asyncio.timeout(2):  # a send held this long: it never gave up
                    while not sending.done():
                        if closed._value.get():
                            return i
                        await asyncio.wait({sending}, timeout=0.02)
                sending.result()
        except (TimeoutError, ConnectionClosed):
            return -1 if not closed._value.get() else i
        finally:
            if sending is not None:
                sending.cancel()
            ws.transport.abort()
        return None

    sent = asyncio.run(not_reading())
    assert sent is not None and sent > 0, "the server never gave up on the client"
    assert live.service.active_streams == 0
    assert stream(live.ws_url).close_code == 1000


def test_overload_drops_oldest_frames_and_warns(make_server, test_settings):
    live = make_server(dataclasses.replace(test_settings, queue_frames=8, max_wait_ms=50))
    r = stream(live.ws_url)
    # Drops can also leave a timestamp jump over max_gap_s: a `timestamp_gap` warning.
    warnings = [w for w in r.of("warning") if w["code"] == "frames_dropped"]
    assert warnings and r.of("warning")[0]["code"] == "frames_dropped"
    end = r.events[-1]
    assert end["frames_dropped"] > 0 and end["frames_received"] == 150
    assert warnings[-1]["total_dropped"] <= end["frames_dropped"]
    metrics = live.service.metrics
    assert metrics.drops._value.get() == end["frames_dropped"]


def test_internal_error_closes_1011_and_the_server_recovers(make_server, test_settings):
    live = make_server(test_settings)
    engine = live.service.engine
    real = engine.visual

    def broken(x):
        raise RuntimeError("simulated engine failure")

    engine.visual = broken
    r = stream(live.ws_url)
    assert r.close_code == 1011 and r.of("error")[0]["code"] == "internal_error"
    assert "simulated" not in json.dumps(r.events)  # internals stay in the server log
    engine.visual = real
    assert stream(live.ws_url).close_code == 1000
