"""Live accuracy: how well a model bundle detects actions streamed at real time, against the
same videos uploaded whole, on held-out PKU-MMD-layout data.

    .venv/bin/python bench/live_accuracy.py                         # models/default, 24 videos
    .venv/bin/python bench/live_accuracy.py --size 120x160          # camera-shaped (4:3) frames
    .venv/bin/python bench/live_accuracy.py --seeds 1000 1001 1002  # mean ± std over 3 data sets
    .venv/bin/python bench/live_accuracy.py --data DIR --all-videos # your own PKU-layout folder

What it does, for each seed (one held-out data set each):

1. Generates `--videos` PKU-MMD-layout videos with `gd-synth detection` (depth only; reused
   from `--out`/data when already there), or takes `--data DIR`. The videos scored are the
   test split (line 4 of `split/cross-subject.txt`), or all of them with `--all-videos`.
2. Starts a real `gd-serve` subprocess on a free loopback port with a temporary token file
   and `--max-streams` raised to the number of videos, and waits for `/readyz`. For a
   person-crop model it then stores each scored video's empty-room reference
   (`<data>/reference/<video>.png`, written by gd-synth) for the video's camera id
   (`<data folder>_<video>`) through `Client.put_reference`, as a site does once per camera
   with `gd-stream reference`; `--no-references` deletes them instead, to measure the model
   where no reference was captured yet (whole frames).
3. Streams every test video at once over `WS /v1/stream`, each at real-time pace: frame i is
   sent at `t0 + timestamp_i` (the streams' t0 spread over one clip period: cameras are not
   synchronized). With `--reduce` (the default, as `gd-stream` does) the frames are reduced
   to the model's rate and size once, up front, with `core.clip`; `--no-reduce` sends every
   frame at camera size. Every event is kept with its arrival time.
4. Uploads every test video (`POST /v1/detections`, a zip of its PNGs), one at a time.
5. Writes both answers as PKU-MMD prediction files (`label,start,end,confidence`, frames at
   the source fps, one file per video) and scores them against the ground truth with
   `core.metrics.evaluate_detection`, the code of `gd-eval`.

Live predictions are the `action` `end` events: their span comes from the event's
`start_timestamp_us` / `end_timestamp_us` (end exclusive) on the stream's clock, whose origin is
the video's first frame, converted to frames at the video's fps.

Event latency. For each ground-truth action (label l, frames s..e of its video), a live `action`
`start` event *matches* it when (a) the class announced in the start event is l, and (b) the
segment that start event opened (frames from its start to the end of the `end` event that
closed it; to the end of the video if none did) shares at least one frame with s..e. The
action's latency is the arrival time of the earliest matching start event minus the time its
start frame s was due to be sent (`t0 + timestamp_s`; with `--reduce` frame s itself may not
be sent, the kept frame nearest it is). It is negative when a segment of the right class was
already open before the action began. Actions without a matching start event count as missed.
Median and p90 are over matched actions.

Output: a table on stdout, and under `--out` (default runs/live_accuracy): `summary.json`
(every figure, per seed and as mean ± std; `references`: whether the server had the cameras'
references, i.e. a person-crop model without `--no-references`), `seed-N/live/` and
`seed-N/upload/` (the prediction files), `seed-N/ground_truth/` (the scored videos' labels),
`server.log`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.streams import free_port, stop  # noqa: E402
from clients.api import ActionEnd, ActionStart, Client, End, ServerWarning, parse_event  # noqa: E402
from clients.sources import open_file  # noqa: E402
from core.bundle import load_bundle  # noqa: E402
from core.clip import ClipSpec, DepthPreprocessor, frame_timestamps_us, parse_size, resample_indices  # noqa: E402
from core.depthfiles import DepthFileError, decode_png_depth  # noqa: E402
from core.labels import read_label_dir, read_label_file, write_label_file  # noqa: E402
from core.metrics import DEFAULT_TIOUS, evaluate_detection  # noqa: E402
from core.wire import ENCODINGS, Hello, pack_frame, parse_json, parse_ready  # noqa: E402

SPLIT_FILE = Path("split") / "cross-subject.txt"
TEST_LINE = 3  # 0-based: line 4 of a PKU-MMD split file lists the test videos
READY_TIMEOUT_S = 120.0
LATE_S = 0.5 / 30  # a send this late (half a 30 fps frame) counts as late
DEFAULT_SIZE = (64, 64)  # the default model's training frames
GENERATION_ONLY = ("videos", "seeds", "difficulty", "size", "actions", "camera", "synth_arg")


# --- data ----------------------------------------------------------------------------------


@dataclass
class Video:
    name: str
    depth_dir: Path  # the PNG frames (what the upload sends)
    gt: np.ndarray  # label rows [N, 4]
    timestamps_us: np.ndarray  # of every source frame, from 0
    frames: np.ndarray  # what the stream sends: [n, H, W] uint16 mm
    sent_index: np.ndarray  # source frame index of each of `frames`


def scored_videos(root: Path, all_videos: bool) -> list[str]:
    """The videos to score: line 4 of split/cross-subject.txt, or every label file."""
    if all_videos:
        names = sorted(p.stem for p in (root / "label").glob("*.txt"))
        if not names:
            raise SystemExit(f"live_accuracy: no label files in {root / 'label'}")
        return names
    path = root / SPLIT_FILE
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise SystemExit(f"live_accuracy: {e}; give --all-videos to score every video") from e
    if len(lines) <= TEST_LINE:
        raise SystemExit(f"live_accuracy: {path} has no line {TEST_LINE + 1} (the test videos)")
    names = [n.strip() for n in lines[TEST_LINE].split(",") if n.strip()]
    if not names:
        raise SystemExit(f"live_accuracy: {path} lists no test videos")
    return names


def load_video(root: Path, name: str, fps: float, spec: ClipSpec | None) -> Video:
    """A video's labels and frames; with a `spec`, only the frames the model keeps, reduced to
    its size up front (vectorized, the same `core.clip` functions as `gd-stream`)."""
    depth_dir = root / "depth" / name
    source = open_file(depth_dir, fps)  # the clients' own PNG-folder reader
    frames = np.stack([image for _, image in source.frames])
    ts = frame_timestamps_us(len(frames), fps)
    index = np.arange(len(frames))
    if spec is not None:
        index = resample_indices(ts, spec.kept_fps)  # what the server's resampler keeps
        if spec.person_crop:  # the server crops each clip at camera size: resample only
            frames = frames[index]
        else:
            frames = DepthPreprocessor(spec, *frames.shape[1:]).to_millimetres(frames[index])
    gt = read_label_file(root / "label" / f"{name}.txt")
    return Video(name, depth_dir, gt, ts, np.ascontiguousarray(frames), index)


def camera_id(video: Video) -> str:
    """Unique over seeds (their video names repeat): `<data folder>_<video>`."""
    return f"{video.depth_dir.parent.parent.name}_{video.name}"


def read_references(root: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Each video's empty-room reference, `<root>/reference/<video>.png` (gd-synth's)."""
    references = {}
    for name in names:
        path = root / "reference" / f"{name}.png"
        try:
            references[name] = decode_png_depth(path.read_bytes())
        except (OSError, DepthFileError) as e:
            raise SystemExit(
                f"live_accuracy: {path}: {e}; a person-crop model needs each video's empty-room "
                "reference (gd-synth writes them; regenerate the data), or give --no-references"
            ) from e
    return references


def set_references(client: Client, videos: list[Video], references: dict[str, np.ndarray] | None):
    """Store each video's reference for its camera id, or without `references` delete it (the
    server's event store outlives a run)."""
    for v in videos:
        if references is None:
            client.delete_reference(camera_id(v))
        else:
            client.put_reference(camera_id(v), references[v.name])


def synth_offers(option: str) -> bool:
    """Whether this checkout's `gd-synth detection` has `option` (asked at run time)."""
    help_text = subprocess.run(
        [sys.executable, "-m", "synth.cli", "detection", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return option in help_text


def generate(args: argparse.Namespace, seed: int) -> Path:
    """gd-synth detection data for `seed` under OUT/data, reused when already complete."""
    options = ["--videos", str(args.videos), "--difficulty", str(args.difficulty),
               "--actions", *map(str, args.actions)]  # fmt: skip
    if args.camera:  # the camera gives the size, unless --size says which (same aspect)
        options += ["--camera", args.camera]
    if args.size or not args.camera:
        h, w = args.size or DEFAULT_SIZE
        options += ["--size", f"{h}x{w}"]
    options += args.synth_arg
    tag = "_".join([f"seed{seed}", *(o.lstrip("-") for o in options)]).replace("/", "-")
    root = args.out / "data" / tag
    if (root / "gd-synth.json").exists():
        return root
    cmd = [sys.executable, "-m", "synth.cli", "detection", "--out", str(root), "--seed",
           str(seed), "--modalities", "depth", *options]  # fmt: skip
    print(f"generating: gd-synth {' '.join(cmd[3:])}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return root


# --- the server ------------------------------------------------------------------------------


def score_delay_route() -> str | None:
    """How this checkout's server takes a scoring delay: `env` (a `score_delay` setting, so
    `GD_SCORE_DELAY`), `hello` (a hello field), or None."""
    from server.settings import Settings

    if "score_delay" in {f.name for f in dataclasses.fields(Settings)}:
        return "env"
    if "score_delay" in {f.name for f in dataclasses.fields(Hello)}:
        return "hello"
    return None


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    token: str


def start_server(args: argparse.Namespace, max_streams: int, token_file: Path) -> Server:
    """`gd-serve` (its module, with this interpreter) on a free loopback port, once ready."""
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GD_LOG_LEVEL": "warning"}
    env["GD_DATA_DIR"] = str(Path(args.out).resolve() / "server-data")  # its own event store
    if args.score_delay is not None and score_delay_route() == "env":
        env["GD_SCORE_DELAY"] = str(args.score_delay)
    cmd = [
        sys.executable,
        "-m",
        "server.cli",
        "--model",
        str(args.model),
        "--port",
        str(port),
        "--tokens-file",
        str(token_file),
        "--max-streams",
        str(max_streams),
    ]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    log = (args.out / "server.log").open("ab")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    # One client for every poll: each new one loads the CA certificates (~0.1 CPU-s), so a
    # poll costs little and can be frequent, noticing readiness sooner.
    with httpx.Client(timeout=2) as http:
        while True:
            if proc.poll() is not None:
                raise SystemExit(
                    f"live_accuracy: gd-serve exited with {proc.returncode}; "
                    f"see {args.out}/server.log"
                )
            try:
                if http.get(f"{url}/readyz").status_code == 200:
                    return Server(proc, url, token_file.read_text().strip())
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                stop(Server(proc, url, ""))
                raise SystemExit(f"live_accuracy: gd-serve not ready in {READY_TIMEOUT_S:g} s")
            time.sleep(0.05)


# --- streaming -------------------------------------------------------------------------------


@dataclass
class StreamRun:
    """One video's live stream: what was sent when, and every event with its arrival time."""

    video: str
    t0: float = 0.0  # event-loop time at which timestamp 0 was due
    events: list[tuple[float, Any]] = field(default_factory=list)
    ready: dict[str, Any] = field(default_factory=dict)
    frames_sent: int = 0
    late_sends: int = 0  # frames sent more than LATE_S after they were due
    max_late_s: float = 0.0
    warnings: int = 0
    error: str | None = None

    @property
    def end(self) -> End | None:
        return next((e for _, e in self.events if isinstance(e, End)), None)

    def due(self, timestamp_us: float) -> float:
        """Event-loop time at which the frame with `timestamp_us` was due."""
        return self.t0 + timestamp_us / 1e6


async def stream_video(video: Video, args, server: Server, start: float, run: StreamRun, bar):
    """Send `video` at real time from loop time `start`; collect events until the server
    closes. Failures are recorded in `run.error`, never raised: the other streams go on."""
    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    height, width = video.frames.shape[1:]
    hello = {
        "camera_id": camera_id(video),
        "width": width,
        "height": height,
        "fps": args.fps,
        "encoding": args.encoding,
    }
    if args.score_delay is not None and score_delay_route() == "hello":
        hello["score_delay"] = args.score_delay
    headers = {"Authorization": f"Bearer {server.token}"}
    ws_url = server.url.replace("http://", "ws://") + "/v1/stream"
    await asyncio.sleep(max(0.0, start - loop.time()))
    try:
        async with connect(
            ws_url, additional_headers=headers, max_size=1 << 20, compression=None, open_timeout=30
        ) as ws:
            await ws.send(json.dumps(Hello(**hello).to_message()))
            first = parse_json(await ws.recv())
            if first["type"] != "ready":
                raise RuntimeError(f"no ready: {first}")
            parse_ready(first)  # validates it
            run.ready = first

            async def receive() -> None:
                async for text in ws:
                    message = parse_json(text)
                    if message["type"] == "error":
                        run.error = f"{message.get('code')}: {message.get('message')}"
                        continue
                    event = parse_event(message)
                    run.events.append((loop.time(), event))
                    run.warnings += isinstance(event, ServerWarning)

            receiver = asyncio.create_task(receive())
            try:
                await send_frames(ws, video, args.encoding, run, bar)
                await ws.send(json.dumps({"type": "end"}))
                await receiver
            finally:
                receiver.cancel()
            if run.end is None and run.error is None:
                run.error = f"closed ({ws.close_code}) before the end event"
    except Exception as e:  # a refused or broken stream is a result, not a crash
        run.error = run.error or repr(e)


async def send_frames(ws, video: Video, encoding: str, run: StreamRun, bar) -> None:
    """Each frame at `run.t0` + its timestamp; counts the late ones."""
    loop = asyncio.get_running_loop()
    run.t0 = loop.time()
    ts = video.timestamps_us[video.sent_index]
    for i, image in enumerate(video.frames):
        due = run.due(ts[i])
        if (wait := due - loop.time()) > 0:
            await asyncio.sleep(wait)
        late = loop.time() - due
        run.late_sends += late > LATE_S
        run.max_late_s = max(run.max_late_s, late)
        await ws.send(pack_frame(int(ts[i]), int(video.sent_index[i]), image, encoding))
        run.frames_sent += 1
        bar.update(1)


async def stream_all(videos: list[Video], args, server: Server, spread_s: float) -> list[StreamRun]:
    from tqdm import tqdm

    runs = [StreamRun(v.name) for v in videos]
    total = sum(len(v.frames) for v in videos)
    start = asyncio.get_running_loop().time() + 0.5
    with tqdm(total=total, desc="streaming", unit="frame", mininterval=1.0) as bar:
        await asyncio.gather(
            *(
                stream_video(v, args, server, start + spread_s * k / len(videos), run, bar)
                for k, (v, run) in enumerate(zip(videos, runs, strict=True))
            )
        )
    return runs


# --- events -> predictions and latency -------------------------------------------------------


@dataclass(frozen=True)
class LiveSegment:
    """An action the stream announced: `class_id` from its start event, the rest from its end
    event (`closed`), or, for a start never closed, to the end of the video."""

    class_id: int
    final_class_id: int
    start_frame: int
    end_frame: int  # inclusive
    confidence: float
    started_at: float  # arrival of the start event
    closed: bool


def to_frame(timestamp_us: int, fps: float) -> int:
    """The frame at `timestamp_us` on a stream whose first frame is at 0."""
    return round(timestamp_us * fps / 1e6)


def live_segments(events: list[tuple[float, Any]], fps: float, n_frames: int) -> list[LiveSegment]:
    """Pairs each `action` start with the end that follows it (a stream's segments never
    overlap: the server's segmenter closes one before it opens the next)."""
    segments, opened = [], None
    for arrived, event in events:
        if isinstance(event, ActionStart):
            opened = (arrived, event)
        elif isinstance(event, ActionEnd):
            started_at, start = opened if opened is not None else (arrived, None)
            segments.append(
                LiveSegment(
                    class_id=start.class_id if start is not None else event.class_id,
                    final_class_id=event.class_id,
                    start_frame=to_frame(event.start_timestamp_us, fps),
                    end_frame=to_frame(event.end_timestamp_us, fps) - 1,  # the end is exclusive
                    confidence=event.confidence,
                    started_at=started_at,
                    closed=True,
                )
            )
            opened = None
    if opened is not None:
        arrived, start = opened
        segments.append(
            LiveSegment(
                start.class_id,
                start.class_id,
                to_frame(start.start_timestamp_us, fps),
                n_frames - 1,
                start.confidence,
                arrived,
                closed=False,
            )
        )
    return segments


def live_rows(segments: list[LiveSegment]) -> np.ndarray:
    """Prediction rows `[N, 4]` of the closed segments: what the stream finally answered."""
    rows = [
        (s.final_class_id, s.start_frame, s.end_frame, s.confidence) for s in segments if s.closed
    ]
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def upload_rows(detections) -> np.ndarray:
    rows = [(d.class_id, d.start_frame, d.end_frame, d.confidence) for d in detections]
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def start_latencies(gt: np.ndarray, segments: list[LiveSegment], due_s) -> tuple[list[float], int]:
    """Latency of each ground-truth action's first matching start event (see the module
    docstring), and how many actions had none. `due_s(frame)`: when that frame was due."""
    latencies, missed = [], 0
    for label, start, end, _ in gt.tolist():
        arrivals = [
            s.started_at
            for s in segments
            if s.class_id == label and s.start_frame <= end and s.end_frame >= start
        ]
        if arrivals:
            latencies.append(min(arrivals) - due_s(int(start)))
        else:
            missed += 1
    return latencies, missed


# --- scoring ---------------------------------------------------------------------------------


def write_predictions(folder: Path, rows: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, r in rows.items():
        write_label_file(folder / f"{name}.txt", r)


def score(gt_dir: Path, pred_dir: Path, num_classes: int, tious) -> dict[str, float]:
    """mAP (over actions) of the files in `pred_dir`, as `gd-eval --gt --pred` computes it."""
    gt = read_label_dir(gt_dir)
    pred = read_label_dir(pred_dir, need_confidence=True)
    m = evaluate_detection(gt, pred, num_classes, tious)
    return {f"{t:g}": float(v) for t, v in zip(m.tiou, m.map_action, strict=True)}


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_seed(
    args,
    server: Server,
    root: Path,
    out: Path,
    spec: ClipSpec,
    num_classes: int,
    references: dict[str, np.ndarray] | None = None,
) -> dict:
    from tqdm import tqdm

    names = scored_videos(root, args.all_videos)
    videos = [
        load_video(root, n, args.fps, spec if args.reduce else None)
        for n in tqdm(names, desc="loading", unit="video")
    ]
    client = Client(server.url, server.token)
    if spec.person_crop:  # before the streams and uploads, as a site captures them first
        set_references(client, videos, references)
    spread = spec.clip_step / spec.kept_fps  # one clip period
    runs = asyncio.run(stream_all(videos, args, server, spread))
    uploads = {}
    for v in tqdm(videos, desc="uploading", unit="video"):
        found = client.upload(v.depth_dir, fps=args.fps, camera_id=camera_id(v))
        uploads[v.name] = upload_rows(found.detections)

    gt_dir = out / "ground_truth"
    write_predictions(gt_dir, {v.name: v.gt for v in videos})
    segments = {
        v.name: live_segments(r.events, args.fps, len(v.timestamps_us))
        for v, r in zip(videos, runs, strict=True)
    }
    write_predictions(out / "live", {n: live_rows(s) for n, s in segments.items()})
    write_predictions(out / "upload", uploads)
    latencies, missed = [], 0
    for v, r in zip(videos, runs, strict=True):
        lat, miss = start_latencies(
            v.gt,
            segments[v.name],
            lambda f, v=v, r=r: r.due(v.timestamps_us[min(f, len(v.timestamps_us) - 1)]),
        )
        latencies += lat
        missed += miss
    ends = [r.end for r in runs]
    return {
        "data": str(root),
        "videos": [v.name for v in videos],
        "frames": int(sum(len(v.timestamps_us) for v in videos)),
        "upload_map": score(gt_dir, out / "upload", num_classes, args.tiou),
        "live_map": score(gt_dir, out / "live", num_classes, args.tiou),
        "frames_sent": int(sum(r.frames_sent for r in runs)),
        "frames_received": int(sum(e.frames_received for e in ends if e is not None)),
        "frames_dropped": int(sum(e.frames_dropped for e in ends if e is not None)),
        "drop_warnings": int(sum(r.warnings for r in runs)),
        "late_sends": int(sum(r.late_sends for r in runs)),
        "max_late_s": float(max((r.max_late_s for r in runs), default=0.0)),
        "stream_errors": {r.video: r.error for r in runs if r.error},
        "latency_s": {
            "median": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "matched": len(latencies),
            "missed": missed,
            "all": [round(x, 4) for x in latencies],
        },
        "ready": runs[0].ready if runs else {},
    }


# --- report ----------------------------------------------------------------------------------


def mean_std(values: list[float | None]) -> dict[str, float | None]:
    v = [x for x in values if x is not None]
    if not v:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}


def aggregate(seeds: dict[str, dict], tious) -> dict[str, Any]:
    runs = list(seeds.values())
    out: dict[str, Any] = {}
    for kind in ("upload_map", "live_map"):
        out[kind] = {f"{t:g}": mean_std([r[kind][f"{t:g}"] for r in runs]) for t in tious}
    for key in ("median", "p90"):
        out[f"latency_{key}_s"] = mean_std([r["latency_s"][key] for r in runs])
    for key in ("frames_sent", "frames_dropped", "late_sends"):
        out[key] = mean_std([r[key] for r in runs])
    out["missed"] = mean_std([r["latency_s"]["missed"] for r in runs])
    return out


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_table(summary: dict[str, Any]) -> None:
    tious = summary["config"]["tiou"]
    maps = " ".join(f"@{t:g}" for t in tious)
    print(
        f"\nmodel {summary['model']['name']} {summary['model']['version']}, "
        f"{summary['config']['mode']}; mAP over actions {maps}"
    )
    head = (
        f"{'seed':>6} {'videos':>6} | {'upload mAP':^20} | {'live mAP':^20} | "
        f"{'sent':>7} {'dropped':>7} {'late':>5} | {'lat p50':>7} {'p90':>6} "
        f"{'matched':>7} {'missed':>6}"
    )
    print(head)
    print("-" * len(head))
    for seed, r in summary["seeds"].items():
        lat = r["latency_s"]
        up = " ".join(fmt(r["upload_map"][f"{t:g}"]) for t in tious)
        live = " ".join(fmt(r["live_map"][f"{t:g}"]) for t in tious)
        print(
            f"{seed:>6} {len(r['videos']):>6} | {up:^20} | {live:^20} | "
            f"{r['frames_sent']:>7} {r['frames_dropped']:>7} {r['late_sends']:>5} | "
            f"{fmt(lat['median'], 2):>7} {fmt(lat['p90'], 2):>6} {lat['matched']:>7} "
            f"{lat['missed']:>6}"
        )
        for video, error in r["stream_errors"].items():
            print(f"       stream {video} failed: {error}")
    if len(summary["seeds"]) > 1:
        agg = summary["mean_std"]

        def ms(d: dict) -> str:
            return f"{fmt(d['mean'])}±{fmt(d['std'])}"

        print("mean ± std over seeds:")
        for kind in ("upload_map", "live_map"):
            print(f"  {kind:<11} " + "  ".join(f"@{t:g} {ms(agg[kind][f'{t:g}'])}" for t in tious))
        print(
            f"  latency     median {ms(agg['latency_median_s'])} s, "
            f"p90 {ms(agg['latency_p90_s'])} s"
        )
    print(
        f"sent / dropped: frames sent and dropped by the server; late: sent over "
        f"{1000 * LATE_S:.0f} ms after due (a busy client); lat: seconds from an action's "
        "first frame to its matching live start event; missed: actions without one"
    )
    load = summary["machine"]
    print(
        f"machine: {load['cpus']} CPUs, load average {load['load_before']} before, "
        f"{load['load_after']} after"
    )


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/live_accuracy.py",
        description=(
            "Measure a model bundle's accuracy and event latency on live streams against "
            "uploads: starts gd-serve, streams held-out videos at real time (all at once) and "
            "uploads them, and scores both with the PKU-MMD metric (gd-eval)."
        ),
        epilog=(
            "examples:\n"
            "  .venv/bin/python bench/live_accuracy.py --size 64x64\n"
            "  .venv/bin/python bench/live_accuracy.py --size 120x160 --seeds 1000 1001 1002\n"
            "  .venv/bin/python bench/live_accuracy.py --data data/pku --all-videos --no-reduce\n"
            "\nDetails (what is measured, how events become predictions, what 'matches' means "
            "for latency): the docstring of bench/live_accuracy.py and docs/results.md."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        type=Path,
        default=ROOT / "models" / "default",
        help="model bundle folder (default: models/default)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "runs" / "live_accuracy",
        help="results folder (default: runs/live_accuracy)",
    )
    d = p.add_argument_group("held-out data: a PKU-MMD-layout folder, or generated by gd-synth")
    d.add_argument("--data", type=Path, help="PKU-MMD layout folder (label/, depth/, split/)")
    d.add_argument(
        "--all-videos",
        action="store_true",
        help="score every video, not only the cross-subject test split",
    )
    d.add_argument("--fps", type=float, default=30.0, help="frame rate of the videos (30)")
    d.add_argument("--videos", type=int, default=24, help="videos to generate per seed (24)")
    d.add_argument(
        "--seeds",
        "--seed",
        type=int,
        nargs="+",
        default=[1000],
        help="gd-synth seeds, one held-out data set each (default 1000)",
    )
    d.add_argument("--difficulty", type=float, default=0.1, help="gd-synth difficulty (0.1)")
    d.add_argument(
        "--size",
        type=parse_size,
        metavar="HxW",
        help="depth frame size to generate (default 64x64, the default model's; with --camera, "
        "the camera's own size)",
    )
    d.add_argument(
        "--actions",
        type=int,
        nargs=2,
        default=(8, 12),
        metavar=("MIN", "MAX"),
        help="actions per video (8 12: the default model's training data)",
    )
    d.add_argument("--camera", help="gd-synth camera profile (if this gd-synth offers --camera)")
    d.add_argument(
        "--synth-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra gd-synth argument, repeatable (e.g. --synth-arg=--workers=1)",
    )
    s = p.add_argument_group("streaming and serving")
    s.add_argument(
        "--reduce",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send frames reduced to the model's rate and size, as gd-stream does "
        "(default), or every frame at camera size",
    )
    s.add_argument("--encoding", choices=ENCODINGS, default="zstd", help="frame encoding (zstd)")
    s.add_argument(
        "--references",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="for a person-crop model, store each video's empty-room reference on the server "
        "first (default); --no-references measures the model without them (whole frames, "
        "what a site gets before capturing one)",
    )
    s.add_argument(
        "--score-delay",
        type=int,
        metavar="D",
        help="the server's scoring delay in clips (only if this server offers one)",
    )
    s.add_argument("--threads", type=int, help="gd-serve inference threads (its default)")
    s.add_argument(
        "--tiou",
        type=float,
        nargs="+",
        default=list(DEFAULT_TIOUS),
        help="tIoU thresholds (0.1 0.3 0.5)",
    )
    args = p.parse_args(argv)
    if args.score_delay is not None and score_delay_route() is None:
        p.error(
            "--score-delay: this server has no scoring delay option (no score_delay in "
            "server/settings.py nor in the stream's hello, core/wire.py)"
        )
    if args.camera and not synth_offers("--camera"):
        p.error("--camera: this gd-synth has no --camera option (gd-synth detection --help)")
    if args.data is not None and (args.camera or args.synth_arg):
        p.error("--camera and --synth-arg apply to generated data, not to --data")
    if args.videos < 1:
        p.error("--videos must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bundle = load_bundle(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    roots = (
        {"data": args.data}
        if args.data is not None
        else {str(seed): generate(args, seed) for seed in args.seeds}
    )
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        token_file = Path(tmp) / "tokens"
        token_file.write_text(secrets.token_hex(16) + "\n")
        max_streams = max(len(scored_videos(r, args.all_videos)) for r in roots.values()) + 1
        use_references = bundle.clip.person_crop and args.references
        references = {  # read before the server starts: a missing one fails at once
            seed: read_references(root, scored_videos(root, args.all_videos))
            for seed, root in roots.items()
            if use_references
        }
        server = start_server(args, max_streams, token_file)
        try:
            seeds = {}
            for seed, root in roots.items():
                out = args.out / f"seed-{seed}"
                shutil.rmtree(out, ignore_errors=True)
                print(f"seed {seed}: {root}", flush=True)
                seeds[seed] = run_seed(args, server, root, out, bundle.clip, bundle.num_classes,
                                       references.get(seed))  # fmt: skip
        finally:
            stop(server)
    summary = {
        "model": {"path": str(args.model), "name": bundle.name, "version": bundle.version},
        # whether the server had the cameras' references (null: the model does not crop)
        "references": use_references if bundle.clip.person_crop else None,
        "config": {
            "mode": f"{'reduced' if args.reduce else 'raw'} {args.encoding}",
            "tiou": list(args.tiou),
            "score_delay": args.score_delay,
            "score_delay_via": score_delay_route() if args.score_delay is not None else None,
            **{
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in vars(args).items()
                if k not in ("tiou", "out") and not (args.data and k in GENERATION_ONLY)
            },
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": [round(x, 2) for x in os.getloadavg()],
        },
        "seeds": seeds,
        "mean_std": aggregate(seeds, args.tiou),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print_table(summary)
    print(f"\nwrote {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
