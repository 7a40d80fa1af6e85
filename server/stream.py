"""One live stream, `WS /v1/stream` (design.md §9, protocol in docs/api.md).

```
binary message --(size, header checks)--> bounded frame queue (drops the oldest)
  --> TimestampResampler (kept_fps) --> decode + DepthPreprocessor (kept frames only)
  --> clip buffer: every clip_step kept frames, the last clip_len are a clip
  --> visual-encoder batcher (shared by all streams) --> feature ring (last T_w features)
  --> sequence-encoder batcher over the ring --> the newest position's probabilities
  --> `scores` event --> core Segmenter --> `action` start/end events
```

Scores rule: when clip c completes, the sequence encoder runs over the features of clips
`max(0, c - T_w + 1) .. c` and clip c's probabilities are its output at the last position.
Each clip is encoded once; its feature is reused by the next T_w - 1 windows. A causal
sequence encoder gives exactly what it gives offline on that window; a bidirectional one
sees no future clips there (uploads average over full overlapping windows instead).

Three tasks per stream: `_receive` (WebSocket -> frame queue, never blocked by the model),
`_frames` (queue -> clips, submitted to the visual batcher at once) and `_clips` (in clip
order: feature -> window -> scores -> events). At most `MAX_PENDING_CLIPS` clips wait for the
model; beyond that `_frames` waits and the frame queue drops its oldest frames.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from core.clip import DepthPreprocessor, TimestampError, TimestampResampler, clip_source_span
from core.postprocess import SegmentEnd, Segmenter, SegmentStart
from core.realsense import to_millimetres
from core.wire import (
    HEADER,
    FrameTooLarge,
    Hello,
    Ready,
    WireError,
    decode_image,
    parse_hello,
    parse_json,
    unpack_header,
)
from server.service import Service

log = logging.getLogger("gd.server.stream")

MAX_PENDING_CLIPS = 4
WARNING_INTERVAL_S = 1.0
YIELD_EVERY = 8  # frames processed between yields to the event loop


class StreamError(Exception):
    """Ends a stream: an `error` event, then the close code."""

    def __init__(self, close: int, code: str, message: str) -> None:
        super().__init__(message)
        self.close, self.code, self.message = close, code, message


def _wire_error(e: WireError) -> StreamError:
    close = 4413 if isinstance(e, FrameTooLarge) else 4400
    return StreamError(close, e.code, str(e))


@dataclass
class _Frame:
    arrived: float  # time.monotonic() at receipt
    timestamp_us: int
    index: int
    payload: memoryview
    image: np.ndarray | None = None  # decoded and preprocessed once, if kept


async def serve(ws: WebSocket, service: Service) -> None:
    """The whole life of one stream; never raises."""
    await ws.accept()
    metrics, settings = service.metrics, service.settings
    if service.active_streams >= settings.max_streams or service.draining:
        metrics.streams_closed.labels("4429").inc()
        message = f"the server is at its limit of {settings.max_streams} streams"
        await _close(ws, StreamError(4429, "too_many_streams", message))
        return
    service.active_streams += 1
    metrics.streams.inc()
    error: StreamError | None = None
    gone = False
    try:
        hello = await _handshake(ws, service)
        await StreamSession(ws, service, hello).run()
    except StreamError as e:
        error = e
    except WebSocketDisconnect:
        gone = True
    except Exception:
        log.exception("stream failed")
        error = StreamError(1011, "internal_error", "internal server error")
    finally:
        service.active_streams -= 1
        metrics.streams.dec()
        code = 1001 if gone else error.close if error else 1000
        metrics.streams_closed.labels(str(code)).inc()
    if error is not None:
        log.info("stream closed %d: %s", error.close, error.code)
    if not gone:
        await _close(ws, error)


async def _close(ws: WebSocket, error: StreamError | None) -> None:
    """The `error` event (if any), then the close frame; the client may be gone or stuck."""
    if ws.application_state != WebSocketState.CONNECTED:
        return
    try:
        if error is not None and error.code != "not_reading":  # it would never arrive
            event = {"type": "error", "code": error.code, "message": error.message}
            async with asyncio.timeout(2):
                await ws.send_text(json.dumps(event))
        close, reason = (1000, "") if error is None else (error.close, error.code)
        async with asyncio.timeout(2):
            await ws.close(close, reason=reason[:120])
    except Exception:  # gone, or not reading: nothing left to tell
        pass


async def _receive(ws: WebSocket, timeout: float) -> dict[str, Any]:
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
    # races a completed receive, and the stream's tasks would never stop.
    try:
        async with asyncio.timeout(timeout):
            message = await ws.receive()
    except TimeoutError:
        raise StreamError(4408, "idle", f"nothing received for {timeout:g} s") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    return message


async def _handshake(ws: WebSocket, service: Service) -> Hello:
    settings = service.settings
    message = await _receive(ws, settings.idle_timeout_s)
    if message.get("text") is None:
        raise StreamError(4400, "bad_request", "the first message must be a JSON hello (text)")
    try:
        data = parse_json(message["text"])
    except WireError as e:
        raise _wire_error(e) from None
    # Before the hello is validated: a client without a token learns nothing about it.
    in_header = service.auth.accepts_header(ws.headers.get("authorization"))
    token = data.get("token") if isinstance(data.get("token"), str) else None
    if not (in_header or service.auth.accepts(token)):
        raise StreamError(4401, "unauthorized", "a valid bearer token is required")
    try:
        hello = parse_hello(data)
    except WireError as e:
        raise _wire_error(e) from None
    frame_bytes = HEADER.size + 2 * hello.width * hello.height
    if frame_bytes > settings.max_frame_bytes:
        raise StreamError(
            4413,
            "frame_too_large",
            f"{hello.width}x{hello.height} frames ({frame_bytes} bytes) exceed the server's "
            f"limit of {settings.max_frame_bytes} bytes",
        )
    return hello


class StreamSession:
    def __init__(self, ws: WebSocket, service: Service, hello: Hello) -> None:
        self.ws, self.service, self.hello = ws, service, hello
        self.settings, self.metrics = service.settings, service.metrics
        bundle = service.bundle
        self.spec, self.classes = bundle.clip, bundle.classes
        spec = self.spec
        self.sizes = [(hello.height, hello.width)]
        if (spec.height, spec.width) not in self.sizes:
            self.sizes.append((spec.height, spec.width))  # frames the client reduced itself
        self.preprocessors = {size: DepthPreprocessor(spec, *size) for size in self.sizes}
        pixels = 2 * max(h * w for h, w in self.sizes)
        # Compressed frames may come out a little larger than raw ones (noise does not compress).
        self.max_message = min(
            self.settings.max_frame_bytes, HEADER.size + pixels + pixels // 64 + 1024
        )
        self.resampler = TimestampResampler(spec.kept_fps)
        self.queue: deque[_Frame | None] = deque()  # None marks the end of the stream
        self.queue_ready = asyncio.Event()
        self.clips: asyncio.Queue = asyncio.Queue(MAX_PENDING_CLIPS)
        self.kept: deque[_Frame] = deque(maxlen=spec.clip_len)
        self.n_kept = 0
        self.features: deque[np.ndarray] = deque(maxlen=spec.window)
        self.segmenter = Segmenter(bundle.activity_threshold)
        self.received = self.dropped = self.dropped_unreported = 0
        self.last_warning = 0.0
        self.send_lock = asyncio.Lock()

    def ready(self) -> Ready:
        b = self.service.bundle
        return Ready(
            model={"name": b.name, "version": b.version},
            clip=self.spec,
            classes=b.classes,
            activity_threshold=b.activity_threshold,
            causal=b.causal,
            sizes=tuple(self.sizes),
            max_frame_bytes=self.max_message,
        )

    async def send(self, event: dict[str, Any]) -> None:
        async with self.send_lock:
            try:
                async with asyncio.timeout(self.settings.send_timeout_s):
                    await self.ws.send_text(json.dumps(event))
            except TimeoutError:
                raise StreamError(
                    4408, "not_reading", "the client stopped reading events"
                ) from None

    async def run(self) -> None:
        await self.send(self.ready().to_message())
        log.info("stream %s open: %r", self.hello.camera_id, self.hello)
        tasks = [
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._frames()),
            clips := asyncio.create_task(self._clips()),
        ]
        try:
            pending = set(tasks)
            while clips in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # re-raises what ended the stream
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            while not self.clips.empty():  # clips still queued for the model: not needed now
                item = self.clips.get_nowait()
                if item is not None:
                    item[1].cancel()
        log.info(
            "stream %s ended: %d frames, %d dropped, %d clips",
            self.hello.camera_id, self.received, self.dropped, self.segmenter.next_clip,
        )  # fmt: skip

    # --- receiving ---------------------------------------------------------------------

    async def _receive(self) -> None:
        while True:
            message = await _receive(self.ws, self.settings.idle_timeout_s)
            data = message.get("bytes")
            if data is not None:
                self._offer(data)
                continue
            try:
                control = parse_json(message.get("text") or "")
            except WireError as e:
                raise _wire_error(e) from None
            if control["type"] != "end":
                raise StreamError(
                    4400, "bad_request", f"unexpected message type {control['type']!r}"
                )
            self.queue.append(None)
            self.queue_ready.set()
            return  # events still flow; the stream closes when the last clip is scored

    def _offer(self, data: bytes) -> None:
        if len(data) > self.max_message:
            raise StreamError(
                4413,
                "frame_too_large",
                f"frame message of {len(data)} bytes exceeds {self.max_message}",
            )
        try:
            timestamp_us, index, payload = unpack_header(data)
        except WireError as e:
            raise _wire_error(e) from None
        self.received += 1
        self.metrics.frames.inc()
        self.queue.append(_Frame(time.monotonic(), timestamp_us, index, payload))
        if len(self.queue) > self.settings.queue_frames:
            self.queue.popleft()
            self.dropped += 1
            self.dropped_unreported += 1
            self.metrics.drops.inc()
        self.queue_ready.set()

    # --- frames -> clips -------------------------------------------------------------

    async def _frames(self) -> None:
        since_yield = 0
        while True:
            while not self.queue:
                self.queue_ready.clear()
                await self.queue_ready.wait()
            frame = self.queue.popleft()
            if frame is None:
                await self.clips.put(None)
                return
            for clip in self._frame(frame):
                await self.clips.put(clip)  # waits while MAX_PENDING_CLIPS are in the model
            if self.dropped_unreported:
                await self._warn_drops()
            since_yield += 1
            if since_yield >= YIELD_EVERY:  # let the other streams' frames through
                since_yield = 0
                await asyncio.sleep(0)

    def _frame(self, frame: _Frame) -> list[tuple]:
        """Resample one frame; returns `(clip, future, frame)` for each clip it completes."""
        try:
            ticks = self.resampler.push(frame.timestamp_us, frame)
        except TimestampError as e:
            raise StreamError(4400, "bad_timestamp", str(e)) from None
        out = []
        for _, kept in ticks:
            self.kept.append(self._prepare(kept))
            self.n_kept += 1
            n, spec = self.n_kept, self.spec
            if n >= spec.clip_len and (n - spec.clip_len) % spec.clip_step == 0:
                clip = np.stack([f.image for f in self.kept])
                c = (n - spec.clip_len) // spec.clip_step
                out.append((c, self.service.visual.submit(clip), frame))
        return out

    def _prepare(self, frame: _Frame) -> _Frame:
        """Decode and preprocess a kept frame (once: a gap repeats the same frame)."""
        if frame.image is None:
            try:
                image = decode_image(frame.payload, self.hello.encoding, self.sizes)
            except WireError as e:
                raise _wire_error(e) from None
            if self.hello.depth_units != 0.001:
                image = to_millimetres(image, self.hello.depth_units)
            frame.image = self.preprocessors[image.shape](image)
            frame.payload = memoryview(b"")  # the bytes are no longer needed
        return frame

    async def _warn_drops(self) -> None:
        now = time.monotonic()
        if now - self.last_warning < WARNING_INTERVAL_S:
            return
        self.last_warning = now
        n, self.dropped_unreported = self.dropped_unreported, 0
        await self.send({
            "type": "warning",
            "code": "frames_dropped",
            "message": f"server overloaded: dropped the {n} oldest queued frame(s)",
            "dropped": n,
            "total_dropped": self.dropped,
        })  # fmt: skip

    # --- clips -> events -------------------------------------------------------------

    async def _clips(self) -> None:
        while (item := await self.clips.get()) is not None:
            c, feature_future, frame = item
            self.features.append(await feature_future)
            window = np.stack(self.features)
            probs = (await self.service.sequence.submit(window))[-1]
            await self.send(self._scores_event(c, probs, frame))
            self.metrics.clips.inc()
            self.metrics.clip_latency.observe(time.monotonic() - frame.arrived)
            for event in self.segmenter.push(probs):
                await self.send(self._action_event(event))
        for event in self.segmenter.flush():
            await self.send(self._action_event(event))
        await self.send({
            "type": "end",
            "clips": self.segmenter.next_clip,
            "frames_received": self.received,
            "frames_dropped": self.dropped,
        })  # fmt: skip

    def _span(self, first: int, last: int) -> dict[str, Any]:
        """Frames, seconds and the client's timestamps covered by clips first..last."""
        spec = self.spec
        start_frame, _ = clip_source_span(spec, first)
        _, end_frame = clip_source_span(spec, last)
        return {
            "start_frame": int(start_frame),
            "end_frame": int(end_frame),
            "start_s": start_frame / spec.source_fps,
            "end_s": (end_frame + 1) / spec.source_fps,
            "start_timestamp_us": self.resampler.tick_time(first * spec.clip_step),
            "end_timestamp_us": self.resampler.tick_time(last * spec.clip_step + spec.clip_len),
        }

    def _scores_event(self, c: int, probs: np.ndarray, frame: _Frame) -> dict[str, Any]:
        k = min(self.settings.top_k, len(probs) - 1)
        top = np.argsort(-probs[1:], kind="stable")[:k] + 1
        return {
            "type": "scores",
            "clip": c,
            **self._span(c, c),
            "activity": float(1.0 - probs[0]),
            "top": [
                {"label": self.classes[i], "class_id": int(i), "score": float(probs[i])}
                for i in top
            ],
            # the frame whose arrival completed the clip: latency is measured from it
            "frame_index": frame.index,
            "timestamp_us": frame.timestamp_us,
        }

    def _action_event(self, event: SegmentStart | SegmentEnd) -> dict[str, Any]:
        if isinstance(event, SegmentStart):
            span = self._span(event.clip, event.clip)
            return {
                "type": "action",
                "state": "start",
                "label": self.classes[event.class_id],
                "class_id": event.class_id,
                "confidence": event.confidence,
                "clip": event.clip,
                "start_frame": span["start_frame"],
                "start_s": span["start_s"],
                "start_timestamp_us": span["start_timestamp_us"],
            }
        seg = event.segment
        return {
            "type": "action",
            "state": "end",
            **seg.to_detection(self.spec, self.classes),
            "first_clip": seg.first_clip,
            "last_clip": seg.last_clip,
            "start_timestamp_us": self._span(seg.first_clip, seg.last_clip)["start_timestamp_us"],
            "end_timestamp_us": self._span(seg.first_clip, seg.last_clip)["end_timestamp_us"],
        }
