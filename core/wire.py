"""The WebSocket wire format of `/v1/stream`, shared by the server and its clients (design.md §9).

A stream opens with a JSON `hello` from the client and a JSON `ready` from the server. Frames
are binary messages: a little-endian header `uint64 timestamp_us, uint32 frame_index`, then
one uint16 depth image encoded as

- `raw`: the `height * width` pixels, little-endian, row-major;
- `zstd`: the raw bytes compressed as one zstd frame;
- `png`: a 16-bit grayscale PNG.

Decoding is bounded before any decompression: a zstd frame may not inflate past the declared
image size, a PNG's IHDR must declare 16-bit grayscale at an allowed size. JSON control
messages are bounded too: in size, in nesting, and every `hello` field in type and range.
zstd and png need `zstandard` and OpenCV, imported only when used, so `core` stays numpy-only.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np

from core.clip import ClipSpec, ClipSpecError
from core.depthfiles import DepthFileError, decode_png_depth, png_depth_size
from core.limits import MAX_SIDE, MILLIMETRES, fps_message, valid_fps

PROTOCOL = 1
ENCODINGS = ("raw", "zstd", "png")
HEADER = struct.Struct("<QI")  # timestamp_us, frame_index
# JSON control messages and events are small (a hello is ~200 bytes, a `ready` with a few
# hundred classes ~20 kB); these caps keep a hostile one cheap to refuse.
MAX_CONTROL_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_SCORE_DELAY = 1000  # clips; a model's window (T_w - 1) bounds it much lower


class WireError(ValueError):
    """A message does not follow the stream protocol; `code` names the problem for clients."""

    code = "bad_request"


class MessageTooLarge(WireError):
    """A message is larger than the protocol allows."""

    code = "message_too_large"


class FrameTooLarge(MessageTooLarge):
    """A frame is larger than the stream allows."""

    code = "frame_too_large"


@dataclass(frozen=True)
class Hello:
    """The client's first message: what it will send."""

    camera_id: str
    width: int
    height: int
    fps: float
    depth_units: float = MILLIMETRES  # metres per depth unit
    encoding: str = "raw"
    protocol: int = PROTOCOL
    token: str | None = None
    score_delay: int | None = None  # clips; None: the server's default

    def to_message(self) -> dict[str, Any]:
        message = {"type": "hello", **asdict(self)}
        for optional in ("token", "score_delay"):
            if message[optional] is None:
                del message[optional]
        return message

    def __repr__(self) -> str:  # never show the token
        token = None if self.token is None else "***"
        return (
            f"Hello(camera_id={self.camera_id!r}, width={self.width}, height={self.height}, "
            f"fps={self.fps}, depth_units={self.depth_units}, encoding={self.encoding!r}, "
            f"protocol={self.protocol}, token={token}, score_delay={self.score_delay})"
        )


def parse_json(text: str | bytes, max_bytes: int = MAX_CONTROL_BYTES) -> dict[str, Any]:
    """A control message: a JSON object with a string `type`, at most `max_bytes` (UTF-8)
    and `MAX_JSON_DEPTH` levels deep."""
    size = len(text) if isinstance(text, bytes) or len(text) > max_bytes else len(text.encode())
    if size > max_bytes:
        raise MessageTooLarge(f"control message of {size} bytes exceeds {max_bytes}")
    try:
        message = json.loads(text)
    except RecursionError:  # the C decoder recurses once per level
        raise WireError(f"message nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:  # malformed, bad UTF-8, or an integer too long to convert
        raise WireError(f"message is not valid JSON: {e}") from None
    if json_depth(message) > MAX_JSON_DEPTH:
        raise WireError(f"message nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(message, dict):
        raise WireError(f"message must be a JSON object, got {type(message).__name__}")
    if not isinstance(message.get("type"), str):
        raise WireError("message has no string 'type'")
    return message


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, `{}` is 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in item)
    return deepest


def parse_hello(message: dict[str, Any]) -> Hello:
    """Validate a `hello` message (already parsed JSON) field by field."""
    if message.get("type") != "hello":
        raise WireError(
            f"the first message must be a hello, got type {_short(message.get('type'))}"
        )
    known = {"type", "protocol", "camera_id", "width", "height", "fps", "depth_units"}
    unknown = sorted(set(message) - known - {"encoding", "token", "score_delay"})
    if unknown:
        raise WireError(f"hello has unknown field(s): {_cut(', '.join(unknown), 80)}")
    protocol = _field(message, "protocol", int)
    if protocol != PROTOCOL:
        raise WireError(
            f"protocol {_short(protocol)} is not supported; this side speaks {PROTOCOL}"
        )
    camera_id = _field(message, "camera_id", str)
    if not 0 < len(camera_id) <= 128 or not camera_id.isprintable():
        raise WireError("camera_id must be 1-128 printable characters")
    width, height = _field(message, "width", int), _field(message, "height", int)
    for name, side in (("width", width), ("height", height)):
        if not 1 <= side <= MAX_SIDE:
            raise WireError(f"{name} must be in [1, {MAX_SIDE}], got {_short(side)}")
    fps = _field(message, "fps", float)
    if not valid_fps(fps):
        raise WireError(fps_message(fps))
    depth_units = _field(message, "depth_units", float)
    if not 1e-6 <= depth_units <= 1.0:
        raise WireError(f"depth_units (metres per unit) must be in [1e-6, 1], got {depth_units}")
    encoding = message.get("encoding", "raw")
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        raise WireError(f"unknown encoding {_short(encoding)}; use one of {', '.join(ENCODINGS)}")
    token = message.get("token")
    if token is not None and not isinstance(token, str):
        raise WireError("token must be a string")
    score_delay = None
    if message.get("score_delay") is not None:
        score_delay = _field(message, "score_delay", int)
        if not 0 <= score_delay <= MAX_SCORE_DELAY:  # the model's window bounds it further
            raise WireError(
                f"score_delay must be in [0, {MAX_SCORE_DELAY}] clips, got {_short(score_delay)}"
            )
    return Hello(camera_id, width, height, fps, depth_units, encoding, protocol, token, score_delay)


def _field(message: dict[str, Any], name: str, kind: type) -> Any:
    """`message[name]` checked to be a `kind` (int, str, or a finite float; never a bool)."""
    if name not in message:
        raise WireError(f"hello lacks {name!r}")
    value = message[name]
    allowed = int | float if kind is float else kind
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise WireError(f"hello field {name!r} must be {kind.__name__}, got {_short(value)}")
    if kind is not float:
        return value
    try:
        number = float(cast(int | float, value))  # an int or a float: checked above
    except OverflowError:  # an integer beyond float's range
        number = math.inf
    if not math.isfinite(number):
        raise WireError(f"hello field {name!r} must be a finite number, got {_short(value)}")
    return number


def _short(value: Any) -> str:
    """`repr(value)`, cut short: error messages echo what was wrong, briefly."""
    try:
        return _cut(repr(value))
    except ValueError:  # an integer with more digits than Python will print
        return f"<{type(value).__name__} too large to show>"


def _cut(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class Ready:
    """The server's answer to `hello`: the model's clip contract and classes.

    `sizes` are the frame sizes `(height, width)` the server accepts on this stream: the size
    announced in `hello`, and the model's own (frames a client reduced before sending).
    `score_delay` clips after clip c completes, its scores come (docs/api.md, *Scores*).
    `reference`: whether the server holds an empty-room reference for the stream's camera
    (docs/api.md, *Camera references*).
    """

    model: dict[str, Any]  # name, version
    clip: ClipSpec
    classes: tuple[str, ...]  # index 0 = background
    activity_threshold: float
    causal: bool
    sizes: tuple[tuple[int, int], ...]
    max_frame_bytes: int
    score_delay: int = 0  # clips between a clip's completion and its scores
    latency_s: float = 0.0  # a clip's start to the earliest its scores can come (no model time)
    reference: bool = False  # the camera has an empty-room reference on the server
    protocol: int = PROTOCOL

    def to_message(self) -> dict[str, Any]:
        return {
            "type": "ready",
            "protocol": self.protocol,
            "model": self.model,
            "clip": self.clip.to_dict(),
            "classes": list(self.classes),
            "activity_threshold": self.activity_threshold,
            "causal": self.causal,
            "sizes": [{"height": h, "width": w} for h, w in self.sizes],
            "max_frame_bytes": self.max_frame_bytes,
            "score_delay": self.score_delay,
            "latency_s": self.latency_s,
            "reference": self.reference,
        }


def parse_ready(message: dict[str, Any]) -> Ready:
    """Validate the server's `ready` (clients use this)."""
    if message.get("type") != "ready":
        raise WireError(f"expected a ready message, got type {message.get('type')!r}")
    try:
        clip = ClipSpec.from_dict(message["clip"])
        classes = tuple(message["classes"])
        sizes = tuple((int(s["height"]), int(s["width"])) for s in message["sizes"])
        ready = Ready(
            model=dict(message["model"]),
            clip=clip,
            classes=classes,
            activity_threshold=float(message["activity_threshold"]),
            causal=bool(message["causal"]),
            sizes=sizes,
            max_frame_bytes=int(message["max_frame_bytes"]),
            score_delay=int(message.get("score_delay", 0)),  # absent from older servers
            latency_s=float(message.get("latency_s", 0.0)),
            reference=bool(message.get("reference", False)),  # absent from older servers
            protocol=int(message["protocol"]),
        )
    except (KeyError, TypeError, ValueError, ClipSpecError) as e:
        raise WireError(f"malformed ready message: {e!r}") from e
    if ready.protocol != PROTOCOL:
        raise WireError(f"server speaks protocol {ready.protocol}, this client {PROTOCOL}")
    if len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise WireError("ready.classes must list background and at least one action")
    return ready


# --- frames --------------------------------------------------------------------------------


def pack_frame(
    timestamp_us: int, frame_index: int, image: np.ndarray, encoding: str = "raw"
) -> bytes:
    """One binary frame message: header + `image` (uint16 [H, W]) encoded."""
    return pack_header(timestamp_us, frame_index) + encode_image(image, encoding)


def pack_header(timestamp_us: int, frame_index: int) -> bytes:
    if not 0 <= timestamp_us < 2**64 or not 0 <= frame_index < 2**32:
        raise WireError(f"header out of range: timestamp_us {timestamp_us}, index {frame_index}")
    return HEADER.pack(timestamp_us, frame_index)


def unpack_header(message: bytes) -> tuple[int, int, memoryview]:
    """`(timestamp_us, frame_index, payload)` of a binary frame message, not yet decoded."""
    if len(message) <= HEADER.size:
        raise WireError(
            f"frame message of {len(message)} bytes is shorter than its {HEADER.size}-byte header "
            "plus an image"
        )
    timestamp_us, frame_index = HEADER.unpack_from(message)
    return timestamp_us, frame_index, memoryview(message)[HEADER.size :]


def encode_image(image: np.ndarray, encoding: str = "raw", level: int = 1) -> bytes:
    """uint16 `[H, W]` -> payload bytes in `encoding`."""
    image = np.asarray(image)
    if image.dtype != np.uint16 or image.ndim != 2:
        raise WireError(f"a frame must be uint16 [H, W], got {image.dtype} {image.shape}")
    if encoding == "raw":
        return image.astype("<u2", copy=False).tobytes()
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=level).compress(image.astype("<u2").tobytes())
    if encoding == "png":
        import cv2

        ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, level])
        if not ok:
            raise WireError("PNG encoding failed")
        return data.tobytes()
    raise WireError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")


def decode_image(
    payload: bytes | memoryview, encoding: str, sizes: Iterable[tuple[int, int]]
) -> np.ndarray:
    """Payload -> uint16 `[H, W]` where `(H, W)` must be one of `sizes`.

    Raises `FrameTooLarge` when the payload or what it would inflate to exceeds the largest
    allowed size, `WireError` for anything else malformed.
    """
    sizes = list(sizes)
    max_bytes = 2 * max(h * w for h, w in sizes)
    if encoding == "raw":
        return _raw_image(payload, sizes, max_bytes)
    if encoding == "zstd":
        return _raw_image(_zstd_inflate(payload, max_bytes), sizes, max_bytes)
    if encoding == "png":
        return _png_image(payload, sizes)
    raise WireError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")


def _size_list(sizes: list[tuple[int, int]]) -> str:
    return " or ".join(f"{w}x{h}" for h, w in sizes)


def _raw_image(data: bytes | memoryview, sizes: list[tuple[int, int]], max_bytes: int):
    n = len(data)
    if n > max_bytes:
        raise FrameTooLarge(f"frame of {n} bytes exceeds {max_bytes} ({_size_list(sizes)} uint16)")
    for h, w in sizes:
        if n == 2 * h * w:
            return np.frombuffer(data, dtype="<u2").reshape(h, w)
    raise WireError(
        f"frame of {n} bytes is not a uint16 image of {_size_list(sizes)} "
        f"({' or '.join(str(2 * h * w) for h, w in sizes)} bytes)"
    )


def _zstd_inflate(payload: bytes | memoryview, max_bytes: int) -> bytes:
    import zstandard

    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as e:
        raise WireError(f"zstd payload is not a zstd frame: {e}") from e
    if declared > max_bytes:  # -1 = not declared; the decompressor's cap below still holds
        raise FrameTooLarge(f"zstd frame declares {declared} bytes, more than {max_bytes}")
    try:
        return zstandard.ZstdDecompressor().decompress(payload, max_output_size=max_bytes)
    except zstandard.ZstdError as e:
        raise WireError(f"zstd payload is corrupt or inflates past {max_bytes} bytes: {e}") from e


def _png_image(payload: bytes | memoryview, sizes: list[tuple[int, int]]) -> np.ndarray:
    """A PNG frame by the rules of PNG files (`core.depthfiles`), at one of `sizes`."""
    try:
        height, width = png_depth_size(payload)
        if (height, width) not in sizes:
            max_pixels = max(h * w for h, w in sizes)
            error = FrameTooLarge if height * width > max_pixels else WireError
            raise error(f"PNG is {width}x{height}, expected {_size_list(sizes)}")
        return decode_png_depth(payload, (height, width))
    except DepthFileError as e:
        raise WireError(str(e)) from None
