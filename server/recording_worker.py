"""Untrusted RealSense recordings, decoded in a child process the server can kill.

librealsense parses `.bag` / `.db3` files in native code, and a corrupt file can make it hang
while holding the interpreter lock (issue 12: `/healthz` and every stream froze), crash, or
allocate without bound. So the server never calls it in its own process. A recording is
written to a private spool file (mode 0600, named `gd-upload-<server pid>-*`) and read by a
fresh interpreter, `python -m server.recording_worker`: spawned (fork + exec), not a fork
that would inherit the server's threads and locks. The child limits its own address space
(`RLIMIT_AS`) before librealsense is loaded, and is killed when it runs past the time limit.
It writes frames and timestamps as two `.npy` arrays to a second spool file (no pickling,
no copies through a pipe) and one JSON status line to stdout. Both spool files are removed
on every path; files left by a server that was killed are removed when the next one starts.

A decoder never outlives its server: `RecordingDecoder.stop` (the server's shutdown) kills the
running children, and a child asks the kernel to kill it when the server thread that started
it ends (`PR_SET_PDEATHSIG`, so even a `kill -9` of the server ends its decoders), with a
CPU-time limit as the last backstop.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core.realsense import RealSenseError, RecordingTooLarge, read_depth

log = logging.getLogger("gd.server.recordings")

SPOOL_PREFIX = "gd-upload-"
# The child must run this checkout's code, whatever the server's working directory.
PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


class RecordingRejected(Exception):
    """A recording the decoder refused, timed out on or crashed on (`status`: HTTP)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RecordingDecoder:
    """Decodes recordings in child processes, at most `max_processes` at once."""

    def __init__(
        self, spool_dir: Path, timeout_s: float, memory_bytes: int, max_processes: int
    ) -> None:
        self.spool_dir = Path(spool_dir)
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self.max_processes = max_processes
        self._slots = threading.BoundedSemaphore(max_processes)
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def decode(
        self, data: bytes, kind: str, max_frames: int, max_bytes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """uint16 frames `[T, H, W]` (mm) and int64 timestamps (µs) of a `.bag` / `.db3`.

        Blocking: run it off the event loop. Raises `RecordingRejected`. Waiting for a free
        decoder and decoding together take at most `timeout_s`: an upload is answered within
        the stated time even while hostile recordings keep every decoder busy.
        """
        deadline = time.monotonic() + self.timeout_s
        with self.slot(), spool_files(self.spool_dir, kind) as (source, output):
            source.write_bytes(data)
            self._run(source, output, max_frames, max_bytes, deadline - time.monotonic())
            return _read_output(output)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """One of the `max_processes` decoders, waited for at most half of `timeout_s` (else
        429), so that at least the other half is left for decoding."""
        if not self._slots.acquire(timeout=self.timeout_s / 2):
            raise RecordingRejected(
                429,
                "decoders_busy",
                f"{self.max_processes} recordings are being decoded (GD_MAX_DECODERS); retry later",
            )
        try:
            yield
        finally:
            self._slots.release()

    def stop(self) -> None:
        """Kill the running decoders and remove their files (server shutdown); later decodes
        are refused. The files go here, not in the decoding threads: uvicorn ends the process
        by re-raising the signal it caught, and those threads never get to clean up."""
        with self._lock:
            self._stopped = True
            running = list(self._running)
        for proc in running:
            proc.kill()
            proc.wait()
        remove_stale_spool_files(self.spool_dir)  # this server's own files count as stale now

    def _run(
        self, source: Path, output: Path, max_frames: int, max_bytes: int, timeout_s: float
    ) -> None:
        args = (source, output, max_frames, max_bytes, self.memory_bytes, timeout_s)
        command = [sys.executable, "-m", "server.recording_worker", *map(str, args), os.getpid()]
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [PROJECT_ROOT, path]))}
        with self._lock:
            if self._stopped:
                raise RecordingRejected(503, "shutting_down", "the server is shutting down")
            proc = subprocess.Popen(
                list(map(str, command)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            self._running.add(proc)
        try:
            stdout, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RecordingRejected(
                422,
                "decode_timeout",
                f"decoding the recording took over {self.timeout_s:g} s (GD_DECODE_TIMEOUT_S); "
                "it was stopped",
            ) from None
        finally:
            with self._lock:
                self._running.discard(proc)
        if self._stopped:
            raise RecordingRejected(503, "shutting_down", "the server is shutting down")
        report = _report(stdout)
        if report is None:
            log.warning("recording decoder exited with status %s", proc.returncode)
            raise RecordingRejected(
                422,
                "invalid_recording",
                f"the recording crashed its decoder (exit status {proc.returncode})",
            )
        if not report.get("ok"):
            message = str(report["message"]).replace(str(source), "upload")
            message = message.replace(source.name, "upload")  # the spool file stays private
            raise RecordingRejected(int(report["status"]), str(report["code"]), message)


def _report(stdout: bytes) -> dict | None:
    try:
        report = json.loads(stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return report if isinstance(report, dict) else None


def _read_output(output: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(output, "rb") as f:
        frames = np.load(f, allow_pickle=False)
        timestamps = np.load(f, allow_pickle=False)
    if frames.ndim != 3 or frames.dtype != np.uint16 or timestamps.shape != frames.shape[:1]:
        raise RecordingRejected(
            422, "invalid_recording", "the recording's decoder returned malformed frames"
        )
    return frames, timestamps.astype(np.int64, copy=False)


@contextmanager
def spool_files(spool_dir: Path, kind: str) -> Iterator[tuple[Path, Path]]:
    """A private input file (`.<kind>`: librealsense picks its reader by the name) and an
    output file, both removed on the way out, whatever happened."""
    spool = spool_dir if spool_dir.is_dir() else Path(tempfile.gettempdir())
    if spool != spool_dir:
        log.warning("spool_dir %s does not exist; using %s", spool_dir, spool)
    prefix = f"{SPOOL_PREFIX}{os.getpid()}-"
    paths = []
    try:
        for suffix in (f".{kind}", ".out"):
            fd, name = tempfile.mkstemp(suffix=suffix, prefix=prefix, dir=spool)  # mode 0600
            os.close(fd)
            paths.append(Path(name))
        yield paths[0], paths[1]
    finally:
        for path in paths:
            path.unlink(missing_ok=True)


def remove_stale_spool_files(spool_dir: Path) -> int:
    """Remove spool files left by servers that no longer run (killed mid-decode).

    A file belongs to the server whose pid is in its name; at start-up this server has none
    of its own yet, so its own pid's files are stale too (a restarted container's pid 1).
    """
    removed = 0
    if not Path(spool_dir).is_dir():
        return removed
    for path in Path(spool_dir).glob(f"{SPOOL_PREFIX}*"):
        match = re.match(rf"{SPOOL_PREFIX}(\d+)-", path.name)
        pid = int(match[1]) if match else None
        if pid is not None and pid != os.getpid() and _running(pid):
            continue
        try:
            path.unlink()
            removed += 1
        except OSError as e:  # another user's file, or gone already
            log.warning("cannot remove stale spool file %s: %s", path, e)
    if removed:
        log.info("removed %d stale spool file(s) from %s", removed, spool_dir)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# --- the child ----------------------------------------------------------------------------


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with(parent: int, cpu_seconds: int) -> None:
    """Never outlive the server: killed when the server's thread that started this process
    ends (Linux), gone at once if the server is already gone, and at most `cpu_seconds` of CPU
    (SIGXCPU, then SIGKILL) on any system."""
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the server died before the line above took effect
        os._exit(1)


def main(argv: list[str]) -> None:
    """`source output max_frames max_bytes memory_bytes timeout_s server_pid`; exits without
    cleanup."""
    source, output, max_frames, max_bytes, memory, timeout_s, parent = argv
    _die_with(int(parent), 2 * math.ceil(float(timeout_s)) + 1)  # the wall limit comes first
    status = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what native code prints must not mix with the status line
    resource.setrlimit(resource.RLIMIT_AS, (int(memory), int(memory)))
    try:
        rec = read_depth(
            source, max_frames=int(max_frames), max_bytes=int(max_bytes), timeout_s=float(timeout_s)
        )
        with open(output, "wb") as f:
            np.save(f, rec.frames)
            np.save(f, rec.timestamps_us)
        report: dict[str, object] = {"ok": True}
    except RecordingTooLarge as e:
        report = {"status": 413, "code": "too_large", "message": str(e)}
    except RealSenseError as e:
        report = {"status": 422, "code": "invalid_recording", "message": str(e)}
    except MemoryError:
        report = {
            "status": 413,
            "code": "too_large",
            "message": f"decoding the recording needs over {memory} bytes (GD_DECODE_MEMORY_BYTES)",
        }
    except Exception as e:  # whatever librealsense raises on a corrupt file
        report = {"status": 422, "code": "invalid_recording", "message": f"{type(e).__name__}: {e}"}
    status.write(json.dumps(report) + "\n")
    status.flush()
    os._exit(0)  # librealsense's destructors can hang on a corrupt file too


if __name__ == "__main__":
    main(sys.argv[1:])
