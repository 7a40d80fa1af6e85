"""A small typed Python client for the detection server (design.md §9).

    client = Client("http://localhost:8000", token="...")
    result = client.upload("ward3.db3")                 # REST: detections of a whole video
    async for event in client.stream(frames, "ward3-bed2", fps=30):   # WebSocket: live events
        if isinstance(event, ActionEnd):
            print(event.label, event.start_s, event.end_s)

`frames` yields `(timestamp_us, uint16 [H, W] millimetres)`. The stream reduces them to the
model's rate and size from the server's `ready` message before sending (the same functions the
server uses, core.clip), so a stream costs the network a few kB a second; a person-crop
model's kept frames go at the camera's size (the server crops them to the person). Server
refusals and closes raise `ApiError` subclasses that carry the server's code, message and status
or close code.

A person-crop model needs each camera's empty-room depth (docs/api.md, *Camera references*):
`client.put_reference("ward3-bed2", depth)`, `get_reference`, `delete_reference`.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import secrets
import ssl
import zipfile
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from clients.sources import ThreadedFrames
from core.clip import ClipSpec, DepthPreprocessor, TimestampResampler
from core.depthfiles import DepthFileError, decode_png_depth
from core.events import (
    ActionEnd,
    ActionStart,
    End,
    Event,
    FramesDropped,
    Message,
    Score,
    Scores,
    ServerError,
    ServerWarning,
    TimestampGap,
    parse_event,
)
from core.wire import (
    Hello,
    Ready,
    WireError,
    encode_image,
    pack_frame,
    parse_json,
    parse_ready,
)

__all__ = [  # the stream's events come from core.events, re-exported as this client's API
    "ActionEnd", "ActionStart", "ApiError", "BadRequest", "Client", "ConnectionLost",
    "Detection", "Detections", "End", "Event", "FramesDropped", "Idle", "InternalError",
    "Ready", "Score", "Scores", "ServerError", "ServerWarning", "TimestampGap", "TooLarge",
    "TooManyStreams", "Unauthorized", "encode_reference", "event_message", "parse_event",
]  # fmt: skip

STREAM_PATH, DETECTIONS_PATH, MODEL_PATH = "/v1/stream", "/v1/detections", "/v1/model"
CAMERAS_PATH = "/v1/cameras"
UPLOAD_CHUNK = 1 << 20

# --- errors --------------------------------------------------------------------------------


class ApiError(Exception):
    """The server refused or ended a request, or could not be reached.

    `code` is the server's short name for the problem (`unauthorized`, `too_large`, ...),
    `status` the HTTP status of a refused request, `close_code` the WebSocket close code.
    """

    def __init__(
        self,
        message: str,
        code: str = "error",
        status: int | None = None,
        close_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.code, self.status, self.close_code = message, code, status, close_code

    def __str__(self) -> str:
        if self.status is not None:
            return f"{self.message} (HTTP {self.status})"
        if self.close_code is not None:
            return f"{self.message} (close code {self.close_code})"
        return self.message


class BadRequest(ApiError):
    """400 / 415 / 422 / close 4400: the server cannot use what was sent."""


class Unauthorized(ApiError):
    """401 / close 4401: a valid bearer token is required."""


class TooLarge(ApiError):
    """413 / close 4413: an upload or a frame over the server's limits."""


class TooManyStreams(ApiError):
    """Close 4429: the server is at its stream limit (or draining for a restart)."""


class Idle(ApiError):
    """Close 4408: nothing arrived for the server's idle timeout (or events were not read)."""


class InternalError(ApiError):
    """5xx / close 1011: the server failed; worth trying again later."""


class ConnectionLost(ApiError):
    """The server could not be reached, or the connection dropped without a reason."""


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 413: TooLarge, 415: BadRequest, 422: BadRequest}
_BY_CLOSE = {4400: BadRequest, 4401: Unauthorized, 4408: Idle, 4413: TooLarge,
             4429: TooManyStreams, 1011: InternalError}  # fmt: skip


# --- results and events ----------------------------------------------------------------------


@dataclass(frozen=True)
class Detection(Message):
    label: str
    class_id: int
    start_frame: int  # the video's own frame numbers, inclusive
    end_frame: int
    start_s: float  # from the first frame
    end_s: float  # exclusive
    confidence: float


@dataclass(frozen=True)
class Detections(Message):
    """The answer to an upload."""

    detections: tuple[Detection, ...]
    model: dict[str, Any]  # name, version
    video: dict[str, Any]  # format, frames, height, width, duration_s, clips
    timing_ms: dict[str, float]
    clip_scores: list[dict[str, Any]] | None  # with clip_scores=True


def event_message(event: Event) -> dict[str, Any]:
    """The server's JSON of an event, fields this client does not model included."""
    return event.to_message() if isinstance(event, Ready) else event.raw or event.to_message()


# --- the client ----------------------------------------------------------------------------


def _urls(url: str) -> tuple[str, str]:
    """`(http base, ws base)` from any of the server's URLs (http(s) or ws(s), with or without
    the endpoint path), so one setting serves both uploads and streams behind any prefix."""
    parts = urlsplit(url)
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"server URL must be http(s):// or ws(s)://host[:port], got {url!r}")
    path = parts.path.rstrip("/")
    for endpoint in (STREAM_PATH, DETECTIONS_PATH):
        path = path.removesuffix(endpoint)
    secure = parts.scheme in ("https", "wss")
    http = urlunsplit(("https" if secure else "http", parts.netloc, path, "", ""))
    ws = urlunsplit(("wss" if secure else "ws", parts.netloc, path, "", ""))
    return http, ws


class Client:
    """The detection server at `url` (`http://host:8000`, or its `ws://.../v1/stream` URL)."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 600.0) -> None:
        self.http_url, ws_base = _urls(url)
        self.ws_url = ws_base + STREAM_PATH
        self.token = token
        self.timeout_s = timeout_s  # how long an upload may take the server to answer

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def __repr__(self) -> str:  # never show the token
        return f"Client({self.http_url!r})"

    # --- REST -------------------------------------------------------------------------------

    def model(self) -> dict[str, Any]:
        """The model card: name, version, classes, clip spec, metrics, engine."""
        return self._request("GET", MODEL_PATH)

    def upload(
        self,
        video: str | Path | bytes,
        fps: float | None = None,
        clip_scores: bool = False,
        progress: Callable[[int, int], None] | None = None,
        filename: str | None = None,
        camera_id: str | None = None,
    ) -> Detections:
        """Detect actions in a whole video: a `.db3` / `.bag` recording, `.npy` / `.npz`, a zip
        of 16-bit PNGs, a folder of them (zipped on the fly), or such a file's bytes.

        `fps` is needed for `.npy`, PNGs and `.npz` without timing. `progress(sent, total)` is
        called as the body goes out.
        """
        name, size, chunks = _upload_source(video, filename)
        boundary = secrets.token_hex(16)
        safe = "".join(c for c in name if c.isprintable() and c not in '"\\') or "video"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe}"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        total = len(head) + size + len(tail)

        def body() -> Iterator[bytes]:
            sent = 0
            for chunk in (head, *chunks(), tail):
                yield chunk
                sent += len(chunk)
                if progress is not None:
                    progress(sent, total)

        params: dict[str, Any] = {"scores": "true"} if clip_scores else {}
        if fps is not None:
            params["fps"] = fps
        if camera_id is not None:  # whose empty-room reference a person-crop model uses
            params["camera_id"] = camera_id
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(total),
        }
        data = self._request("POST", DETECTIONS_PATH, params=params, headers=headers,
                             content=body())  # fmt: skip
        try:
            found = tuple(Detection.parse(d) for d in data["detections"])
            return Detections.parse(data, detections=found, clip_scores=data.get("clip_scores"))
        except (KeyError, TypeError, WireError) as e:
            raise ApiError(f"unexpected answer from the server: {e}", "bad_response") from e

    def put_reference(self, camera_id: str, depth: np.ndarray) -> dict[str, Any]:
        """Store `depth` (uint16 [H, W] millimetres, 0 = no reading, the camera's full frame)
        as `camera_id`'s empty-room reference; the server's answer says where it keeps it."""
        return self._request(
            "PUT", _reference_path(camera_id), content=encode_reference(depth),
            headers={"Content-Type": "image/png"},
        )  # fmt: skip

    def get_reference(self, camera_id: str) -> np.ndarray | None:
        """`camera_id`'s empty-room reference (uint16 [H, W] mm), or None if it has none."""
        r = self._response("GET", _reference_path(camera_id), not_found_ok=True)
        if r.status_code == 404:
            return None
        try:
            return decode_png_depth(r.content)
        except DepthFileError as e:
            raise ApiError(f"unexpected reference from the server: {e}", "bad_response") from e

    def delete_reference(self, camera_id: str) -> bool:
        """Forget `camera_id`'s reference; False when it had none."""
        r = self._response("DELETE", _reference_path(camera_id), not_found_ok=True)
        return r.status_code != 404

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        r = self._response(method, path, **kwargs)
        return r.json() if r.content else {}

    def _response(
        self, method: str, path: str, not_found_ok: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """The server's successful answer (or a 404 with `not_found_ok`); else raises the
        `ApiError` subclass for its status, with the server's code and message."""
        headers = {**self._headers(), **kwargs.pop("headers", {})}
        timeout = httpx.Timeout(30.0, read=self.timeout_s)
        try:
            r = httpx.request(method, self.http_url + path, headers=headers, timeout=timeout,
                              verify=_tls(), **kwargs)  # fmt: skip
        except httpx.TransportError as e:
            raise ConnectionLost(f"cannot reach {self.http_url}: {e}", "unreachable") from e
        if r.is_success or (not_found_ok and r.status_code == 404):
            return r
        try:
            error = r.json()["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "http_error", r.text[:200] or r.reason_phrase
        kind = _BY_STATUS.get(r.status_code, InternalError if r.status_code >= 500 else ApiError)
        raise kind(message, code, status=r.status_code)

    # --- WebSocket ---------------------------------------------------------------------------

    async def stream(
        self,
        frames: AsyncIterable[tuple[int, np.ndarray]] | Iterable[tuple[int, np.ndarray]],
        camera_id: str,
        fps: float,
        encoding: str = "zstd",
        flow_control: bool = False,
        open_timeout_s: float = 10.0,
    ) -> AsyncIterator[Event]:
        """Stream `frames` and yield the server's events: `Ready` first, `End` last.

        `fps` is the source's nominal rate. With `flow_control`, frames wait until the server
        has scored the clips before them, so a source faster than real time (a file sent as
        fast as possible) never overflows the server's queue; a live camera should not wait
        (the server drops its oldest frames under overload, and says so). Blocking iterables
        are read on a thread; pass a `clients.sources.ThreadedFrames` to reuse one source
        across reconnects. Raises an `ApiError` subclass when the stream ends otherwise.
        """
        owned = None
        if not isinstance(frames, AsyncIterable):
            frames = owned = ThreadedFrames(iter(frames))
        source = aiter(frames)
        try:
            ws = await connect(
                # The server ignores the query; load balancers can hash on it (docs/deploy.md).
                f"{self.ws_url}?{urlencode({'camera_id': camera_id})}",
                additional_headers=self._headers(),
                max_size=1 << 20,  # events are small
                compression=None,  # frames are compressed by choice (zstd/png), not twice
                open_timeout=open_timeout_s,
            )
        except (OSError, TimeoutError, InvalidHandshake) as e:
            raise ConnectionLost(f"cannot connect to {self.ws_url}: {e}", "unreachable") from e
        except InvalidURI as e:
            raise ValueError(f"bad stream URL {self.ws_url!r}: {e}") from e
        try:
            async with ws:
                first = await anext(source, None)
                if first is None:
                    return  # nothing (left) to send
                height, width = _check_frame(first[1])
                hello = Hello(camera_id, width, height, float(fps), encoding=encoding)
                ready = await _handshake(ws, hello, open_timeout_s)
                yield ready
                async for event in _session(ws, ready, first, source, encoding, flow_control):
                    yield event
        finally:
            if owned is not None:
                owned.close()


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's TLS context (its CA bundle, SSL_CERT_FILE and SSL_CERT_DIR honoured), made once a
    process: given none, httpx loads the CA bundle again for every request, about 0.1 CPU s,
    more than an upload's answer from a server on the same machine costs."""
    return httpx.create_ssl_context()


def _reference_path(camera_id: str) -> str:
    if not camera_id:
        raise ValueError("a camera id is needed (the name its streams give in hello)")
    return f"{CAMERAS_PATH}/{quote(camera_id, safe='')}/reference"


def encode_reference(depth: np.ndarray) -> bytes:
    """uint16 [H, W] mm -> the 16-bit single-channel PNG the server stores."""
    _check_frame(depth)
    return encode_image(depth, "png", level=6)  # one image: compress it well


def _upload_source(
    video: str | Path | bytes, filename: str | None
) -> tuple[str, int, Callable[[], Iterator[bytes]]]:
    """`(name, size, chunks)` of what to upload; a folder of PNGs is zipped in memory."""
    if isinstance(video, bytes | bytearray | memoryview):
        data = bytes(video)
        return filename or "video", len(data), lambda: iter([data])
    path = Path(video)
    if path.is_dir():
        pngs = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
        if not pngs:
            raise ValueError(f"{path}: no .png frames to upload")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNG is compressed
            for p in pngs:
                archive.write(p, p.name)
        return _upload_source(buffer.getvalue(), filename or f"{path.name}.zip")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as f:
            while chunk := f.read(UPLOAD_CHUNK):
                yield chunk

    return filename or path.name, path.stat().st_size, chunks


def _check_frame(image: Any) -> tuple[int, int]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint16 or image.ndim != 2:
        kind = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image)
        raise ValueError(f"frames must be uint16 [H, W] millimetres, got {kind}")
    return image.shape


def _closed_error(ws: ClientConnection, error: dict[str, Any] | None) -> ApiError:
    """The exception for a connection that closed before the stream's `end`."""
    close = ws.close_code
    code = error.get("code", "error") if error else (ws.close_reason or "closed")
    message = error.get("message", "") if error else ""
    kind = ConnectionLost if close is None else _BY_CLOSE.get(close, ConnectionLost)
    return kind(message or "the server closed the stream", str(code), close_code=close)


async def _handshake(ws: ClientConnection, hello: Hello, timeout_s: float) -> Ready:
    error = None
    try:
        await ws.send(json.dumps(hello.to_message()))
        async with asyncio.timeout(timeout_s):
            while True:
                message = parse_json(await ws.recv())
                if message["type"] != "error":
                    return parse_ready(message)
                error = message  # the close follows
    except ConnectionClosed:
        raise _closed_error(ws, error) from None
    except TimeoutError:
        raise ConnectionLost(f"no ready message within {timeout_s:g} s", "timeout") from None


class _FlowControl:
    """Holds the sender to at most `limit` kept frames past the last scored clip.

    Clip c is complete at kept frame `c * clip_step + clip_len`; the next clip needs
    `clip_step` more, so a limit above `clip_len + clip_step` never stalls the stream, and one
    below the server's queue (32 frames by default) never overflows it.
    """

    def __init__(self, spec: ClipSpec) -> None:
        self.spec = spec
        self.limit = spec.clip_len + 2 * spec.clip_step
        self.sent = self.covered = 0
        self.changed = asyncio.Condition()

    async def wait(self) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.sent < self.covered + self.limit)

    async def scored(self, clip: int, dropped: int = 0) -> None:
        async with self.changed:
            self.covered = clip * self.spec.clip_step + self.spec.clip_len + dropped
            self.changed.notify_all()


class _Reducer:
    """Source frames -> the model's kept frames at its size, stamped on the model's ticks.

    The server accepts frames at the model's size (ready.sizes); stamping each kept frame with
    its tick time makes the server's own resampler keep every one of them. Frames are reduced
    with the model's clip spec, its `fit` included (`core.clip.DepthPreprocessor`), so the
    server makes of a reduced frame exactly what it makes of the camera's frame. A person-crop
    model's kept frames go at the camera's size: the server crops each clip to the person's box
    in the camera's full frame (core.foreground), which a reduced frame no longer has.
    """

    def __init__(self, ready: Ready, height: int, width: int) -> None:
        spec = ready.clip
        self.resampler = TimestampResampler(spec.kept_fps)
        self.whole = spec.person_crop  # resampled, not reduced
        small = (spec.height, spec.width) in ready.sizes and not self.whole
        self.reduce = DepthPreprocessor(spec, height, width).to_millimetres if small else None

    def __call__(self, index: int, t: int, image: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        if self.reduce is None and not self.whole:  # a server that resamples full frames itself
            return [(t, index, image)]
        return [
            (self.resampler.tick_time(tick), i, kept if self.reduce is None else self.reduce(kept))
            for tick, (i, kept) in self.resampler.push(t, (index, image))
        ]


async def _session(ws, ready, first, source, encoding, flow_control) -> AsyncIterator[Event]:
    """After `ready`: send frames on a task, yield events until the server closes."""
    flow = _FlowControl(ready.clip) if flow_control else None
    sender = asyncio.create_task(_send(ws, ready, first, source, encoding, flow))
    error, ended, dropped = None, False, 0
    try:
        async for text in ws:
            message = parse_json(text)
            if message["type"] == "error":
                error = message
                continue
            event = parse_event(message)
            if isinstance(event, FramesDropped):
                dropped = event.total_dropped
            if isinstance(event, Scores) and flow is not None:
                await flow.scored(event.clip, dropped)
            if event is not None:
                yield event
            ended = ended or isinstance(event, End)
    except ConnectionClosed:
        pass
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    failure = None if sender.cancelled() else sender.exception()
    if failure is not None:
        raise failure  # the source failed: say why, not "connection closed"
    if not (ended and ws.close_code == 1000):
        raise _closed_error(ws, error)


async def _send(ws, ready, first, source, encoding, flow: _FlowControl | None) -> None:
    reduce = _Reducer(ready, *first[1].shape)
    index = 0

    async def frames():
        yield first
        async for frame in source:
            yield frame

    try:
        async for t, image in frames():
            _check_frame(image)
            for stamp, i, out in reduce(index, int(t), image):
                if flow is not None:
                    await flow.wait()
                    flow.sent += 1
                await ws.send(pack_frame(stamp, i % 2**32, out, encoding))
            index += 1
        await ws.send(json.dumps({"type": "end"}))
    except ConnectionClosed:
        return  # the receiving side reports why
    except Exception:
        await ws.close(1011, "client source failed")
        raise
