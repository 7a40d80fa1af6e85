"""One live stream, `WS /v1/stream` (design.md §9, protocol in docs/api.md).

```
binary message --(size, header checks)--> bounded frame queue (drops the oldest)
  --> TimestampResampler (kept_fps) --> decode + DepthPreprocessor (kept frames only)
  --> clip buffer: every clip_step kept frames, the last clip_len are a clip
      (a person-crop model: full frames, each clip cropped to its person box against the
      camera's empty-room reference, core/foreground.py, then preprocessed)
  --> visual-encoder batcher (shared by all streams) --> feature ring (last T_w features)
  --> sequence-encoder batcher over the ring --> the newest position's probabilities
  --> `scores` event --> core Segmenter --> `action` start/end events
```

Gaps: a timestamp jump over `max_gap_s` starts a new segment instead of resampling across it
(which would synthesize a clip per clip period of the gap). The open action ends, the resampler,
clip buffer and feature ring start afresh, a `timestamp_gap` warning says so, and clip numbers
go on counting. So the clips a frame can make are bounded by `max_gap_s`, not by its timestamp.

Scores rule: when clip e completes, the sequence encoder runs over the features of clips
`max(0, e - T_w + 1) .. e` (of its segment). With a score delay d (clips, 0 by default),
that run gives the scores of clip c = e - d, from its position in the window; at the end of
the stream or a segment, the last window gives those of the clips still waiting. So with
d = 0 clip c's scores come at once from the last position (a causal sequence encoder gives
exactly what it gives offline), and with d > 0 a bidirectional encoder sees d future clips,
for d clip steps of latency. Each clip is encoded once; its feature is reused by the next
T_w - 1 windows.

Hot reload (server/service.py swaps the server's engine): a stream checks the engine as each
clip completes. If the new model has the same clip spec (same frames, same preprocessing), the
clip goes to it, and when the scoring side reaches that clip it switches as at a gap: the old
window's waiting clips are scored, open actions end, the window and segmenter restart on the
new model, a `model_switched` warning says so; clip numbers go on. Otherwise the stream cannot
switch (its resampling, sizes and preprocessing are the old model's) and finishes on the old
model, after a `model_kept` warning. Every `scores` event names the version that scored it.

Three tasks per stream: `_receive` (WebSocket -> frame queue, never blocked by the model),
`_frames` (queue -> clips, submitted to the visual batcher at once) and `_clips` (in clip
order: feature -> window -> scores -> events; a `_Gap` between two segments' clips). At most
`MAX_PENDING_CLIPS` clips wait for the model; beyond that `_frames` waits and the frame queue
drops its oldest frames.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from core.clip import (
    ClipSpec,
    DepthPreprocessor,
    TimestampError,
    TimestampResampler,
    clips_span,
)
from core.events import (
    ActionEnd,
    ActionStart,
    End,
    Event,
    FramesDropped,
    Score,
    Scores,
    ServerError,
    ServerWarning,
    TimestampGap,
)
from core.foreground import crop_clip_mm
from core.limits import MILLIMETRES
from core.postprocess import SegmentEnd, Segmenter, SegmentStart
from core.realsense import to_millimetres
from core.wire import (
    HEADER,
    Hello,
    MessageTooLarge,
    Ready,
    WireError,
    decode_image,
    parse_hello,
    parse_json,
    unpack_header,
)
from server import querytokens
from server.engine import Engine
from server.events.references import References, reference_problem
from server.service import Service
from server.service import check_score_delay as check_score_delay  # importable here too

log = logging.getLogger("gd.server.stream")

MAX_PENDING_CLIPS = 4
WARNING_INTERVAL_S = 1.0
YIELD_EVERY = 8  # frames processed between yields to the event loop


def latency_s(spec: ClipSpec, delay: int) -> float:
    """Seconds from the start of a clip's span to the end of the span of the clip `delay`
    later, when the clip's scores are due (model time excluded). Resampling adds nothing to
    it: the last tick of a clip is decided by the first camera frame at or after it, which
    comes before the span ends for any camera at least as fast as the model's rate."""
    return (spec.clip_len + delay * spec.clip_step) / spec.kept_fps


def streaming_card(service: Service) -> dict[str, Any]:
    """What a stream gets unless its hello says otherwise (for `/v1/model`)."""
    spec, delay = service.bundle.clip, service.score_delay
    return {
        "score_delay": delay,
        "max_score_delay": spec.window - 1,
        "latency_s": latency_s(spec, delay),
    }


def pace_delay(kept: int, elapsed_s: float, kept_fps: float, speed: float, burst_s: float) -> float:
    """Seconds to wait so that `kept` frames (at `kept_fps`) stay within `burst_s` of video
    plus `speed` x the `elapsed_s` of real time the stream has been open; 0 when within.

    Timestamps cost the client nothing and compressed frames little, so without this a
    stream could demand the work of hours of video (decodes, clips) in seconds.
    """
    ahead_s = kept / kept_fps - burst_s - speed * elapsed_s
    return max(0.0, ahead_s / speed)


class StreamError(Exception):
    """Ends a stream: an `error` event, then the close code."""

    def __init__(self, close: int, code: str, message: str) -> None:
        super().__init__(message)
        self.close, self.code, self.message = close, code, message


def _wire_error(e: WireError) -> StreamError:
    close = 4413 if isinstance(e, MessageTooLarge) else 4400
    return StreamError(close, e.code, str(e))


@dataclass
class _Frame:
    arrived: float  # time.monotonic() at receipt
    timestamp_us: int
    index: int
    payload: memoryview
    image: np.ndarray | None = None  # decoded and preprocessed once, if kept


@dataclass
class _Segment:
    """A run of frames without a timestamp gap: its own resampling grid and clip buffer."""

    first_clip: int  # the stream-wide number of its first clip
    offset_frames: int  # source frames (at the model's rate) from the stream's first frame
    resampler: TimestampResampler
    kept: deque[np.ndarray]  # the last clip_len kept frames, preprocessed
    n_kept: int = 0


@dataclass
class _Gap:
    """Queued between the clips of two segments."""

    segment: _Segment  # the new one
    gap_us: int
    frame: _Frame  # the first frame after the gap


async def serve(ws: WebSocket, service: Service) -> None:
    """The whole life of one stream; never raises."""
    await ws.accept()
    metrics, settings = service.metrics, service.settings
    if keys := querytokens.sensitive_keys(ws.scope.get("query_string", b"")):
        metrics.streams_closed.labels("4400").inc()
        await _close(ws, StreamError(4400, "token_in_url", querytokens.refusal_message(keys)))
        return
    if service.active_streams >= settings.max_streams or service.draining:
        metrics.streams_closed.labels("4429").inc()
        message = f"the server is at its limit of {settings.max_streams} streams"
        await _close(ws, StreamError(4429, "too_many_streams", message))
        return
    service.active_streams += 1
    metrics.streams.inc()
    error: StreamError | None = None
    gone = False
    session: StreamSession | None = None
    try:
        hello = await _handshake(ws, service)
        session = StreamSession(ws, service, hello, ws.app.state.references)
        await session.run()
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
    if session is not None and session.announced:
        # After the stream count: listeners (the event store) may take a while, and the camera
        # reconnecting meanwhile must not be refused as one stream too many.
        await service.bus.disconnected(session.hello.camera_id, session.received, session.dropped)
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
            event = ServerError(error.code, error.message)
            async with asyncio.timeout(2):
                await ws.send_text(json.dumps(event.to_message()))
        close, reason = (1000, "") if error is None else (error.close, error.code)
        async with asyncio.timeout(2):
            await ws.close(close, reason=reason[:120])
    except Exception:  # gone, or not reading: nothing left to tell
        pass


async def _receive(ws: WebSocket, timeout: float) -> MutableMapping[str, Any]:
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
        if len(message.get("bytes") or b"") > settings.max_frame_bytes:
            raise StreamError(
                4413,
                "message_too_large",
                f"message of {len(message['bytes'])} bytes exceeds {settings.max_frame_bytes}",
            )
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
    if hello.score_delay is not None:
        try:
            check_score_delay(hello.score_delay, service.bundle.clip)
        except ValueError as e:
            raise StreamError(4400, "bad_request", str(e)) from None
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
    def __init__(
        self, ws: WebSocket, service: Service, hello: Hello, references: References
    ) -> None:
        self.ws, self.service, self.hello, self.references = ws, service, hello, references
        self.settings, self.metrics = service.settings, service.metrics
        # The model the frames side cuts clips for, and the one the clips side scores with:
        # both the server's at the start; they differ for a moment after a reload.
        self.clip_engine = self.score_engine = service.engine
        bundle = self.score_engine.bundle
        self.spec, self.classes = bundle.clip, bundle.classes
        self.told_kept: Engine | None = None  # the newer model a `model_kept` warning named
        spec = self.spec
        self.sizes = [(hello.height, hello.width)]
        # A person-crop model crops each clip out of the camera's full frames (kept at camera
        # size until their clip is complete): a client must not reduce them itself.
        if (spec.height, spec.width) not in self.sizes and not spec.person_crop:
            self.sizes.append((spec.height, spec.width))  # frames the client reduced itself
        self.preprocessors = {size: DepthPreprocessor(spec, *size) for size in self.sizes}
        self.normalize = DepthPreprocessor(spec, spec.height, spec.width)  # cropped clips (mm)
        self.reference_state = "ok"  # else the code of the reference warning last sent
        self.reference_warning: ServerWarning | None = None  # to send
        pixels = 2 * max(h * w for h, w in self.sizes)
        # Compressed frames may come out a little larger than raw ones (noise does not compress).
        self.max_message = min(
            self.settings.max_frame_bytes, HEADER.size + pixels + pixels // 64 + 1024
        )
        # frames side (_frames): the segment being cut into clips
        self.segment = self._segment(first_clip=0, offset_frames=0)
        self.n_clips = 0
        self.n_ticks = 0  # kept frames, repeats included: the work done, whatever the bytes
        self.started = time.monotonic()
        self.t0_us = self.last_us = -1  # first and last frame timestamps, once there are frames
        # Never below two kept-frame periods: frames a client reduced to the model's rate
        # are that far apart.
        self.max_gap_us = max(self.settings.max_gap_s * 1e6, 2 * self.segment.resampler.period_us)
        # clips side (_clips): the segment whose clips are being scored
        self.scored = self.segment
        self.queue: deque[_Frame | None] = deque()  # None marks the end of the stream
        self.queue_ready = asyncio.Event()
        self.clips: asyncio.Queue = asyncio.Queue(MAX_PENDING_CLIPS)
        self.features: deque[np.ndarray] = deque(maxlen=spec.window)
        self.segmenter = Segmenter(bundle.activity_threshold)
        self.delay = self.service.score_delay if hello.score_delay is None else hello.score_delay
        check_score_delay(self.delay, spec)  # the server's own setting: checked at start-up
        self.delayed: deque[tuple[int, _Frame]] = deque()  # clips scored, not yet sent
        self.window_probs = np.empty((0, 0))  # the newest window's output [len, C]
        self.window_end = -1  # the clip it ends with
        self.received = self.dropped = self.dropped_unreported = 0
        self.last_warning = 0.0
        self.send_lock = asyncio.Lock()
        self.announced = False  # the bus was told this stream is connected

    def _segment(self, first_clip: int, offset_frames: int) -> _Segment:
        resampler = TimestampResampler(self.spec.kept_fps)
        return _Segment(first_clip, offset_frames, resampler, deque(maxlen=self.spec.clip_len))

    def ready(self) -> Ready:
        b = self.score_engine.bundle
        return Ready(
            model={"name": b.name, "version": b.version},
            clip=self.spec,
            classes=b.classes,
            activity_threshold=b.activity_threshold,
            causal=b.causal,
            sizes=tuple(self.sizes),
            max_frame_bytes=self.max_message,
            score_delay=self.delay,
            latency_s=latency_s(self.spec, self.delay),
            reference=self.references.get(self.hello.camera_id) is not None,
        )

    @property
    def model(self) -> dict[str, str]:
        """The model of this stream's events now: the one that scored its latest clip."""
        b = self.score_engine.bundle
        return {"name": b.name, "version": b.version}

    async def send(self, event: Event) -> None:
        await self.service.bus.event(self.hello.camera_id, event, self.model)
        async with self.send_lock:
            try:
                async with asyncio.timeout(self.settings.send_timeout_s):
                    await self.ws.send_text(json.dumps(event.to_message()))
            except TimeoutError:
                raise StreamError(
                    4408, "not_reading", "the client stopped reading events"
                ) from None

    async def run(self) -> None:
        await self.send(self.ready())
        log.info("stream %s open: %r", self.hello.camera_id, self.hello)
        await self.service.bus.connected(self.hello.camera_id, self.hello, self.model)
        self.announced = True  # so `serve` tells the bus when it ends
        if self.spec.person_crop:
            self._reference()  # a warning now if the camera has none (or one of another size)
            await self._send_reference_warning()
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
                if isinstance(item, tuple):  # not a _Gap or the end marker
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
            await self._send_reference_warning()
            if self.dropped_unreported:
                await self._warn_drops()
            since_yield += 1
            if delay := self._pace_delay():  # ahead of its allowance: the queue fills, then drops
                since_yield = 0
                await asyncio.sleep(delay)
            elif since_yield >= YIELD_EVERY:  # let the other streams' frames through
                since_yield = 0
                await asyncio.sleep(0)

    def _pace_delay(self) -> float:
        s, elapsed = self.settings, time.monotonic() - self.started
        return pace_delay(
            self.n_ticks, elapsed, self.spec.kept_fps, s.max_stream_speed, s.stream_burst_s
        )

    def _frame(self, frame: _Frame) -> list[tuple | _Gap]:
        """Resample one frame; returns `(clip, future, frame)` for each clip it completes,
        after a `_Gap` if it starts a new segment."""
        out: list[tuple | _Gap] = []
        t = frame.timestamp_us
        if self.t0_us < 0:
            self.t0_us = t
        elif t - self.last_us > self.max_gap_us:
            offset = round((t - self.t0_us) * self.spec.source_fps / 1e6)
            self.segment = self._segment(self.n_clips, offset)
            out.append(_Gap(self.segment, t - self.last_us, frame))
        seg, spec = self.segment, self.spec
        try:
            ticks = seg.resampler.push(t, frame)
        except TimestampError as e:
            raise StreamError(4400, "bad_timestamp", str(e)) from None
        self.last_us = t
        self.n_ticks += len(ticks)
        for _, kept in ticks:
            seg.kept.append(self._prepare(kept))
            seg.n_kept += 1
            n = seg.n_kept
            if n >= spec.clip_len and (n - spec.clip_len) % spec.clip_step == 0:
                clip = np.stack(seg.kept)
                if spec.person_crop:
                    clip = self.normalize(crop_clip_mm(clip, self._reference(), spec))
                engine = self._next_clip_engine()
                feature = self.service.visual.submit(clip, engine.encode_clips)
                out.append((self.n_clips, feature, frame, engine))
                self.n_clips += 1
        return out

    def _next_clip_engine(self) -> Engine:
        """The server's newest model if it reads this stream's clips as they are cut (the same
        clip spec), else the one the stream has."""
        newest = self.service.engine
        if newest is not self.clip_engine and newest.bundle.clip == self.spec:
            self.clip_engine = newest
        return self.clip_engine

    def _prepare(self, frame: _Frame) -> np.ndarray:
        """Decode and preprocess a kept frame (once: a gap repeats the same frame)."""
        if frame.image is None:
            try:
                image = decode_image(frame.payload, self.hello.encoding, self.sizes)
            except WireError as e:
                raise _wire_error(e) from None
            if self.hello.depth_units != MILLIMETRES:
                image = to_millimetres(image, self.hello.depth_units)
            reduce = self.preprocessors[image.shape]
            # a person-crop model's clips are cropped from full frames once complete
            frame.image = image if self.spec.person_crop else reduce(image)
            if self.service.previews is not None:  # --preview: the newest, in memory only
                preview = reduce(image) if self.spec.person_crop else frame.image
                self.service.previews.keep(self.hello.camera_id, preview, self.spec)
            frame.payload = memoryview(b"")  # the bytes are no longer needed
        return frame.image

    def _reference(self) -> np.ndarray | None:
        """The camera's empty-room reference for the clip being cut: the newest one put (a
        dictionary lookup), or None (whole frames) if it has none or one of another size. A
        warning is due when that changes for the worse."""
        camera_id, size = self.hello.camera_id, (self.hello.height, self.hello.width)
        reference = self.references.get(camera_id)
        problem = reference_problem(reference, camera_id, size)
        state = "ok" if problem is None else problem[0]
        if state != self.reference_state:
            self.reference_state = state
            if problem is not None:
                self.reference_warning = ServerWarning(*problem)
        return None if reference is None or problem is not None else reference.image

    async def _send_reference_warning(self) -> None:
        if self.reference_warning is not None:
            warning, self.reference_warning = self.reference_warning, None
            await self.send(warning)

    async def _warn_drops(self) -> None:
        now = time.monotonic()
        if now - self.last_warning < WARNING_INTERVAL_S:
            return
        self.last_warning = now
        n, self.dropped_unreported = self.dropped_unreported, 0
        message = (
            f"dropped the {n} oldest queued frame(s): the server is overloaded, or the "
            f"stream runs faster than {self.settings.max_stream_speed:g}x real time"
        )
        await self.send(FramesDropped(message, dropped=n, total_dropped=self.dropped))

    # --- clips -> events -------------------------------------------------------------

    async def _clips(self) -> None:
        while (item := await self.clips.get()) is not None:
            if isinstance(item, _Gap):
                await self._flush_delayed()
                await self._new_segment(item)
                continue
            c, feature_future, frame, engine = item
            if engine is not self.score_engine:
                await self._switch(engine, c)
            elif self._kept_from_newer():
                await self._tell_kept()
            self.features.append(await feature_future)
            window = np.stack(self.features)
            self.window_probs = await self.service.sequence.submit(window, engine.score_windows)
            self.window_end = c
            self.delayed.append((c, frame))
            if len(self.delayed) > self.delay:
                await self._score(*self.delayed.popleft())
        await self._flush_delayed()
        for event in self.segmenter.flush():
            await self.send(self._action_event(event))
        await self.send(End(self.segmenter.next_clip, self.received, self.dropped))

    async def _score(self, c: int, frame: _Frame) -> None:
        """Clip c's scores from its position in the newest window, and the events they make."""
        probs = self.window_probs[len(self.window_probs) - 1 - (self.window_end - c)]
        await self.send(self._scores_event(c, probs, frame))
        self.metrics.clips.inc()
        self.metrics.clip_latency.observe(time.monotonic() - frame.arrived)
        for event in self.segmenter.push(probs):
            await self.send(self._action_event(event))

    async def _flush_delayed(self) -> None:
        """End of the stream or of a segment: the clips still waiting, from the last window."""
        while self.delayed:
            await self._score(*self.delayed.popleft())

    async def _new_segment(self, gap: _Gap) -> None:
        """Between segments: close the open action, forget the old window, say why."""
        for event in self.segmenter.flush():
            await self.send(self._action_event(event))
        threshold = self.score_engine.bundle.activity_threshold
        self.segmenter = Segmenter(threshold, gap.segment.first_clip)
        self.features.clear()
        self.scored = gap.segment
        gap_s = gap.gap_us / 1e6
        message = (
            f"timestamps jumped {gap_s:.3f} s (more than {self.max_gap_us / 1e6:g} s): "
            f"a new segment starts at clip {gap.segment.first_clip}; the gap is not scored"
        )
        frame = gap.frame
        warning = TimestampGap(
            message, gap_s, gap.segment.first_clip, frame.index, frame.timestamp_us
        )
        await self.send(warning)

    async def _switch(self, engine: Engine, c: int) -> None:
        """Clip c is the first of a newer model (same clip spec): its features do not mix with
        the old model's, so the scores restart as after a gap while clips and frames go on."""
        await self._flush_delayed()
        for event in self.segmenter.flush():
            await self.send(self._action_event(event))
        old, new = self.score_engine.bundle, engine.bundle
        self.score_engine, self.classes = engine, new.classes
        self.segmenter = Segmenter(new.activity_threshold, c)
        self.features.clear()
        message = (
            f"the server now serves {new.name} {new.version} (was {old.name} {old.version}): "
            f"it scores this stream from clip {c} on, its window restarting there"
        )
        await self.send(ServerWarning("model_switched", message))

    def _kept_from_newer(self) -> bool:
        """The server serves a newer model this stream cannot switch to, not yet told."""
        newest = self.service.engine
        return (
            newest is not self.score_engine
            and newest is not self.told_kept
            and newest.bundle.clip != self.spec
        )

    async def _tell_kept(self) -> None:
        """Once per newer model this stream cannot switch to (another clip spec)."""
        newest = self.service.engine
        self.told_kept = newest
        new, mine = newest.bundle, self.score_engine.bundle
        message = (
            f"the server now serves {new.name} {new.version}, whose clip spec differs from "
            f"this stream's: the stream stays on {mine.name} {mine.version} until it closes; "
            "reconnect to use the new model"
        )
        await self.send(ServerWarning("model_kept", message))

    def _span(self, first: int, last: int) -> dict[str, Any]:
        """Frames, seconds and the client's timestamps covered by clips first..last (of the
        segment being scored). Frames and seconds count from the stream's first frame."""
        spec, seg = self.spec, self.scored
        a, b = first - seg.first_clip, last - seg.first_clip  # within the segment
        return {
            **asdict(clips_span(spec, a, b, seg.offset_frames)),
            "start_timestamp_us": seg.resampler.tick_time(a * spec.clip_step),
            "end_timestamp_us": seg.resampler.tick_time(b * spec.clip_step + spec.clip_len),
        }

    def _scores_event(self, c: int, probs: np.ndarray, frame: _Frame) -> Scores:
        k = min(self.settings.top_k, len(probs) - 1)
        top = np.argsort(-probs[1:], kind="stable")[:k] + 1
        return Scores(
            clip=c,
            **self._span(c, c),
            activity=float(1.0 - probs[0]),
            top=tuple(Score(self.classes[i], int(i), float(probs[i])) for i in top),
            # the frame whose arrival completed the clip: latency is measured from it
            frame_index=frame.index,
            timestamp_us=frame.timestamp_us,
            model_version=self.score_engine.bundle.version,
        )

    def _action_event(self, event: SegmentStart | SegmentEnd) -> ActionStart | ActionEnd:
        if isinstance(event, SegmentStart):
            span = self._span(event.clip, event.clip)
            return ActionStart(
                label=self.classes[event.class_id],
                class_id=event.class_id,
                confidence=event.confidence,
                clip=event.clip,
                start_frame=span["start_frame"],
                start_s=span["start_s"],
                start_timestamp_us=span["start_timestamp_us"],
            )
        seg = event.segment
        return ActionEnd(
            label=self.classes[seg.class_id],
            class_id=seg.class_id,
            confidence=seg.confidence,
            **self._span(seg.first_clip, seg.last_clip),  # counts the gaps, too
            first_clip=seg.first_clip,
            last_clip=seg.last_clip,
        )
