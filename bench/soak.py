"""Soak and recovery: healthy streams for a long time while hostile input arrives.

    .venv/bin/python bench/soak.py [--minutes 30] [--streams 4] [--model models/default]
                                   [--uploads-per-minute 60] [--streams-per-minute 30]
                                   [--plot soak.png]

A real `gd-serve` subprocess (bench/streams.py's `start`) serves the bundle. N healthy cameras
stream at real-time pace (the model's own size and rate, frames from bench/streams.py's
`make_frames`) for the whole run. The run, timed from when every healthy stream is connected,
has three phases: *baseline* (the first 10%: healthy streams only), *hostile* (70%: hostile
uploads from the fuzz corpus tests/fuzz/corpus/, including recordings that hang librealsense
and fresh byte-flipped recordings, and hostile streams: deep JSON, oversized and truncated
frames, timestamp jumps, garbage, idle clients, at the set rates) and *recovery* (the last
20%: healthy only again).

Reported: the server's RSS over time (the server process and its children, from /proc:
baseline, peak, final; it must level off and come back near the baseline), dropped frames and
clips of the healthy streams (from their `warning` and `end` events against the clips their
frames make), the largest gap between two consecutive events of a healthy stream (with how
late this process's own event loop ran, since it also sends the hostile load), `/healthz`
latency (median, p99, max) per phase, and how the hostile requests were answered (any 5xx or
undocumented close code is a failure of the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.streams import make_frames, start, stop  # noqa: E402
from core.bundle import load_bundle  # noqa: E402
from core.clip import ClipSpec, num_clips  # noqa: E402
from core.wire import HEADER  # noqa: E402
from tests.fuzz import corpus  # noqa: E402
from tests.fuzz.harness import CLOSE_CODES, descendants, proc_status, reap  # noqa: E402

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

PHASES = (("baseline", 0.10), ("hostile", 0.70), ("recovery", 0.20))
MiB = 1 << 20


@dataclass
class Healthy:
    """What the healthy streams saw."""

    frames_sent: int = 0
    clips_expected: int = 0
    clips_scored: int = 0
    dropped_frames: int = 0  # from `end` events (warnings when a stream did not end)
    max_gap_s: float = 0.0
    gap_phase: str = ""
    errors: list[str] = field(default_factory=list)
    closes: Counter = field(default_factory=Counter)


@dataclass
class Soak:
    http: str
    ws: str
    pid: int
    phase_ends: list[tuple[str, float]] = field(default_factory=list)  # monotonic, from start()
    healthy: Healthy = field(default_factory=Healthy)
    # (seconds since start, RSS of the server process, of it and its children) in bytes
    rss: list[tuple[float, int, int]] = field(default_factory=list)
    health_ms: dict[str, list[float]] = field(default_factory=dict)
    uploads: Counter = field(default_factory=Counter)  # HTTP status (or error) counts
    hostile_closes: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    unfinished: int = 0  # hostile requests still unanswered at the end of the run
    # the soak's own event loop running late: a healthy stream's gap this long is the client's
    loop_lag_s: float = 0.0
    t0: float = field(default_factory=time.monotonic)

    def start(self, total_s: float) -> None:
        """The run's clock starts now (its healthy streams connected): the phases' ends."""
        self.t0 = at = time.monotonic()
        self.phase_ends = []
        for name, share in PHASES:
            at += share * total_s
            self.phase_ends.append((name, at))

    def phase(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        return next((name for name, end in self.phase_ends if now < end), "done")


def tree_rss(pid: int) -> int:
    """RSS of `pid` and its descendants (recording decoders run as child processes)."""
    return sum(proc_status(p, "VmRSS") for p in [pid, *descendants(pid)])


# --- the healthy streams -------------------------------------------------------------------


async def connect_healthy(soak: Soak, i: int, frames) -> ClientConnection:
    """Camera `i`'s connection, its hello answered (`ready`)."""
    from websockets.asyncio.client import connect

    _, fps, h, w = frames
    hello = {
        "type": "hello",
        "protocol": 1,
        "camera_id": f"soak-{i}",
        "width": w,
        "height": h,
        "fps": fps,
        "depth_units": 0.001,
        "encoding": "raw",
    }
    ws = await connect(soak.ws, max_size=None, compression=None, open_timeout=30)
    await ws.send(json.dumps(hello))
    await ws.recv()  # ready
    return ws


async def healthy_stream(
    soak: Soak, ws: ClientConnection, i: int, n: int, spec: ClipSpec, frames
) -> None:
    """Camera `i` of `n` on its connection `ws`, its first frame offset by i/n of a clip
    (cameras are not synchronized)."""
    payloads, fps, _, _ = frames
    stats, loop = soak.healthy, asyncio.get_running_loop()
    end = soak.phase_ends[-1][1]
    async with ws:
        await asyncio.sleep(i / n * spec.clip_step / spec.kept_fps)
        last = time.monotonic()
        ended = False

        async def read() -> None:
            nonlocal last, ended
            async for text in ws:
                now = time.monotonic()
                if now - last > stats.max_gap_s:
                    stats.max_gap_s, stats.gap_phase = now - last, soak.phase(now)
                last = now
                event = json.loads(text)
                if event["type"] == "scores":
                    stats.clips_scored += 1
                elif event["type"] == "end":
                    stats.dropped_frames += event["frames_dropped"]
                    ended = True
                elif event["type"] == "error":
                    stats.errors.append(f"stream {i}: {event['code']}: {event['message']}")

        reader = asyncio.create_task(read())
        t0, sent = loop.time(), 0
        while time.monotonic() < end and not reader.done():
            await asyncio.sleep(max(0.0, t0 + sent / fps - loop.time()))
            frame = HEADER.pack(1_000_000 + round(sent * 1e6 / fps), sent) + payloads[sent % 8]
            await ws.send(frame)
            sent += 1
        if not reader.done():
            await ws.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(reader, 60)
        stats.closes[ws.close_code] += 1
        stats.frames_sent += sent
        stats.clips_expected += num_clips(int(sent * spec.kept_fps / fps), spec)
        if not ended:
            stats.errors.append(f"stream {i} closed {ws.close_code} without its end event")


# --- hostile load --------------------------------------------------------------------------


def hostile_uploads(tmp: Path, n_flipped: int = 20) -> list[tuple[str, bytes, str, dict]]:
    """The fuzz corpus, and recordings with 20 random byte flips (issue 12's freeze recipe)."""
    out = [(name, corpus.load(name), c.filename, c.params) for name, c in corpus.CASES.items()]
    seed = corpus.record_seed(tmp / "seed.db3")
    rng = np.random.default_rng(0)
    for k in range(n_flipped):
        edits = list(zip(rng.integers(0, len(seed), 20), rng.integers(0, 256, 20), strict=True))
        out.append((f"flipped-{k}.db3", corpus.flip(seed, edits), "clip.db3", {}))
    return out


def hostile_streams(spec: ClipSpec) -> list[tuple[str, object, list]]:
    """(name, first message, messages after it): each must end with a documented close."""
    h, w = spec.height, spec.width
    hello = {
        "type": "hello",
        "protocol": 1,
        "camera_id": "hostile",
        "width": w,
        "height": h,
        "fps": spec.kept_fps,
        "depth_units": 0.001,
        "encoding": "raw",
    }
    image = bytes(2 * h * w)
    return [
        ("nested-hello", "[" * 100_000 + "]" * 100_000, []),
        ("binary-hello", b"\0" * 64, []),
        ("oversized-frame", hello, [HEADER.pack(1, 0) + bytes(4 * h * w + 4096)]),
        ("truncated-frame", hello, [HEADER.pack(1, 0) + image[:-1]]),
        ("short-message", hello, [b"\1\2\3"]),
        (
            "timestamp-jump",
            hello,
            [HEADER.pack(1_000_000, 0) + image, HEADER.pack(3_001_000_000, 1) + image],
        ),
        ("backwards", hello, [HEADER.pack(2_000_000, 0) + image, HEADER.pack(1, 1) + image]),
        ("unknown-type", hello, ['{"type": "nope"}']),
        ("idle", hello, None),  # says hello, then nothing: closed 4408 after the idle timeout
    ]


async def hostile_stream(soak: Soak, name: str, first, messages) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    try:
        async with connect(soak.ws, max_size=None, compression=None, open_timeout=30) as ws:
            try:
                await ws.send(json.dumps(first) if isinstance(first, dict) else first)
                for m in messages or []:
                    await ws.send(m)
                if messages is not None:
                    await ws.send(json.dumps({"type": "end"}))
                async with asyncio.timeout(120):
                    async for _ in ws:
                        pass
            except ConnectionClosed:
                pass
            code = ws.close_code
    except Exception as e:
        code = type(e).__name__
    soak.hostile_closes[code] += 1
    if code not in CLOSE_CODES:
        soak.failures.append(f"hostile stream {name}: closed {code}")


async def hostile_upload(soak: Soak, client, name: str, data: bytes, filename: str, params):
    try:
        r = await client.post(
            f"{soak.http}/v1/detections",
            params=params,
            files={"file": (filename, data)},
            timeout=120,
        )
        status = r.status_code
    except Exception as e:
        status = type(e).__name__
    soak.uploads[status] += 1
    if not isinstance(status, int) or status >= 500:
        soak.failures.append(f"upload {name}: {status}")


async def hostile_load(soak: Soak, spec: ClipSpec, uploads, per_min_up, per_min_ws) -> None:
    import httpx

    streams = hostile_streams(spec)
    tasks: set[asyncio.Task] = set()
    async with httpx.AsyncClient() as client:
        start, end = soak.phase_ends[0][1], soak.phase_ends[1][1]
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        next_up = next_ws = time.monotonic()
        k_up = k_ws = 0
        while time.monotonic() < end:
            now = time.monotonic()
            if per_min_up and now >= next_up:
                name, data, filename, params = uploads[k_up % len(uploads)]
                tasks.add(
                    asyncio.create_task(hostile_upload(soak, client, name, data, filename, params))
                )
                k_up, next_up = k_up + 1, next_up + 60 / per_min_up
            if per_min_ws and now >= next_ws:
                tasks.add(asyncio.create_task(hostile_stream(soak, *streams[k_ws % len(streams)])))
                k_ws, next_ws = k_ws + 1, next_ws + 60 / per_min_ws
            tasks = {t for t in tasks if not t.done()}
            await asyncio.sleep(0.05)
        if tasks:  # they may finish during the recovery phase; at the run's end they stop
            _, late = await asyncio.wait(tasks, timeout=soak.phase_ends[-1][1] - time.monotonic())
            for task in late:
                task.cancel()
            soak.unfinished = len(late)


# --- probes --------------------------------------------------------------------------------


async def loop_lag(soak: Soak) -> None:
    """How late this process's event loop wakes up: it also sends the hostile load."""
    end = soak.phase_ends[-1][1]
    while time.monotonic() < end:
        tick = time.monotonic()
        await asyncio.sleep(0.05)
        soak.loop_lag_s = max(soak.loop_lag_s, time.monotonic() - tick - 0.05)


async def probes(soak: Soak) -> None:
    """Every second: the server's RSS, and one `/healthz` round trip."""
    import httpx

    end = soak.phase_ends[-1][1]
    async with httpx.AsyncClient() as client:
        while time.monotonic() < end:
            tick = time.monotonic()
            soak.rss.append((tick - soak.t0, proc_status(soak.pid, "VmRSS"), tree_rss(soak.pid)))
            phase = soak.phase(tick)
            try:
                r = await client.get(f"{soak.http}/healthz", timeout=30)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            ms = 1000 * (time.monotonic() - tick)
            soak.health_ms.setdefault(phase, []).append(ms if ok else float("inf"))
            await asyncio.sleep(max(0.0, tick + 1 - time.monotonic()))


# --- report ----------------------------------------------------------------------------------


def rss_of(soak: Soak, phase: str, column: int) -> np.ndarray:
    """MiB of one phase's samples: column 1 the server process, 2 with its children."""
    bounds, lo = {}, 0.0
    for name, end in soak.phase_ends:
        bounds[name] = (lo, end - soak.t0)
        lo = end - soak.t0
    a, b = bounds[phase]
    return np.array([r[column] for r in soak.rss if a <= r[0] < b] or [0]) / MiB


def report(soak: Soak, args, spec: ClipSpec) -> None:
    print(
        f"soak: {args.streams} healthy streams ({spec.width}x{spec.height} at "
        f"{spec.kept_fps:g} fps), {args.minutes:g} min, model {args.model}, hostile "
        f"{args.uploads_per_minute:g} uploads + {args.streams_per_minute:g} streams a minute, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"{'phase':9s} | {'RSS MiB med':>11s} {'max':>6s} {'+children':>9s} | "
        f"{'healthz ms p50':>14s} {'p99':>7s} {'max':>7s} | probes"
    )
    for name, _ in PHASES:
        rss, tree = rss_of(soak, name, 1), rss_of(soak, name, 2)
        ms = np.array(soak.health_ms.get(name, [float("nan")]))
        print(
            f"{name:9s} | {np.median(rss):11.1f} {rss.max():6.1f} {tree.max():9.1f} | "
            f"{np.median(ms):14.1f} {np.percentile(ms, 99):7.1f} {ms.max():7.1f} | "
            f"{len(ms)}"
        )
    for column, what in ((1, "server"), (2, "server + decoders")):
        baseline = np.median(rss_of(soak, "baseline", column))
        peak = max(r[column] for r in soak.rss) / MiB
        final = np.median(rss_of(soak, "recovery", column)[-10:])
        print(
            f"memory, {what}: baseline {baseline:.1f} MiB, peak {peak:.1f} MiB, final "
            f"{final:.1f} MiB (final - baseline {final - baseline:+.1f} MiB)"
        )
    h = soak.healthy
    print(
        f"healthy: {h.frames_sent} frames sent, {h.clips_scored} of {h.clips_expected} clips "
        f"scored ({h.clips_expected - h.clips_scored} dropped), {h.dropped_frames} frames "
        f"dropped, closes {dict(h.closes)}, errors {len(h.errors)}"
    )
    period = spec.clip_step / spec.kept_fps  # between two `scores` events of a stream
    print(
        f"largest gap between two events of a healthy stream: {h.max_gap_s:.3f} s in the "
        f"{h.gap_phase} phase, {h.max_gap_s - period:+.3f} s over the clip period of "
        f"{period:g} s (this process's own event loop ran up to {soak.loop_lag_s:.3f} s late)"
    )
    for e in h.errors[:10]:
        print(f"  {e}")
    print(f"hostile uploads by status: {dict(soak.uploads)}")
    print(
        f"hostile streams by close code: {dict(soak.hostile_closes)}; "
        f"{soak.unfinished} hostile requests unanswered at the end of the run"
    )
    print(f"failures (5xx, undocumented closes, server gone): {len(soak.failures)}")
    for f in soak.failures[:20]:
        print(f"  {f}")


def plot(soak: Soak, path: Path) -> None:
    # a Figure of its own, not pyplot's: no global backend or figure registry to leave behind
    # in a process that calls main() (the test), and no GUI backend looked for
    from matplotlib.figure import Figure

    samples = np.array(soak.rss, dtype=float)
    fig = Figure(figsize=(8, 3.5))
    ax = fig.subplots()
    ax.plot(samples[:, 0] / 60, samples[:, 2] / MiB, lw=1, label="server + decoders")
    ax.plot(samples[:, 0] / 60, samples[:, 1] / MiB, lw=1, label="server")
    start = 0.0
    for (name, end), color in zip(soak.phase_ends, ("#eef", "#fee", "#efe"), strict=True):
        ax.axvspan(start, (end - soak.t0) / 60, color=color, label=name)
        start = (end - soak.t0) / 60
    ax.set_xlabel("minutes")
    ax.set_ylabel("server RSS (MiB)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


# --- main ----------------------------------------------------------------------------------


async def run(soak: Soak, args, spec: ClipSpec, uploads) -> None:
    frames = make_frames(spec, "reduced")
    # the phases start once every healthy stream is connected, however long the server took
    sockets = await asyncio.gather(*(connect_healthy(soak, i, frames) for i in range(args.streams)))
    soak.start(60 * args.minutes)
    await asyncio.gather(
        probes(soak),
        loop_lag(soak),
        hostile_load(soak, spec, uploads, args.uploads_per_minute, args.streams_per_minute),
        *(healthy_stream(soak, ws, i, len(sockets), spec, frames) for i, ws in enumerate(sockets)),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="length of the whole run")
    p.add_argument("--streams", type=int, default=4, help="healthy streams")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "default",
                   help="the bundle gd-serve runs (default: models/default)")  # fmt: skip
    p.add_argument("--uploads-per-minute", type=float, default=60.0,
                   help="hostile uploads sent during the hostile phase")  # fmt: skip
    p.add_argument("--streams-per-minute", type=float, default=30.0,
                   help="hostile WebSocket streams opened during the hostile phase")  # fmt: skip
    p.add_argument("--plot", type=Path, help="write a PNG of the server's memory over time")
    args = p.parse_args(argv)
    spec = load_bundle(args.model).clip
    with tempfile.TemporaryDirectory() as tmp:
        uploads = hostile_uploads(Path(tmp))
        # the server's spool (checked empty at the end), given to the server alone: this
        # process's environment stays as it was
        server = start("gd-serve", args.model, env_extra={"GD_SPOOL_DIR": tmp})
        try:
            http = server.url.replace("ws://", "http://").split("/v1/")[0]
            soak = Soak(http, server.url, server.proc.pid)
            asyncio.run(run(soak, args, spec, uploads))
            if server.proc.poll() is not None:
                soak.failures.append(f"the server exited with {server.proc.returncode}")
        finally:
            children = descendants(server.proc.pid)
            stop(server)
        orphans = reap(children)  # decoders that outlived the server
        if orphans:
            soak.failures.append(f"{len(orphans)} decoder processes outlived the server")
        left = [p.name for p in Path(tmp).glob("gd-upload-*")]
        if left:
            soak.failures.append(f"spool files left behind: {left}")
    report(soak, args, spec)
    if args.plot:
        plot(soak, args.plot)
    return 1 if soak.failures or soak.healthy.errors else 0


if __name__ == "__main__":
    sys.exit(main())
