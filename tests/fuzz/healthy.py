"""A well-behaved camera streaming into the server while hostile input arrives, in a process
of its own (the fuzzers' work in the test process would otherwise delay it and look like a
server stall). It reconnects when the server restarts on the same port.

    GD_FUZZ_TOKEN=... python -m tests.fuzz.healthy WS_URL FIGURES_JSON STREAM_NPZ

STREAM_NPZ (`write_stream`, run by the test process) holds what it sends: the test helpers
that make it import the server and onnx, 4 CPU s that this process does without.

The figures (events received, the largest gap between two consecutive events, the nominal
gap: one clip period, reconnects) are rewritten to FIGURES_JSON every second and on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from core.wire import pack_header

SIZE, FPS = 32, 10.0  # the tiny model's own size and rate, in real time


def write_stream(path: Path) -> None:
    """The hello, the frames (sent in a loop) and the nominal gap between two `scores`
    events (one clip period: 0.4 s), to `path` (.npz)."""
    from tests.helpers.live import hello
    from tests.helpers.tiny_bundle import TINY_SPEC, scene

    np.savez(
        path,
        hello=json.dumps(hello(SIZE, SIZE, FPS, camera_id="healthy")),
        frames=scene(40, SIZE, SIZE, actions=((10, 30, 0.3),)).astype("<u2"),
        period_s=TINY_SPEC.clip_step / FPS,
    )


class Figures:
    def __init__(self, path: Path, period_s: float) -> None:
        self.path, self.period_s = path, period_s
        self.events = self.reconnects = 0
        self.max_gap_s = 0.0

    def write(self) -> None:
        figures = {
            "events": self.events,
            "max_gap_s": round(self.max_gap_s, 3),
            "clip_period_s": self.period_s,  # the nominal gap
            "reconnects": self.reconnects,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(figures))
        tmp.replace(self.path)


async def stream(url: str, token: str, hello: str, payloads: list[bytes], figures: Figures) -> None:
    from websockets.asyncio.client import connect

    headers = {"Authorization": f"Bearer {token}"}
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.send(hello)
        await ws.recv()  # ready
        last = time.monotonic()

        async def read() -> None:
            nonlocal last
            async for _ in ws:
                now = time.monotonic()
                figures.max_gap_s = max(figures.max_gap_s, now - last)
                figures.events, last = figures.events + 1, now

        reader = asyncio.create_task(read())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        i = 0
        while not reader.done():
            await asyncio.sleep(max(0.0, t0 + i / FPS - loop.time()))
            timestamp = 1_000_000 + round(i * 1e6 / FPS)
            await ws.send(pack_header(timestamp, i % (1 << 32)) + payloads[i % len(payloads)])
            i += 1
        reader.result()


async def main_async(
    url: str, token: str, hello: str, payloads: list[bytes], figures: Figures
) -> None:
    async def write_every_second() -> None:
        while True:
            figures.write()
            await asyncio.sleep(1)

    writer = asyncio.create_task(write_every_second())
    while True:
        with contextlib.suppress(Exception):  # the server restarted or refused: connect again
            await stream(url, token, hello, payloads, figures)
        figures.reconnects += 1
        await asyncio.sleep(0.5)
        del writer  # runs as long as the process


def main(argv: list[str] | None = None) -> int:
    url, path, stream_path = argv or sys.argv[1:]
    with np.load(stream_path) as sent:
        hello, period_s = str(sent["hello"]), float(sent["period_s"])
        payloads = [f.tobytes() for f in sent["frames"]]
    figures = Figures(Path(path), period_s)

    def stop(*_) -> None:
        figures.write()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    asyncio.run(main_async(url, os.environ["GD_FUZZ_TOKEN"], hello, payloads, figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
