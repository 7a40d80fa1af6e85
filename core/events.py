"""The events of `WS /v1/stream`, typed: what the server sends after `ready` (docs/api.md).

One class per message, the single schema of each: the server builds these and sends
`to_message()`, clients `parse_event` what arrives. Fields are declared in the order they stand
on the wire, so `to_message()` is the message the protocol documents, key for key.

| message | class |
|---|---|
| `scores` | `Scores` (its `top` entries: `Score`) |
| `action`, `state` `start` / `end` | `ActionStart` / `ActionEnd` |
| `warning` | `FramesDropped`, `TimestampGap`; `ServerWarning` for a code this side does not know |
| `error` | `ServerError` (the close follows) |
| `end` | `End` |

`ready` is `core.wire.Ready`. A parsed event keeps the message it came from as `raw`, fields
this side does not model included (a newer server's), so a client can pass it on unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

from core.wire import Ready, WireError, parse_ready


@dataclass(frozen=True)
class Message:
    """Base of the typed messages; `raw` is the JSON a message was parsed from (empty when
    built here), never compared."""

    TYPE: ClassVar[str | None] = None  # the wire's `type`; None for a part of a message

    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, kw_only=True)

    def to_message(self) -> dict[str, Any]:
        """The JSON object of this message, keys in wire order."""
        message = self._header()
        for f in fields(self):
            if f.name == "raw":
                continue
            value = getattr(self, f.name)
            if isinstance(value, tuple):  # of nested messages (`Scores.top`)
                value = [v.to_message() for v in value]
            message[f.name] = value
        return message

    def _header(self) -> dict[str, Any]:
        return {} if self.TYPE is None else {"type": self.TYPE}

    @classmethod
    def parse(cls, message: dict[str, Any], **converted: Any) -> Self:
        """From a message's fields of the same names (`converted` given already); every other
        field is required."""
        values = {}
        for f in fields(cls):
            if f.init and f.name != "raw" and f.name not in converted:
                if f.name not in message:
                    kind = message.get("type", "server")
                    raise WireError(f"{kind} message lacks {f.name!r}")
                values[f.name] = message[f.name]
        return cls(**values, **converted, raw=message)


@dataclass(frozen=True)
class Score(Message):
    """One class of a clip's `top`."""

    label: str
    class_id: int
    score: float


@dataclass(frozen=True)
class Scores(Message):
    """One clip's probabilities: the top classes and the activity (1 - p(background)).

    Frames (inclusive) and seconds (end exclusive) count at the model's `source_fps` from the
    stream's first frame (`core.clip.clips_span`); the timestamps are the same span in the
    sender's clock. `frame_index` / `timestamp_us` are the frame that completed the clip.
    `model_version` is the version of the model that scored it (a hot reload changes it
    mid-stream); "" from a server older than the field.
    """

    TYPE = "scores"

    clip: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    start_timestamp_us: int
    end_timestamp_us: int
    activity: float
    top: tuple[Score, ...]
    frame_index: int
    timestamp_us: int
    model_version: str = ""

    @classmethod
    def parse(cls, message: dict[str, Any], **converted: Any) -> Self:
        top = tuple(Score.parse(s) for s in message.get("top", ()))
        version = message.get("model_version", "")
        if not isinstance(version, str):
            raise WireError(f"scores model_version must be a string, got {version!r}")
        return super().parse(message, top=top, model_version=version, **converted)


@dataclass(frozen=True)
class _Action(Message):
    """An `action` message; `STATE` says which."""

    TYPE = "action"
    STATE: ClassVar[str]

    def _header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "state": self.STATE}


@dataclass(frozen=True)
class ActionStart(_Action):
    """A run of active clips opened at `clip`; label and confidence from that clip alone."""

    STATE = "start"

    label: str
    class_id: int
    confidence: float
    clip: int
    start_frame: int
    start_s: float
    start_timestamp_us: int


@dataclass(frozen=True)
class ActionEnd(_Action):
    """A run closed: clips `first_clip..last_clip`, final label and confidence (what an
    upload of the same scores detects)."""

    STATE = "end"

    label: str
    class_id: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    confidence: float
    start_timestamp_us: int
    end_timestamp_us: int
    first_clip: int
    last_clip: int


@dataclass(frozen=True)
class ServerWarning(Message):
    """Something the client should know; the stream goes on. Clients ignore codes they do
    not know, so a new code never breaks one."""

    TYPE = "warning"

    code: str
    message: str


@dataclass(frozen=True)
class FramesDropped(ServerWarning):
    """`dropped` of the oldest queued frames were dropped since the last such warning."""

    code: str = field(default="frames_dropped", init=False)
    dropped: int
    total_dropped: int


@dataclass(frozen=True)
class TimestampGap(ServerWarning):
    """Timestamps jumped `gap_s`: a new segment starts at clip `clip`, with the frame
    `frame_index` / `timestamp_us` (docs/api.md, *Gaps in time*)."""

    code: str = field(default="timestamp_gap", init=False)
    gap_s: float
    clip: int
    frame_index: int
    timestamp_us: int


WARNINGS: dict[str, type[ServerWarning]] = {
    "frames_dropped": FramesDropped,
    "timestamp_gap": TimestampGap,
}


@dataclass(frozen=True)
class ServerError(Message):
    """Why the server is about to close the stream (`code` as in docs/api.md's close codes)."""

    TYPE = "error"

    code: str
    message: str


@dataclass(frozen=True)
class End(Message):
    """The server scored every clip after the client's `end`; the stream is complete."""

    TYPE = "end"

    clips: int
    frames_received: int
    frames_dropped: int


Event = Ready | Scores | ActionStart | ActionEnd | ServerWarning | ServerError | End


def parse_event(message: dict[str, Any]) -> Event | None:
    """A server message (parsed JSON) as its class; None for a type this side does not know,
    so that an older client keeps working with a newer server."""
    kind = message.get("type")
    if kind == "ready":
        return parse_ready(message)
    if kind == "action":
        return (ActionStart if message.get("state") == "start" else ActionEnd).parse(message)
    if kind == "warning":
        code = message.get("code")
        return WARNINGS.get(code if isinstance(code, str) else "", ServerWarning).parse(message)
    others: dict[Any, type[Scores | ServerError | End]] = {
        "scores": Scores,
        "error": ServerError,
        "end": End,
    }
    cls = others.get(kind)
    return None if cls is None else cls.parse(message)
