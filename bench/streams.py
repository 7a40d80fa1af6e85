"""How many real-time depth streams one server sustains at p99 clip latency < 100 ms.

    .venv/bin/python bench/streams.py [--seconds 10] [--quick]

Two servers run in the same session, each as a subprocess on loopback:

- `gd-serve`: ONNX Runtime, clips batched across streams, each clip encoded once and its
  feature cached (this repository's server);
- a naive server: PyTorch eager, the same networks and weights, no batching and no feature
  cache: every new clip recomputes the visual encoder over the whole window of T_w clips.

The model is a randomly initialised compact network from `training/networks.py` (ResNet-18
width 32 at 112x112, T_c = 10, GRU sequence encoder, 51 classes), exported through the
project's ONNX export (`export.onnx`); the naive server runs the same torch module (the cost
does not depend on the weights, and a trained bundle carries no torch module). N clients in
one asyncio process send frames in real time, their starts spread over one clip period
(cameras are not synchronized), in two modes: `reduced` (the client sends the model's size
and rate: 112x112 at 10 fps) and `raw` (640x480 at 30 fps). Latency is from sending the
frame that completes a clip to receiving that clip's `scores` event. N grows until p99 >=
100 ms, frames are dropped, clips are lost or the clients fall behind.

The event path's cost (issue 13, item 8; docs/results.md):

    .venv/bin/python bench/streams.py --event-path [--rounds 2] [--seconds 5]

runs gd-serve with the event path off (`GD_EVENTS_DB=off`) and on (a SQLite event store, an
alert rules file that alerts on every action, and a webhook receiver on loopback, in a
subprocess, that verifies each signed delivery), alternating off/on, on/off, ... in one run.
Each arm measures the server's CPU at a fixed number of streams, then finds the most streams
it sustains by bisection over a grid of 8; the summary gives the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.bundle import FileRef, ModelBundle, load_bundle, sha256_file, write_bundle_json  # noqa: E402
from core.clip import ClipSpec, DepthPreprocessor  # noqa: E402
from core.postprocess import ACTIVITY_THRESHOLD  # noqa: E402
from core.wire import pack_header  # noqa: E402

TARGET_P99_S = 0.100
N_ACTIONS = 51
RAW = (480, 640, 30.0)  # height, width, fps
START_S = 180.0  # a server's start, on a machine that may be busy with other jobs


# --- the model ---------------------------------------------------------------------------


def build_bundle(root: Path) -> ModelBundle:
    """A random compact detector exported as a bundle, its torch weights saved beside it."""
    import torch

    from export.onnx import export_encoders
    from training.networks import Detector, ResNet18, SequenceEncoder

    torch.manual_seed(0)
    spec = ClipSpec()  # 30 fps / 3, T_c = s_c = T_w = 10, 112x112
    detector = Detector(ResNet18(spec.clip_len, width=32), SequenceEncoder(256, N_ACTIONS, 256))
    detector.eval()
    root.mkdir(parents=True, exist_ok=True)
    export_encoders(detector, spec, root)
    torch.save(detector.state_dict(), root / "detector.pt")
    bundle = ModelBundle(
        root=root,
        name="bench-random",
        version="0",
        classes=("background", *(f"action-{i}" for i in range(1, N_ACTIONS + 1))),
        clip=spec,
        feature_dim=detector.encoder.out_dim,
        activity_threshold=ACTIVITY_THRESHOLD,
        causal=False,
        files={
            k: FileRef(f"{k}.onnx", sha256_file(root / f"{k}.onnx"))
            for k in ("visual_encoder", "sequence_encoder")
        },
        training={"note": "random weights, for benchmarking only"},
    )
    write_bundle_json(bundle)
    return bundle


# --- the naive server (PyTorch eager, no batching, no feature cache) -----------------------


def naive_server(bundle_dir: Path, port: int) -> None:
    import torch
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    from core.clip import TimestampResampler
    from core.wire import decode_image, parse_hello, parse_json, unpack_header
    from training.networks import Detector, ResNet18, SequenceEncoder

    # Same thread rule as gd-serve: all cores but one (OpenMP teams also collapse when
    # oversubscribed).
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
    bundle = load_bundle(bundle_dir)
    spec = bundle.clip
    detector = Detector(
        ResNet18(spec.clip_len, width=32), SequenceEncoder(256, bundle.num_classes, 256)
    )
    detector.load_state_dict(torch.load(bundle_dir / "detector.pt"))
    detector.eval()
    with torch.inference_mode():  # first runs of each window length are slow: not measured
        for t in range(1, spec.window + 1):
            detector(torch.zeros(1, t, spec.clip_len, spec.height, spec.width))

    async def handler(ws) -> None:
        with contextlib.suppress(ConnectionClosed):  # the client ends a step by closing
            await stream(ws)

    async def stream(ws) -> None:
        hello = parse_hello(parse_json(await ws.recv()))
        sizes = [(hello.height, hello.width), (spec.height, spec.width)]
        await ws.send(json.dumps({"type": "ready", "clip": spec.to_dict()}))
        resampler = TimestampResampler(spec.kept_fps)
        kept: list[np.ndarray] = []
        preprocessors: dict = {}
        async for message in ws:
            if isinstance(message, str):
                break
            timestamp_us, index, payload = unpack_header(message)
            for _ in resampler.push(timestamp_us, payload):
                image = decode_image(payload, hello.encoding, sizes)
                pre = preprocessors.setdefault(image.shape, DepthPreprocessor(spec, *image.shape))
                kept.append(pre(image))
                n = len(kept)
                if n < spec.clip_len or (n - spec.clip_len) % spec.clip_step:
                    continue
                c = (n - spec.clip_len) // spec.clip_step
                first = max(0, c - spec.window + 1)
                window = np.stack([
                    np.stack(kept[k * spec.clip_step : k * spec.clip_step + spec.clip_len])
                    for k in range(first, c + 1)
                ])  # fmt: skip
                with torch.inference_mode():  # the whole window, every clip, in the event loop
                    logits, _ = detector(torch.from_numpy(window)[None])
                    probs = logits[0, -1].softmax(-1).numpy()
                await ws.send(json.dumps({
                    "type": "scores", "clip": c, "frame_index": index,
                    "activity": float(1 - probs[0]),
                }))  # fmt: skip

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, max_size=None, compression=None):
            await asyncio.Future()

    asyncio.run(main())


# --- the load --------------------------------------------------------------------------


@dataclass
class Step:
    server: str
    mode: str
    streams: int
    latencies: list[float] = field(default_factory=list)
    clips_expected: int = 0
    dropped: int = 0
    late_frames: int = 0  # frames the clients sent more than half a period late
    frames: int = 0
    errors: list[str] = field(default_factory=list)
    server_cpu: float = 0.0  # cores used by the server process during the step
    client_cpu: float = 0.0
    other_cpu: float = 0.0  # cores other processes of the machine used meanwhile
    model_share: float | None = None  # of the server's CPU time, in model runs
    server_p99: float | None = None  # bound from gd-serve's own latency histogram
    server_clips: int = 0  # clips gd-serve scored during the step
    wall: float = 0.0  # seconds the step took

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("inf")

    @property
    def ok(self) -> bool:
        lost = self.clips_expected - len(self.latencies)
        return (
            not self.errors
            and self.p(99) < TARGET_P99_S
            and self.dropped == 0
            and self.late_frames <= 0.01 * max(self.frames, 1)
            and lost <= 0.02 * max(self.clips_expected, 1)
        )


def make_frames(spec: ClipSpec, mode: str) -> tuple[list[bytes], float, int, int]:
    """A few distinct frames (payloads only) and the rate and size they are sent at."""
    h, w, fps = RAW
    rng = np.random.default_rng(0)
    frames = (3000 + rng.integers(-30, 30, (8, h, w))).astype(np.uint16)
    frames[:, 100:300, 200:350] = 1200
    if mode == "reduced":
        frames = DepthPreprocessor(spec, h, w).to_millimetres(frames)
        fps = spec.kept_fps
    payloads = [f.astype("<u2").tobytes() for f in frames]
    return payloads, fps, frames.shape[1], frames.shape[2]


async def one_stream(url, payloads, fps, size, start_delay, duration, measure_from, step) -> None:
    from websockets.asyncio.client import connect

    await asyncio.sleep(start_delay)
    loop = asyncio.get_running_loop()
    n_frames = int(duration * fps)
    sent_at = np.zeros(n_frames)
    h, w = size
    hello = {"type": "hello", "protocol": 1, "camera_id": f"bench-{start_delay:.3f}", "width": w,
             "height": h, "fps": fps, "depth_units": 0.001, "encoding": "raw"}  # fmt: skip
    try:
        async with connect(url, max_size=None, compression=None, open_timeout=30) as ws:
            await ws.send(json.dumps(hello))
            ready = json.loads(await ws.recv())
            spec = ClipSpec.from_dict(ready["clip"])

            async def read() -> None:
                async for text in ws:
                    event = json.loads(text)
                    if event["type"] == "scores":
                        i = event["frame_index"]
                        if sent_at[i] >= measure_from:
                            step.latencies.append(time.perf_counter() - sent_at[i])
                    elif event["type"] == "warning":
                        step.dropped += event.get("dropped", 0)
                    elif event["type"] == "error":
                        step.errors.append(event["message"])

            reader = asyncio.create_task(read())
            t0 = loop.time()
            for i in range(n_frames):
                delay = t0 + i / fps - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.5 / fps:
                    step.late_frames += 1
                sent_at[i] = time.perf_counter()
                await ws.send(pack_header(1_000_000 + round(i * 1e6 / fps), i) + payloads[i % 8])
            step.frames += n_frames
            # clips whose completing frame (the one at their last kept tick) was measured
            c = np.arange(n_frames)
            last_tick = c * spec.clip_step + spec.clip_len - 1
            completing = np.round(last_tick * fps / spec.kept_fps).astype(int)
            done = completing[completing < n_frames]
            step.clips_expected += int((sent_at[done] >= measure_from).sum())
            await asyncio.sleep(0.5)  # the last clip's scores
            reader.cancel()
    except Exception as e:  # a refused or broken stream is a result, not a crash
        step.errors.append(repr(e))


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(url: str) -> dict[str, float]:
    """gd-serve's Prometheus samples (empty for the naive server)."""
    import httpx

    try:
        text = httpx.get(url.replace("ws://", "http://").split("/v1/")[0] + "/metrics").text
    except httpx.HTTPError:
        return {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gd_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = samples.get(name, 0.0) + float(value)
    return samples


def model_seconds(samples: dict[str, float]) -> float:
    """Seconds the model thread spent in runs, both encoders."""
    return sum(v for k, v in samples.items() if k.startswith("gd_batch_seconds_sum"))


def server_p99(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Upper bound of the server-side p99 clip latency (last frame in -> scores out), from the
    histogram buckets' growth during the step."""
    prefix = "gd_clip_latency_seconds_bucket{le="
    buckets = sorted(
        (float(k[len(prefix) + 1 : -2]), after[k] - before.get(k, 0.0))
        for k in after
        if k.startswith(prefix) and "Inf" not in k
    )
    total = after.get("gd_clip_latency_seconds_count", 0) - before.get(
        "gd_clip_latency_seconds_count", 0
    )
    if not total:
        return None
    return next((le for le, n in buckets if n >= 0.99 * total), float("inf"))


async def run_step(
    server: Server, mode: str, n: int, spec: ClipSpec, seconds: float, warmup: float = 3.0
) -> Step:
    step = Step(server.kind, mode, n)
    payloads, fps, h, w = make_frames(spec, mode)
    period = spec.clip_step / spec.kept_fps  # one clip: stagger the starts over it
    measure_from = time.perf_counter() + warmup + period
    cpu0, own0, busy0 = cpu_seconds(server.proc.pid), time.process_time(), machine_busy_seconds()
    metrics0, t0 = scrape(server.url), time.perf_counter()
    duration = warmup + seconds
    await asyncio.gather(*(
        one_stream(server.url, payloads, fps, (h, w), period * i / n, duration, measure_from, step)
        for i in range(n)
    ))  # fmt: skip
    wall = time.perf_counter() - t0
    step.server_cpu = (cpu_seconds(server.proc.pid) - cpu0) / wall
    step.client_cpu = (time.process_time() - own0) / wall
    step.other_cpu = (machine_busy_seconds() - busy0) / wall - step.server_cpu - step.client_cpu
    metrics1 = scrape(server.url)
    if metrics1 and step.server_cpu > 0:
        model = model_seconds(metrics1) - model_seconds(metrics0)
        step.model_share = model / (step.server_cpu * wall)
        step.server_p99 = server_p99(metrics0, metrics1)
        clips = "gd_clip_latency_seconds_count"
        step.server_clips = round(metrics1.get(clips, 0) - metrics0.get(clips, 0))
    step.wall = wall
    return step


# --- where the time goes -------------------------------------------------------------------


def unit_costs(bundle: ModelBundle) -> None:
    """CPU milliseconds of the server's per-clip and per-frame work, measured in this process
    with gd-serve's engine (one thread) and decoding."""
    from core.wire import decode_image, pack_frame, unpack_header
    from server.engine import load_engine

    engine, spec = load_engine(bundle, "cpu", threads=1), bundle.clip

    def ms(fn, n: int) -> float:
        fn()
        start = time.process_time()
        for _ in range(n):
            fn()
        return 1000 * (time.process_time() - start) / n

    rng = np.random.default_rng(0)
    parts = []
    for b in (1, 8, 32):
        clips = rng.random((b, spec.clip_len, spec.height, spec.width), np.float32)
        parts.append(f"b{b} {ms(lambda c=clips: engine.encode_clips(c), max(3, 64 // b)) / b:.2f}")
    window = rng.random((8, spec.window, bundle.feature_dim), np.float32)
    seq = ms(lambda: engine.score_windows(window), 20) / 8
    print(f"visual encoder ms/clip: {', '.join(parts)}; sequence encoder {seq:.2f} ms/window")
    h, w, _ = RAW
    vga = (3000 + rng.integers(-30, 30, (h, w))).astype(np.uint16)
    vga[100:300, 200:350] = 1200
    small = DepthPreprocessor(spec, h, w).to_millimetres(vga)
    parts = []
    for name, image, enc in (("VGA raw", vga, "raw"), ("VGA zstd", vga, "zstd"),
                             ("VGA png", vga, "png"), ("112 raw", small, "raw")):  # fmt: skip
        payload = unpack_header(pack_frame(0, 0, image, enc))[2]
        pre = DepthPreprocessor(spec, *image.shape)
        cost = ms(lambda p=payload, e=enc, s=image.shape, f=pre: f(decode_image(p, e, [s])), 50)
        parts.append(f"{name} {1000 * cost:.0f}")
    print(f"decode + preprocess of a kept frame, us: {', '.join(parts)}")


# --- servers -----------------------------------------------------------------------------


@dataclass
class Server:
    kind: str
    proc: subprocess.Popen
    url: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    kind: str, bundle: Path, threads: int = 0, env_extra: dict[str, str] | None = None
) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GD_MAX_STREAMS": "512",
        "GD_LOG_LEVEL": "warning",
        **(env_extra or {}),
    }
    if kind == "gd-serve":
        cmd = [sys.executable, "-m", "server.cli", "--model", str(bundle), "--port", str(port),
               "--no-auth", "--threads", str(threads)]  # fmt: skip
    else:
        cmd = [sys.executable, __file__, "--naive-server", str(bundle), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wait_listening(proc, port, kind)
    return Server(kind, proc, f"ws://127.0.0.1:{port}/v1/stream")


def wait_listening(proc: subprocess.Popen, port: int, what: str) -> None:
    """Until `proc` listens on `port`; one that has not after START_S is killed."""
    deadline = time.monotonic() + START_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"{what} did not start within {START_S:g} s") from None
            time.sleep(0.05)  # a refused local connect costs microseconds: start without delay


def stop(server: Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


# --- the event path's cost (event store + alert rules + a webhook receiver, on against off) --

EVENT_GRID = list(range(8, 257, 8))  # stream counts the bisection chooses from
SECRET_ENV = "GD_BENCH_WEBHOOK_SECRET"


def webhook_receiver(port: int) -> None:
    """A webhook endpoint (its own process): verifies each delivery's signature and answers
    204; `GET /count` says how many came, valid and not."""
    from datetime import UTC, datetime

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from server.events.webhooks import WebhookVerificationError, verify

    secret = os.environ[SECRET_ENV]
    counts = {"valid": 0, "invalid": 0}

    async def hook(request: Request) -> Response:
        try:
            verify(await request.body(), request.headers, [secret], datetime.now(UTC))
            counts["valid"] += 1
        except WebhookVerificationError:
            counts["invalid"] += 1
        except ClientDisconnect:  # a server stopping mid-delivery: it sends again later
            pass
        return Response(status_code=204)

    async def count(request: Request) -> JSONResponse:
        return JSONResponse(counts)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"]), Route("/count", count)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


@dataclass
class Receiver:
    proc: subprocess.Popen
    url: str
    secret: str

    def counts(self) -> dict[str, int]:
        import httpx

        return httpx.get(self.url.replace("/hook", "/count")).json()


def start_receiver() -> Receiver:
    from server.events.webhooks import new_secret

    port, secret = free_port(), new_secret()
    cmd = [sys.executable, __file__, "--webhook-receiver", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), SECRET_ENV: secret}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wait_listening(proc, port, "the webhook receiver")
    return Receiver(proc, f"http://127.0.0.1:{port}/hook", secret)


def write_rules(path: Path, bundle: ModelBundle, receiver: Receiver) -> Path:
    """Alert rules that alert the receiver on every action of the model, whatever its
    confidence: the most alerts the event path can owe."""
    import yaml

    rules = {
        "destinations": {"bench": {"url": receiver.url, "secrets": [receiver.secret]}},
        "rules": [
            {
                "name": "every action",
                "labels": list(bundle.classes[1:]),
                "min_confidence": 0.0,
                "destinations": ["bench"],
            }
        ],
    }
    path.write_text(yaml.safe_dump(rules))
    return path


def store_counts(db: Path) -> tuple[int, dict[str, int]]:
    """Events, and deliveries by state, in an arm's SQLite store (after its server stopped)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        rows = conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall()
    return events, dict(rows)


def store_costs(
    tmp: Path, rules: Path, bundle: ModelBundle, calls: int = 20, cameras: int = 64
) -> None:
    """CPU milliseconds of the store calls the event path makes (SQLite, in this process),
    with the alert rules and without: what a stream costs the store's thread (an open event's
    running confidence, written in a flush's one transaction at most every few seconds,
    after its alert; its camera's state, each second; an event started and ended, with its
    alerts) and what the deliverer's poll costs (once a second, whatever the streams)."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from server.events.rules import AlertRules
    from server.events.store import CameraRecord, EventStore, database_url
    from server.events.types import EventRecord

    def ms(call, n: int) -> float:
        start = time.process_time()
        for k in range(n):
            call(k)
        return 1000 * (time.process_time() - start) / n

    def measure(policy: AlertRules | None) -> str:
        store = EventStore.open(database_url(str(tmp / f"costs-{policy is None}.db")), policy)
        now = datetime.now(UTC)
        ids = []
        for i in range(cameras):
            record = EventRecord(str(uuid.uuid4()), f"cam-{i}", bundle.classes[1], 1, 0.5, now,
                                 None, "bench", "0")  # fmt: skip
            store.add_event(record, now)
            ids.append(record.id)
        states = [CameraRecord(f"cam-{i}", now, now, True, 10.0, 0, 0) for i in range(cameras)]
        later, long_ago = now + timedelta(seconds=1), now - timedelta(days=1)
        flush = ms(
            lambda k: store.update_confidences(dict.fromkeys(ids, 0.5 + k / 1e6), later), calls
        )
        update = flush / cameras
        save = ms(lambda k: store.save_cameras(states), calls) / cameras
        due = ms(lambda k: store.due(["bench"], long_ago, 100), 5 * calls)
        fresh = [replace(record, id=str(uuid.uuid4()), start=later) for _ in range(calls)]

        def start_end(k: int) -> None:
            store.add_event(fresh[k], later)
            store.update_event(fresh[k].id, later, end=later, confidence=0.5)

        event = ms(start_end, calls)
        store.close()
        return (f"running confidence (in a flush of {cameras}) {update:.3f}, a camera's state "
                f"{save:.3f}, the deliverer's poll (nothing due) {due:.2f}, an event started "
                f"and ended {event:.2f}")  # fmt: skip

    rules_on = AlertRules.load(rules, bundle.classes[1:])
    print(f"store CPU ms, with the alert rules: {measure(rules_on)}", flush=True)
    print(f"store CPU ms, without them:        {measure(None)}", flush=True)


def bisect_streams(
    server: Server, mode: str, grid: list[int], spec: ClipSpec, seconds: float, warmup: float
) -> int:
    """The most streams of `grid` the server sustains, by bisection (passing is taken to be
    monotonic in N); 0 when even the first fails."""
    passed, failed = -1, len(grid)  # indexes: grid[passed] passed, grid[failed] failed
    while failed - passed > 1:
        mid = (passed + failed) // 2
        step = asyncio.run(run_step(server, mode, grid[mid], spec, seconds, warmup))
        report(step)
        passed, failed = (mid, failed) if step.ok else (passed, mid)
    return grid[passed] if passed >= 0 else 0


@dataclass
class Arm:
    events: bool  # the event path on
    streams: int = 0  # the most sustained
    cpu_per_clip: float = 0.0  # server CPU seconds per clip scored, at the fixed count


def event_path(
    bundle: ModelBundle,
    tmp: Path,
    rounds: int,
    mode: str,
    cost_streams: int,
    grid: list[int],
    seconds: float,
    threads: int,
    warmup: float,
    store_calls: int,
) -> list[Arm]:
    """Off and on, alternating (off/on, then on/off, ...: a drift in the machine's load
    weighs on both alike); every arm on a fresh server. A grid of the fixed count alone
    is not bisected: the fixed step says whether it is sustained."""
    receiver = start_receiver()
    rules = write_rules(tmp / "alerts.yaml", bundle, receiver)
    store_costs(tmp, rules, bundle, store_calls)
    arms: list[Arm] = []
    try:
        for r in range(rounds):
            for on in (False, True) if r % 2 == 0 else (True, False):
                db = tmp / f"events-{r}.db"
                env = {"GD_EVENTS_DB": str(db), "GD_ALERT_RULES": str(rules)} if on else {}
                server = start("gd-serve", bundle.root, threads, env or {"GD_EVENTS_DB": "off"})
                server = replace(server, kind="events-on" if on else "events-off")
                arm = Arm(on)
                try:
                    step = asyncio.run(
                        run_step(server, mode, cost_streams, bundle.clip, seconds, warmup)
                    )
                    report(step)
                    arm.cpu_per_clip = step.server_cpu * step.wall / max(step.server_clips, 1)
                    if grid == [cost_streams]:
                        arm.streams = cost_streams if step.ok else 0
                    else:
                        arm.streams = bisect_streams(
                            server, mode, grid, bundle.clip, seconds, warmup
                        )
                finally:
                    stop(server)
                arms.append(arm)
                if on:
                    events, deliveries = store_counts(db)
                    print(f"  round {r}: {events} events stored; deliveries by state "
                          f"{json.dumps(deliveries)}; the receiver got, so far, "
                          f"{json.dumps(receiver.counts())}", flush=True)  # fmt: skip
    finally:
        stop(Server("receiver", receiver.proc, receiver.url))
    return arms


def summarize(arms: list[Arm]) -> str:
    """Each arm's figures and the ratios on/off: of sustained streams (sums over the rounds)
    and of the server's CPU per clip scored at the fixed count (means)."""
    off = [a for a in arms if not a.events]
    on = [a for a in arms if a.events]
    streams_off, streams_on = sum(a.streams for a in off), sum(a.streams for a in on)
    ratio = streams_on / streams_off if streams_off else float("nan")
    ms_off = [round(1000 * a.cpu_per_clip, 2) for a in off]
    ms_on = [round(1000 * a.cpu_per_clip, 2) for a in on]
    cost = (sum(ms_on) / len(ms_on)) / (sum(ms_off) / len(ms_off))
    return "\n".join([
        f"sustained streams, event path off: {[a.streams for a in off]}; "
        f"on: {[a.streams for a in on]}",
        f"on/off: {ratio:.3f} ({_change(ratio)}; target: at most 10 % fewer)",
        f"server CPU per clip scored at the fixed count, ms: off {ms_off}, on {ms_on}; "
        f"means on/off {cost:.3f}",
    ])  # fmt: skip


def _change(ratio: float) -> str:
    """'8.3 % fewer streams' or '8.3 % more streams' (the arms' noise can favour either)."""
    return f"{100 * abs(1 - ratio):.1f} % {'fewer' if ratio < 1 else 'more'} streams"


# --- main ----------------------------------------------------------------------------------


def report(step: Step) -> None:
    share = "" if step.model_share is None else f"{100 * step.model_share:5.1f}%"
    srv = "" if step.server_p99 is None else f"<={1000 * step.server_p99:.0f}"
    lost = step.clips_expected - len(step.latencies)
    print(
        f"{step.server:10s} {step.mode:8s} {step.streams:4d} | {1000 * step.p(50):7.1f} "
        f"{1000 * step.p(99):7.1f} {srv:>6s} | {len(step.latencies):6d} {lost:5d} "
        f"{step.dropped:6d} {step.late_frames:6d} | {step.server_cpu:5.2f} {share:>6s} "
        f"{step.client_cpu:5.2f} {step.other_cpu:5.2f} | "
        f"{'ok' if step.ok else 'FAIL'} {step.errors[0][:60] if step.errors else ''}",
        flush=True,
    )


def sweep(
    server: Server, mode: str, counts: list[int], spec: ClipSpec, seconds: float, warmup: float
) -> int:
    best = 0
    for n in counts:
        step = asyncio.run(run_step(server, mode, n, spec, seconds, warmup))
        report(step)
        if not step.ok:
            break
        best = n
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per step")
    p.add_argument(
        "--warmup", type=float, default=3.0, help="seconds streamed before each step measures"
    )
    p.add_argument("--quick", action="store_true", help="fewer, shorter steps")
    p.add_argument("--servers", nargs="*", default=["gd-serve", "naive"])
    p.add_argument("--modes", nargs="+", default=["reduced", "raw"])
    p.add_argument("--counts", type=int, nargs="+", help="stream counts to try (all modes)")
    p.add_argument(
        "--threads", type=int, default=0, help="gd-serve inference threads (0: its default)"
    )
    p.add_argument(
        "--event-path",
        action="store_true",
        help="gd-serve with the event store, alert rules and a webhook receiver, against "
        "without, alternating (--modes: its first; --counts: the grid it bisects)",
    )
    p.add_argument("--rounds", type=int, default=2, help="--event-path: off/on pairs")
    p.add_argument(
        "--cost-streams",
        type=int,
        default=32,
        help="--event-path: the stream count at which each arm's server CPU is measured",
    )
    p.add_argument(
        "--store-calls",
        type=int,
        default=20,
        help="--event-path: store calls timed per figure of the store's costs (polls: 5x)",
    )
    p.add_argument(
        "--model", type=Path, help="a model bundle for gd-serve instead of the random network"
    )
    p.add_argument("--naive-server", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--webhook-receiver", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.naive_server:
        naive_server(args.naive_server, args.port)
        return 0
    if args.webhook_receiver:
        webhook_receiver(args.port)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is not None:
            bundle = load_bundle(args.model)
            about = f"{bundle.name} {bundle.version}"
        else:
            bundle = build_bundle(Path(tmp) / "bundle")
            about = "random ResNet-18 w32"
        spec = bundle.clip
        seconds = 4.0 if args.quick else args.seconds
        print(f"model: {about} {spec.height}x{spec.width}, T_c={spec.clip_len}, "
              f"T_w={spec.window}; {os.cpu_count()} CPUs; {seconds:g} s per step; "
              f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
        unit_costs(bundle)
        print("server     mode     N    |  p50 ms  p99 ms srv99 |  clips  lost  drops   late | "
              "srvCPU model% cliCPU other")  # fmt: skip
        if args.event_path:
            grid = args.counts or EVENT_GRID
            arms = event_path(bundle, Path(tmp), args.rounds, args.modes[0], args.cost_streams,
                              grid, seconds, args.threads, args.warmup,
                              args.store_calls)  # fmt: skip
            print()
            print(summarize(arms))
            print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            return 0
        plans = {
            ("gd-serve", "reduced"): [16, 32, 64, 96, 128, 160, 192],
            ("gd-serve", "raw"): [8, 16, 24, 32, 40, 48, 64],
            ("naive", "reduced"): [4, 8, 12, 16, 24, 32, 48],
            ("naive", "raw"): [4, 8, 12, 16, 24, 32],
        }
        if args.quick:
            plans = {k: v[:3] for k, v in plans.items()}
        if args.counts:
            plans = {k: args.counts for k in plans}
        best = {}
        for kind in args.servers:
            server = start(kind, bundle.root, args.threads)
            try:
                for mode in args.modes:
                    best[kind, mode] = sweep(
                        server, mode, plans[kind, mode], spec, seconds, args.warmup
                    )
            finally:
                stop(server)
        print()
        for (kind, mode), n in best.items():
            print(f"{kind:10s} {mode:8s}: {n:4d} streams at p99 < 100 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
