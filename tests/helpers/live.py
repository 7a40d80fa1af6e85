"""A real uvicorn server on loopback in a background thread, and a real WebSocket client."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import socket
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from core.clip import frame_timestamps_us
from core.wire import pack_frame
from server.app import create_app
from server.cli import uvicorn_config
from server.settings import Settings

TOKEN = "test-token-5d41402abc4b2a76"
ADMIN = "admin-token-7c9e6679f1d5"  # an admin token (POST /v1/admin/reload)
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
T0_US = 1_000_000  # the first timestamp run_stream sends


class LiveServer:
    def __init__(self, settings: Settings, send_buffer: int | None = None) -> None:
        self.app = create_app(settings)
        self.service = self.app.state.service
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if send_buffer is not None:  # accepted connections inherit it (and lose autotuning)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/v1/stream"
        config = uvicorn_config(
            self.app, settings, log_level="warning", timeout_graceful_shutdown=2
        )
        self.server = uvicorn_server(config)
        self.thread = threading.Thread(target=self.server.run, args=([self.sock],), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


class PromptServer(uvicorn.Server):
    """uvicorn's server, which stops as soon as `should_exit` is set: uvicorn's own main loop
    looks at it every 0.1 s, a wait every test's server stop would add. Its ticks (the date
    header, the request limit) go on as uvicorn's do."""

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value  # first: a main loop not yet waiting sees it at its next tick
        loop, wake = self._loop, self._wake
        if value and loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended: nothing to wake
                loop.call_soon_threadsafe(wake.set)

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        try:
            while not await self.on_tick(counter):
                counter = (counter + 1) % 864000
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.1)
        finally:
            self._loop = None


def uvicorn_server(config: uvicorn.Config) -> uvicorn.Server:
    server = PromptServer(config)
    server.install_signal_handlers = lambda: None  # not the main thread
    return server


@dataclass
class StreamResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    ready: dict[str, Any] | None = None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def ends(self) -> list[dict[str, Any]]:
        return [e for e in self.of("action") if e["state"] == "end"]


def hello(width: int = 64, height: int = 48, fps: float = 30, **extra: Any) -> dict[str, Any]:
    return {
        "type": "hello",
        "protocol": 1,
        "camera_id": "cam-test",
        "width": width,
        "height": height,
        "fps": fps,
        "depth_units": 0.001,
        "encoding": "raw",
        **extra,
    }


def frame_messages(frames: np.ndarray, timestamps_us, encoding: str = "raw") -> list[bytes]:
    return [
        pack_frame(int(t), i, f, encoding)
        for i, (t, f) in enumerate(zip(timestamps_us, frames, strict=True))
    ]


async def run_stream(
    url: str,
    frames: np.ndarray | None = None,
    fps: float = 30,
    encoding: str = "raw",
    token: str | None = TOKEN,
    header_token: bool = True,
    messages: list[Any] | None = None,
    hello_message: dict[str, Any] | str | bytes | None = None,
    end: bool = True,
    timeout: float = 20,
    interval: float = 0.0,
) -> StreamResult:
    """Open a stream, send hello, then `messages` (bytes or dicts) or `frames` (`interval`
    seconds apart), then `end`; collect every event until the server closes."""
    result = StreamResult()
    headers = {"Authorization": f"Bearer {token}"} if token and header_token else {}
    if hello_message is None:
        h, w = frames.shape[1:] if frames is not None else (48, 64)
        hello_message = hello(w, h, fps, encoding=encoding)
        if token and not header_token:
            hello_message["token"] = token
    if messages is None:
        messages = frame_messages(frames, frame_timestamps_us(len(frames), fps) + T0_US, encoding)
    async with connect(url, additional_headers=headers, max_size=None, compression=None) as ws:

        async def receive() -> None:
            try:
                async for text in ws:
                    event = json.loads(text)
                    if event["type"] == "ready":
                        result.ready = event
                    result.events.append(event)
            except ConnectionClosed:
                pass

        reader = asyncio.create_task(receive())
        try:
            is_dict = isinstance(hello_message, dict)  # else a raw first message, sent as is
            await ws.send(json.dumps(hello_message) if is_dict else hello_message)
            for m in messages:
                await ws.send(json.dumps(m) if isinstance(m, dict) else m)
                if interval:
                    await asyncio.sleep(interval)
            if end:
                await ws.send(json.dumps({"type": "end"}))
        except ConnectionClosed:
            pass
        await asyncio.wait_for(reader, timeout)
        result.close_code = ws.close_code
        result.close_reason = ws.close_reason or ""
    return result


def upload(
    url: str,
    data: bytes,
    filename: str = "clip.npy",
    token: str | None = TOKEN,
    **params: Any,
):
    """POST /v1/detections with `data` as the multipart field `file`."""
    from tests.helpers.loopback import http

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.post(
        f"{url}/v1/detections",
        params=params,
        files={"file": (filename, data)},
        headers=headers,
        timeout=30,
    )


# Upload bodies


def npy_bytes(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, frames)
    return buf.getvalue()


def npz_of(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


async def collect(ws) -> list[dict[str, Any]]:
    """Every event until the server closes (with any code)."""
    events = []
    try:
        async for text in ws:
            events.append(json.loads(text))
    except ConnectionClosed:
        pass
    return events


class FrameClock:
    """A clock for a client that paces its frames to real time (`server.demo.stream_scene`'s
    `clock`): `monotonic` moves on one frame interval each time it is read, so the client's
    wait for the next frame's time is always over and it sends at once (the frames' own
    timestamps, which the server scores by, are unchanged)."""

    def __init__(self, fps: float) -> None:
        self._reads = itertools.count()
        self.fps = fps

    def monotonic(self) -> float:
        return next(self._reads) / self.fps


def reload(live: Any, model: Any = None, headers: dict[str, str] = ADMIN_AUTH) -> Any:
    """POST /v1/admin/reload (to `model`, or the configured bundle when None)."""
    from tests.helpers.loopback import http

    body = None if model is None else {"model": str(model)}
    return http.post(f"{live.url}/v1/admin/reload", json=body, headers=headers, timeout=60)
