"""gd-serve as a real subprocess on loopback, for the tests that kill it (kill -9) or limit
what it may write (RLIMIT_FSIZE), and an alert rules file for a webhook receiver."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.live import TOKEN
from tests.helpers.loopback import http

START_S = 240.0  # only against a hang: a loaded machine starts gd-serve slowly
WAIT_S = 120.0  # only against a hang: what tests wait for comes within seconds when quiet
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    """Poll until `condition()` is true; its value. (The deadline only stops a hang.)"""
    deadline = time.monotonic() + WAIT_S
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """One gd-serve process with its own data folder (the SQLite event store); its output is
    read as it comes (a full pipe would block it), kept in `output`."""

    def __init__(
        self,
        bundle: Path,
        data_dir: Path,
        args: Sequence[str] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        tokens = data_dir.parent / "tokens"
        tokens.write_text(TOKEN + "\n")
        port = free_port()
        self.url, self.ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/stream"
        env = {
            **os.environ,
            "GD_THREADS": "1",
            "GD_DATA_DIR": str(data_dir),
            "GD_QUEUE_FRAMES": "100000",  # test clients send in bursts, not in real time
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "--model", str(bundle), "--port", str(port),
             "--tokens-file", str(tokens), *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=preexec_fn,
        )  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + START_S
        while True:
            try:
                http.get(f"{self.url}/readyz", timeout=5)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    self.reader.join(5)
                    raise RuntimeError(f"gd-serve exited at start:\n{self.output}") from None
                assert time.monotonic() < deadline, f"gd-serve did not start:\n{self.output}"
                time.sleep(0.05)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def get(self, path: str, **params) -> httpx.Response:
        return http.get(f"{self.url}{path}", params=params, headers=AUTH, timeout=10)

    def kill9(self) -> None:
        """SIGKILL: no shutdown, no flush, nothing the process could still do."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.reader.join(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.reader.join(5)


def rules_file(
    path: Path,
    url: str,
    secrets: Sequence[str],
    labels: Sequence[str],
    backoff_s: float = 0.2,
    backoff_max_s: float = 1.0,
) -> Path:
    """Every event of these labels alerts the webhook `nurses` at `url` (by default with
    quick retries)."""
    path.write_text(
        f"""destinations:
  nurses:
    url: {url}
    secrets: [{", ".join(secrets)}]
    timeout_s: 5
    backoff_s: {backoff_s}
    backoff_max_s: {backoff_max_s}
    max_attempts: 100
rules:
  - name: everything
    labels: [{", ".join(labels)}]
    min_confidence: 0
    destinations: [nurses]
"""
    )
    return path
