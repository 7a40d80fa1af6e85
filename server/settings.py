"""Server settings: defaults, `GD_*` environment variables, then command-line flags.

Every field of `Settings` can be set from the environment as `GD_<FIELD>` (e.g.
`GD_MAX_STREAMS=32`, `GD_NO_AUTH=1`, `GD_TOKENS=a,b`); the CLI overrides the environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
MiB = 1 << 20


class SettingsError(ValueError):
    """A setting is missing, malformed or unsafe."""


@dataclass(frozen=True)
class Settings:
    model: Path = Path("models/default")
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"  # auto | cpu | cuda | tensorrt
    tokens: tuple[str, ...] = field(default=(), repr=False)
    tokens_file: Path | None = None
    no_auth: bool = False
    cors_origins: tuple[str, ...] = ()  # none: browsers on other origins are refused
    # engine
    threads: int = 0  # ONNX Runtime intra-op threads; 0 = all cores but one
    max_batch: int = 32
    max_wait_ms: float = 4.0
    # streams
    max_streams: int = 64
    queue_frames: int = 32  # per stream; the oldest are dropped beyond it
    idle_timeout_s: float = 30.0
    send_timeout_s: float = 10.0
    max_frame_bytes: int = 16 * MiB  # largest WebSocket message
    max_gap_s: float = 2.0  # a longer timestamp jump starts a new segment (docs/api.md)
    max_stream_speed: float = 4.0  # x real time, once a stream's burst is spent
    stream_burst_s: float = 60.0  # seconds of video a stream may send at any speed
    # clips of future context for live scores, 0..T_w-1 (docs/api.md); None: the bundle's
    # postprocess.score_delay, the delay its model card was measured with
    score_delay: int | None = None
    top_k: int = 5
    # uploads
    max_upload_bytes: int = 256 * MiB
    max_decoded_bytes: int = 1024 * MiB  # decoded uint16 frames of one upload
    max_upload_frames: int = 30 * 60 * 30  # 30 minutes at 30 fps
    spool_dir: Path = Path("/dev/shm")  # where RealSense uploads live while read (RAM)
    max_upload_clips: int = 3600  # clips one upload may make (an hour at the default model)
    max_upload_upsample: int = 4  # kept frames per frame received (a sparse upload repeats)
    max_decoders: int = 2  # RealSense recordings decoded at once, one process each
    decode_timeout_s: float = 60.0  # a recording decoder running longer is killed
    decode_memory_bytes: int = 4096 * MiB  # address space of one decoder process
    log_level: str = "info"
    demo: bool = False  # stream a synthetic scene into this server (make run)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise SettingsError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        for name in (
            *("port", "threads", "max_batch", "max_streams", "queue_frames", "top_k"),
            *("max_upload_clips", "max_upload_upsample", "max_decoders", "decode_memory_bytes"),
        ):
            low = 0 if name in ("port", "threads") else 1
            if getattr(self, name) < low:
                raise SettingsError(f"{name} must be >= {low}, got {getattr(self, name)}")
        for name in (
            *("max_wait_ms", "idle_timeout_s", "send_timeout_s", "max_gap_s"),
            *("max_stream_speed", "stream_burst_s"),
            "decode_timeout_s",
        ):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name} must be positive, got {getattr(self, name)}")
        if self.score_delay is not None and self.score_delay < 0:
            raise SettingsError(f"score_delay must be >= 0 clips, got {self.score_delay}")
        if any(not t or any(c.isspace() for c in t) for t in self.tokens):
            raise SettingsError("tokens must be non-empty and contain no whitespace")

    def all_tokens(self) -> tuple[str, ...]:
        """Tokens given directly plus those of the tokens file (one a line, # comments)."""
        if self.tokens_file is None:
            return self.tokens
        try:
            lines = Path(self.tokens_file).read_text().splitlines()
        except OSError as e:
            raise SettingsError(f"cannot read tokens file {self.tokens_file}: {e}") from e
        from_file = tuple(t for t in (ln.strip() for ln in lines) if t and not t.startswith("#"))
        if any(any(c.isspace() for c in t) for t in from_file):
            raise SettingsError(f"{self.tokens_file}: a token line contains whitespace")
        return self.tokens + from_file

    def check_auth(self) -> tuple[str, ...]:
        """The tokens to accept; refuses to run open anywhere but on a loopback bind."""
        tokens = self.all_tokens()
        if self.no_auth:
            if not is_loopback(self.host):
                raise SettingsError(
                    f"--no-auth is allowed only on a loopback bind (127.0.0.1, ::1, localhost), "
                    f"not {self.host}; give tokens with --tokens-file or GD_TOKENS"
                )
            return ()
        if not tokens:
            raise SettingsError(
                "no API tokens: give --tokens-file FILE (one token a line) or GD_TOKENS, "
                "or --no-auth on a loopback bind"
            )
        return tokens


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from `GD_*` variables, then `overrides` (those not None) on top."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = environ.get(f"GD_{f.name.upper()}")
        if raw is not None:
            values[f.name] = _parse(f.name, f.type, raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)


def _parse(name: str, kind: str, raw: str) -> Any:
    var = f"GD_{name.upper()}"
    try:
        if kind == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", ""):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if kind in ("int", "int | None"):
            return int(raw) if raw else None
        if kind == "float":
            return float(raw)
        if kind == "tuple[str, ...]":
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if kind in ("Path", "Path | None"):
            return Path(raw) if raw else None
        return raw
    except ValueError as e:
        raise SettingsError(f"{var} must be a {kind}, got {raw!r}") from e
