"""The fuzzing harness: a `gd-serve` subprocess, the oracles every case is judged by, a
healthy stream running alongside, and the figures of a run.

The server runs as a subprocess, not in the test process: a hostile recording once froze a
decode thread inside librealsense with the interpreter lock held, and an in-process server
would have frozen the tests with it. Here a hang is a request timeout; the server is then
killed and restarted so the run goes on, and its memory is its own process's RSS.

Tiers (environment): `GD_FUZZ_TIER=short` (default, inside `make test`: derandomized, stops at
the first failure and shrinks it) or `long` (`make fuzz`: random, Hypothesis' database in
`.hypothesis/`, records every failure and goes on); `GD_FUZZ_EXAMPLES` overrides the examples
per property. Failing inputs are saved under `runs/fuzz/findings/` (both tiers), the figures
to `runs/fuzz/summary.json`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from server.settings import MiB, Settings
from tests.fuzz.healthy import write_stream
from tests.helpers.live import TOKEN, hello, run_stream

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs" / "fuzz"
TIER = os.environ.get("GD_FUZZ_TIER", "short")
if TIER not in ("short", "long"):
    raise ValueError(f"GD_FUZZ_TIER must be short or long, got {TIER!r}")
LONG = TIER == "long"
# The short tier is a check inside `make test` that every property still runs against the
# server (10 a property: 214 cases, 32 CPU s with its server; 20 were 396 cases, 42 CPU s); the
# long tier is the search.
EXAMPLES = int(os.environ.get("GD_FUZZ_EXAMPLES") or (700 if LONG else 10))

# Hang detectors, not speed requirements: a healthy answer takes milliseconds; these only bound
# how long a run waits before calling the server stuck.
REQUEST_TIMEOUT_S = 30.0
HEALTH_TIMEOUT_S = 10.0
START_TIMEOUT_S = 60.0
# The close codes docs/api.md documents for a client's mistakes (1000: a normal end).
CLOSE_CODES = frozenset({1000, 4400, 4401, 4408, 4413, 4429})
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Work bound, clips per frame received. On a stream a frame may be repeated across a gap of up
# to max_gap_s (2 s: 20 kept frames at the tiny model's 10 fps, 5 clips of 4); an upload's at
# most max_upload_upsample (4) times (1 clip). Twice the larger leaves room for a final clip.
MAX_CLIPS_PER_FRAME = 10


def fuzz_settings(**overrides: Any) -> settings:
    """Hypothesis settings of this tier (used per test: a global profile would also change the
    rest of the suite's property tests in the same pytest run)."""
    options: dict[str, Any] = dict(
        max_examples=EXAMPLES,
        deadline=None,  # the server's time is measured, not asserted
        derandomize=not LONG,
        database=DirectoryBasedExampleDatabase(ROOT / ".hypothesis" / "fuzz") if LONG else None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
    options.update(overrides)
    return settings(**options)


NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)  # for cases whose failure is a hang
# Recordings are decoded in a process of their own: each case costs a process start.
RECORDING_EXAMPLES = max(3, EXAMPLES // 5)


def server_settings(bundle: Path, spool: Path) -> Settings:
    """Small limits so that every limit is reachable with small inputs."""
    return Settings(
        model=bundle,
        tokens=(TOKEN,),
        threads=1,
        max_streams=40,
        queue_frames=1000,
        idle_timeout_s=2.0,
        send_timeout_s=2.0,
        max_upload_bytes=8 * MiB,
        max_decoded_bytes=64 * MiB,
        max_upload_frames=2000,
        spool_dir=spool,
        max_gap_s=2.0,  # MAX_CLIPS_PER_FRAME follows from it
        max_upload_upsample=4,
        # A hostile recording is killed well before REQUEST_TIMEOUT_S, and soon: a frozen
        # decoder spins a core until then. Long enough for the freezing corpus file to hang
        # in librealsense first (its decoder got there 0.6-1.6 s after the upload under a
        # load of 8 on 2 cores) and for a valid 40-frame seed to decode (0.8-1.3 s).
        decode_timeout_s=3.0,
        log_level="info",  # the access log is checked for leaked tokens
    )


# Left in the fuzz server's spool before it starts, as a server killed mid-decode leaves its
# files: the start must remove those and leave anyone else's (test_regressions.py).
STALE_SPOOL_FILE = "gd-upload-stale1234.db3"
OTHERS_SPOOL_FILE = "someone-elses-file.txt"


def leave_stale_spool_files(spool: Path) -> None:
    (spool / STALE_SPOOL_FILE).write_bytes(b"a recording being decoded when its server died")
    (spool / OTHERS_SPOOL_FILE).write_text("keep")


def settings_env(s: Settings) -> dict[str, str]:
    """`GD_*` variables that give `gd-serve` the settings `s` (server/settings.py)."""
    env = {}
    for f in dataclasses.fields(s):
        value = getattr(s, f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, tuple):
            value = ",".join(value)
        env[f"GD_{f.name.upper()}"] = str(value)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int, key: str) -> int:
    """A `/proc/PID/status` memory figure (`VmRSS`, `VmHWM`) in bytes; 0 once the process is
    gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, and theirs (from /proc). A process that exits meanwhile (a
    recording decoder finishing) has none: its /proc folder goes while it is read."""
    out, todo = [], [pid]
    while todo:
        try:
            tasks = list(Path(f"/proc/{todo.pop()}/task").glob("*/children"))
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in task.read_text().split()]
            except OSError:
                continue
            out += children
            todo += children
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def reap(pids: list[int], grace_s: float = 5.0) -> list[int]:
    """Kill those of `pids` (a stopped server's children) still running after `grace_s` (for
    them to notice; not a speed requirement); returns them."""
    deadline = time.monotonic() + grace_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)  # a /proc read: cheap
    survivors = [p for p in pids if alive(p)]
    for p in survivors:
        os.kill(p, signal.SIGKILL)
    return survivors


class ServerProcess:
    """`gd-serve` (python -m server.cli) on a loopback port with `settings`, logging to
    `log_path`; `restart()` after a hang or crash."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings, self.log_path = settings, log_path
        self.restarts = 0
        self.peak_rss = 0  # VmHWM over every process this object started
        self.orphans: list[int] = []  # children (decoders) that outlived the server: killed
        self.start()

    def start(self) -> None:
        """On the same port as before, if any: the healthy stream reconnects to it."""
        self.port = getattr(self, "port", None) or free_port()
        # One client for the server's life: making an httpx client (its TLS context) costs
        # more than a request does.
        self.client = httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT_S)
        env = {**os.environ, **settings_env(self.settings), "GD_PORT": str(self.port)}
        env["PYTHONPATH"] = str(ROOT)
        # Its event store beside its log, not the checkout's data/ that `make run` shows.
        env["GD_DATA_DIR"] = str(self.log_path.parent / "server-data")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli"], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.healthy(timeout=1.0):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gd-serve did not start; see {self.log_path}")
            time.sleep(0.02)  # a refused connection answers at once: polling is cheap

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return proc_status(self.pid, "VmRSS")

    def peak(self) -> int:
        self.peak_rss = max(self.peak_rss, proc_status(self.pid, "VmHWM"))
        return self.peak_rss

    def reset_peak(self) -> None:
        """Start the kernel's peak RSS (VmHWM) afresh, keeping the old one in `peak_rss`."""
        self.peak()
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> bool:
        try:
            return self.client.get("/healthz", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it does not exit in 10 s); then any process it started that is
        still running (a recording decoder) is recorded in `orphans` and killed."""
        self.client.close()
        if self.proc.poll() is not None:
            return
        self.peak()
        children = descendants(self.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # a frozen server ignores SIGTERM
            self.proc.kill()
            self.proc.wait()
        self.orphans += reap(children)

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()


# --- figures -------------------------------------------------------------------------------


@dataclass
class Stats:
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    slowest_case: str = ""
    started: float = field(default_factory=time.monotonic)

    def timed(self, label: str, seconds: float) -> None:
        self.cases += 1
        if seconds > self.slowest_s:
            self.slowest_s, self.slowest_case = seconds, label


STATS = Stats()


class Finding(AssertionError):
    """An oracle failed: a 5xx, a malformed error, an undocumented close code, a hang."""


def fail(
    server: ServerProcess, label: str, problem: str, data: bytes | None, **context: Any
) -> None:
    """Record a failure and save its input (with `context`: how it was sent, beside it);
    raise it (short tier) or go on (long tier)."""
    digest = hashlib.sha256(data or b"").hexdigest()[:12]
    saved = ""
    if data is not None:
        folder = RUNS / "findings"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{label.split()[0]}-{digest}.bin"
        path.write_bytes(data)
        about = {"label": label, "problem": problem, **context}
        path.with_suffix(".json").write_text(json.dumps(about, indent=1, default=repr) + "\n")
        saved = f" (input: {path.relative_to(ROOT)})"
    message = f"{label}: {problem}{saved}"
    STATS.failures.append(message)
    if not server.healthy():
        server.restart()
    if not LONG:
        raise Finding(message)


# --- oracles -------------------------------------------------------------------------------


def http_problem(response: Any) -> str | None:
    """What is wrong with an answer to hostile input, or None: no 5xx, and every error a JSON
    `{"error": {"code", "message"}}` with a 4xx. `response`: httpx's or schemathesis'."""
    status, body = response.status_code, bytes(response.content)
    if status >= 500:
        return f"HTTP {status}: {body[:300]!r}"
    if status < 400:
        return None
    try:
        error = json.loads(body)["error"]
        ok = isinstance(error["code"], str) and isinstance(error["message"], str)
    except (ValueError, KeyError, TypeError):
        ok = False
    return None if ok else f"HTTP {status} without a JSON error body: {body[:300]!r}"


def cost_problem(response: Any) -> str | None:
    """A detections answer whose work is out of proportion to its input (issue 12: 2 frames
    that claim 100,000 s of video made 100,000 clips)."""
    if response.status_code != 200 or "/v1/detections" not in str(response.request.url):
        return None
    video = json.loads(response.content)["video"]
    frames, clips = video["frames"], video["clips"]
    if frames < 1 or clips > MAX_CLIPS_PER_FRAME * frames:
        return f"{clips} clips from {frames} frames"
    return None


def check_http(
    server: ServerProcess,
    label: str,
    send: Callable[[httpx.Client], Any],
    data: bytes | None = None,
    refuse: bool = False,
    **context: Any,
) -> Any:
    """Run one HTTP case: `send` with a client bound to the server; judge the answer (with
    `refuse`, a 2xx is wrong too), then check that `/healthz` still answers."""
    start = time.perf_counter()
    response, problem = None, None
    try:
        response = send(server.client)
        problem = http_problem(response) or cost_problem(response)
        if problem is None and refuse and response.status_code < 400:
            problem = f"HTTP {response.status_code}: accepted input that must be refused"
    except httpx.TimeoutException:
        problem = f"no answer in {REQUEST_TIMEOUT_S:g} s (hang)"
    except httpx.TransportError as e:
        problem = f"connection broken: {e!r}"  # a refusal is an answer; a reset is not
    STATS.timed(label, time.perf_counter() - start)
    if problem is None and not server.healthy():
        problem = f"/healthz did not answer within {HEALTH_TIMEOUT_S:g} s after the case"
    if problem is not None:
        fail(server, label, problem, data, **context)
    return response


def upload(
    server: ServerProcess,
    label: str,
    data: bytes,
    filename: str = "clip.npy",
    params: dict[str, Any] | None = None,
    refuse: bool = False,
) -> httpx.Response | None:
    """POST /v1/detections with `data` as the multipart field `file`, judged."""

    def send(client: httpx.Client) -> httpx.Response:
        return client.post(
            "/v1/detections", params=params, files={"file": (filename, data)}, headers=AUTH
        )

    return check_http(server, label, send, data, refuse, filename=filename, params=params)


def stream_problem(result: Any) -> str | None:
    if result.close_code not in CLOSE_CODES:
        return f"closed with {result.close_code} {result.close_reason!r}"
    for event in result.events:
        if event.get("type") == "error" and not (
            isinstance(event.get("code"), str) and isinstance(event.get("message"), str)
        ):
            return f"malformed error event {event!r}"
    return None


def check_stream(
    server: ServerProcess,
    label: str,
    first: dict[str, Any] | str | bytes | None = None,
    messages: list[Any] = (),
    end: bool = True,
    token: str | None = TOKEN,
    refuse: bool = False,
) -> Any:
    """Run one WebSocket case: `first` (a hello dict, or a raw message), then `messages`,
    then `end`; judge the close code and events, bound the work (`scores` events) by the
    frames sent (with `refuse`, a `ready` is wrong too), then check `/healthz`."""
    start = time.perf_counter()
    result, problem = None, None
    first = hello(32, 32, 10) if first is None else first
    try:
        result = asyncio.run(
            asyncio.wait_for(
                run_stream(
                    server.ws_url,
                    token=token,
                    messages=list(messages),
                    hello_message=first,
                    end=end,
                    timeout=REQUEST_TIMEOUT_S,
                ),
                REQUEST_TIMEOUT_S,
            )
        )
        problem = stream_problem(result)
        scores = len(result.of("scores"))
        frames = sum(isinstance(m, bytes | bytearray) for m in messages)
        if problem is None and scores > MAX_CLIPS_PER_FRAME * frames:
            problem = f"{scores} clips scored from {frames} frames"
        if problem is None and refuse and result.ready is not None:
            problem = "accepted a stream that must be refused"
    except TimeoutError:
        problem = f"the stream did not close within {REQUEST_TIMEOUT_S:g} s (hang)"
    except Exception as e:  # a refused handshake, a broken connection
        problem = f"{type(e).__name__}: {e}"
    STATS.timed(label, time.perf_counter() - start)
    if problem is None and not server.healthy():
        problem = f"/healthz did not answer within {HEALTH_TIMEOUT_S:g} s after the case"
    if problem is not None:
        data = json.dumps({"first": _jsonable(first), "messages": _jsonable(messages)}).encode()
        fail(server, label, problem, data)
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"bytes_hex": bytes(value).hex()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --- a healthy stream alongside --------------------------------------------------------------


class HealthyStream:
    """tests/fuzz/healthy.py in a subprocess, streaming into `server` for the whole fuzz run."""

    def __init__(self, server: ServerProcess, figures_path: Path) -> None:
        self.path = figures_path
        sent = figures_path.with_name("healthy-stream.npz")
        write_stream(sent)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "GD_FUZZ_TOKEN": TOKEN}
        command = ["-m", "tests.fuzz.healthy", server.ws_url, str(figures_path), str(sent)]
        self.proc = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env)

    def figures(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def summary(server: ServerProcess | None, healthy: HealthyStream | None) -> dict[str, Any]:
    """The run's figures (also written to runs/fuzz/summary.json)."""
    figures: dict[str, Any] = {
        "tier": TIER,
        "examples_per_property": EXAMPLES,
        "cases": STATS.cases,
        "failures": len(STATS.failures),
        # one bug fails many cases: label and the problem's first line, input names aside
        "distinct_failures": len({f.split(" (input:")[0].split("\n")[0] for f in STATS.failures}),
        "slowest_response_s": round(STATS.slowest_s, 3),
        "slowest_case": STATS.slowest_case,
        "wall_s": round(time.monotonic() - STATS.started, 1),
    }
    if server is not None:
        figures["server_peak_rss_mib"] = round(server.peak() / MiB, 1)
        figures["server_restarts"] = server.restarts
        figures["orphaned_decoders"] = len(server.orphans)
    if healthy is not None:
        figures.update({f"healthy_{k}": v for k, v in healthy.figures().items()})
    figures["failure_list"] = STATS.failures
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / "summary.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures
