"""Server settings: one typed model, filled from flags, `GD_*` variables and a TOML file.

`Settings` is a frozen pydantic dataclass: its fields are the settings, with their types,
defaults, limits and descriptions (which `gd-serve --help` prints). `Settings(...)` takes
values directly and reads nothing else; `from_env` merges the sources, highest first:

    flags (gd-serve's, or from_env's keyword arguments)
    > GD_<FIELD> environment variables (e.g. GD_MAX_STREAMS=32, GD_NO_AUTH=1, GD_TOKENS=a,b)
    > the TOML config file (--config FILE or GD_CONFIG; keys are the field names)
    > the defaults below.

An empty variable counts as unset (`GD_TOKENS_FILE=` undoes an image's default). A bad value
raises `SettingsError` naming where it came from (`GD_PORT`, `--port`, `FILE: port`) and the
value (never a token's).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

Device = Literal["auto", "cpu", "cuda", "tensorrt"]
DEVICES: tuple[str, ...] = get_args(Device)
LogLevel = Literal["debug", "info", "warning", "error"]
MiB = 1 << 20


class SettingsError(Exception):
    """A setting is missing, malformed or unsafe.

    Not a ValueError: raised from the model's validator, it must reach the caller as itself,
    not wrapped in pydantic's ValidationError.
    """


def _positive(description: str) -> Any:
    return Field(gt=0, description=description)


def _at_least(low: int, description: str) -> Any:
    return Field(ge=low, description=description)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Settings:
    """What the server runs with; where each value comes from: the module's docstring."""

    model: Annotated[Path, Field(description="the model bundle folder")] = Path("models/default")
    host: Annotated[str, Field(description="bind address")] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535, description="port")] = 8000
    device: Annotated[
        Device,
        Field(
            description="auto: TensorRT, then CUDA when present, else CPU; "
            "cuda, tensorrt: refuse to start without them"
        ),
    ] = "auto"
    tokens: Annotated[
        tuple[str, ...],
        Field(description="API tokens, comma-separated (prefer the tokens file)"),
    ] = dataclasses.field(default=(), repr=False)
    tokens_file: Annotated[
        Path | None,
        Field(description="API tokens, one a line (# comments, blank lines ignored)"),
    ] = None
    no_auth: Annotated[
        bool, Field(description="accept requests without a token (loopback binds only)")
    ] = False
    # Admin tokens are a second set: a client token never reloads the model, an admin token
    # never streams or uploads (docs/server.md, *Hot reload*).
    admin_tokens: Annotated[
        tuple[str, ...],
        Field(description="admin tokens (POST /v1/admin/reload), comma-separated"),
    ] = dataclasses.field(default=(), repr=False)
    admin_tokens_file: Annotated[
        Path | None,
        Field(
            description="admin tokens, one a line, for POST /v1/admin/reload; without any, "
            "the admin endpoint is off (with --no-auth: loopback clients only)"
        ),
    ] = None
    cors_origins: Annotated[
        tuple[str, ...],
        Field(description="origins allowed to call the REST API from a browser, comma-separated"),
    ] = ()
    # engine
    threads: Annotated[
        int, _at_least(0, "ONNX Runtime intra-op threads; 0 = all cores but one")
    ] = 0
    max_batch: Annotated[int, _at_least(1, "most clips (or windows) in one model run")] = 32
    max_wait_ms: Annotated[float, _positive("longest a clip waits for others to share its run")] = (
        4.0
    )
    # streams
    max_streams: Annotated[
        int, _at_least(1, "concurrent WebSocket streams; one more is closed with 4429")
    ] = 64
    queue_frames: Annotated[
        int, _at_least(1, "frames queued per stream; the oldest are dropped beyond it")
    ] = 32
    idle_timeout_s: Annotated[
        float, _positive("a stream that sends nothing this long is closed (4408)")
    ] = 30.0
    send_timeout_s: Annotated[
        float, _positive("a stream that does not take its events this long is closed (4408)")
    ] = 10.0
    max_frame_bytes: Annotated[int, _at_least(1, "largest WebSocket message; over it: 4413")] = (
        16 * MiB
    )
    max_gap_s: Annotated[
        float, _positive("a longer timestamp jump starts a new segment of the stream")
    ] = 2.0
    max_stream_speed: Annotated[
        float, _positive("x real time a stream may send, once its burst is spent")
    ] = 4.0
    stream_burst_s: Annotated[
        float, _positive("seconds of video a stream may send at any speed")
    ] = 60.0
    # None: the bundle's postprocess.score_delay, the delay its model card was measured with
    score_delay: Annotated[
        int | None,
        Field(
            ge=0,
            description="clips of future context for live scores, 0 .. window - 1: more is "
            "more accurate and later; none: the model's own (postprocess.score_delay)",
        ),
    ] = None
    top_k: Annotated[int, _at_least(1, "actions listed in each scores event")] = 5
    # uploads
    max_upload_bytes: Annotated[int, _at_least(1, "largest upload body")] = 256 * MiB
    max_decoded_bytes: Annotated[
        int, _at_least(1, "largest decoded video (T*H*W*2 bytes) of one upload")
    ] = 1024 * MiB
    max_upload_frames: Annotated[
        int, _at_least(1, "most frames in one upload (30 min at 30 fps)")
    ] = 30 * 60 * 30
    spool_dir: Annotated[
        Path, Field(description="where a RealSense upload lives while read (RAM)")
    ] = Path("/dev/shm")
    max_upload_clips: Annotated[
        int, _at_least(1, "most clips one upload may make (an hour at the default model)")
    ] = 3600
    max_upload_upsample: Annotated[
        int, _at_least(1, "most kept frames per frame received (a sparse upload repeats)")
    ] = 4
    max_decoders: Annotated[
        int, _at_least(1, "RealSense recordings decoded at once, one process each")
    ] = 2
    decode_timeout_s: Annotated[
        float, _positive("a recording decoder (waiting included) running longer is killed")
    ] = 60.0
    decode_memory_bytes: Annotated[int, _at_least(1, "address space of one decoder process")] = (
        4096 * MiB
    )
    # the event store (docs/events.md)
    data_dir: Annotated[
        Path, Field(description="where the server keeps its state (the events database)")
    ] = Path("data")
    events_db: Annotated[
        str | None,
        Field(
            description="the event store: a SQLite file, or a database URL "
            "(postgresql://user:pass@host/db); off: no store, no event API; "
            "none: DATA_DIR/events.db"
        ),
    ] = dataclasses.field(default=None, repr=False)  # a URL may hold a password
    events_retention_days: Annotated[
        float, _positive("ended events are deleted after this many days, unless kept")
    ] = 30.0
    alert_rules: Annotated[
        Path | None,
        Field(description="the alert rules file (YAML, docs/alerts.md); none: no alerts"),
    ] = None
    # MQTT (docs/mqtt.md); off without a host
    mqtt_host: Annotated[str | None, Field(description="MQTT broker host; none: no MQTT")] = None
    mqtt_port: Annotated[
        int, Field(ge=1, le=65535, description="MQTT broker port (8883 is usual with TLS)")
    ] = 1883
    mqtt_tls: Annotated[bool, Field(description="connect to the MQTT broker over TLS")] = False
    mqtt_ca_file: Annotated[
        Path | None, Field(description="the MQTT broker's CA certificate (TLS); none: the system's")
    ] = None
    mqtt_username: Annotated[str | None, Field(description="MQTT user name")] = None
    mqtt_password: Annotated[
        str | None, Field(description="MQTT password (prefer the password file)")
    ] = dataclasses.field(default=None, repr=False)
    mqtt_password_file: Annotated[
        Path | None, Field(description="file whose first line is the MQTT password")
    ] = None
    mqtt_prefix: Annotated[str, Field(description="MQTT topic prefix")] = "gd"
    mqtt_client_id: Annotated[
        str, Field(description="MQTT client id; empty: gd-detect-<hostname>-<pid>")
    ] = ""
    mqtt_discovery: Annotated[
        bool, Field(description="publish Home Assistant MQTT discovery configs")
    ] = True
    # Off by default: a picture of a room, even in depth, is for the operator to allow.
    preview: Annotated[
        bool,
        Field(
            description="keep each streaming camera's newest frame in memory and answer it as "
            "a small colorized depth image (GET /v1/cameras/{id}/preview, the dashboard)"
        ),
    ] = False
    log_level: Annotated[LogLevel, Field(description="log level")] = "info"
    demo: Annotated[
        bool, Field(description="stream a synthetic scene into this server and log detections")
    ] = False

    @field_validator("tokens", "admin_tokens", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        """Lists come from the environment and flags as `a,b` (spaces and empty parts
        dropped), from the config file as TOML arrays."""
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @field_validator("tokens", "admin_tokens")
    @classmethod
    def _no_whitespace(cls, tokens: tuple[str, ...]) -> tuple[str, ...]:
        if any(not t or any(c.isspace() for c in t) for t in tokens):
            raise ValueError("must be non-empty and contain no whitespace")
        return tokens

    @model_validator(mode="wrap")
    @classmethod
    def _named_errors(
        cls, values: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        """Every problem in one SettingsError, each named as the caller knows the setting
        (`info.context["names"]`, from `from_env`; else the field's name)."""
        try:
            return handler(values)
        except ValidationError as e:
            names = (info.context or {}).get("names", {})
            raise SettingsError("; ".join(_describe(err, names) for err in e.errors())) from None

    def all_tokens(self) -> tuple[str, ...]:
        """Tokens given directly plus those of the tokens file (one a line, # comments)."""
        return self.tokens + _read_tokens(self.tokens_file, "tokens")

    def all_admin_tokens(self) -> tuple[str, ...]:
        """Admin tokens given directly plus those of the admin tokens file."""
        return self.admin_tokens + _read_tokens(self.admin_tokens_file, "admin tokens")

    def check_admin(self, tokens: tuple[str, ...]) -> tuple[str, ...]:
        """The admin tokens; none may also be a client token (of `tokens`), or a client
        could reload the model."""
        admin = self.all_admin_tokens()
        if set(admin) & set(tokens):
            raise SettingsError(
                "a token is both an API token and an admin token: give admins tokens of "
                "their own (--admin-tokens-file)"
            )
        return admin

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


# Each setting's type, default and description (what gd-serve's flags and help are made of).
FIELDS: dict[str, FieldInfo] = Settings.__pydantic_fields__  # type: ignore[attr-defined]
SECRET = frozenset(f.name for f in dataclasses.fields(Settings) if not f.repr)
# pydantic's error types, in the words of a settings message (others keep pydantic's own)
REQUIREMENTS = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than_equal": "must be <= {le}",
    "literal_error": "must be one of {expected}",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "bool_parsing": "must be a boolean (1/0, true/false, yes/no)",
    "extra_forbidden": "is not a setting",
    "unexpected_keyword_argument": "is not a setting",
    "value_error": "{error}",
}


def _describe(err: Mapping[str, Any], names: Mapping[str, str]) -> str:
    field = str(err["loc"][0]) if err["loc"] else "settings"
    ctx = err.get("ctx", {})
    if err["type"] == "greater_than" and ctx["gt"] == 0:
        requirement = "must be positive"
    elif err["type"] in REQUIREMENTS:
        requirement = REQUIREMENTS[err["type"]].format(**ctx)
    else:
        requirement = f"is invalid ({err['msg']})"
    got = "" if field in SECRET else f", got {err['input']!r}"
    return f"{names.get(field, field)} {requirement}{got}"


def _read_tokens(path: Path | None, what: str) -> tuple[str, ...]:
    """The tokens of a file, one a line (# comments and blank lines ignored); () for None."""
    if path is None:
        return ()
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise SettingsError(f"cannot read {what} file {path}: {e}") from e
    tokens = tuple(t for t in (ln.strip() for ln in lines) if t and not t.startswith("#"))
    if any(any(c.isspace() for c in t) for t in tokens):
        raise SettingsError(f"{path}: a token line contains whitespace")
    return tokens


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Fields(BaseSettings, Settings):  # type: ignore[misc]
    """`Settings`' fields as pydantic-settings' sources read them (the way its own CliApp
    wraps a dataclass); only read from, never instantiated: `Settings` validates."""

    model_config = SettingsConfigDict(
        env_prefix="GD_",
        env_ignore_empty=True,
        enable_decoding=False,  # lists are comma-separated, not JSON (Settings._split_commas)
    )


class _Environment(EnvSettingsSource):
    """`GD_*` variables of a given mapping rather than always `os.environ` (tests, Docker)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(_Fields)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty)


def read_config(path: Path) -> dict[str, Any]:
    """The settings of a TOML file: top-level keys named as `Settings`' fields."""
    if not path.is_file():
        raise SettingsError(f"config file {path}: no such file")
    try:
        return TomlConfigSettingsSource(_Fields, toml_file=path)()
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"config file {path}: {e}") from None


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


_VALIDATE = TypeAdapter(Settings)  # validation with a context: the settings' names


def from_env(
    environ: Mapping[str, str] | None = None, config: Path | None = None, **flags: Any
) -> Settings:
    """Settings from `flags` (those not None), then the `GD_*` variables of `environ`
    (default: the process's), then the config file (`config`, else `GD_CONFIG`)."""
    environ = os.environ if environ is None else environ
    env = _Environment(environ)()
    path = config or environ.get("GD_CONFIG") or None
    from_file = read_config(Path(path)) if path else {}
    flags = {k: v for k, v in flags.items() if v is not None}
    names = {
        **{k: f"{path}: {k}" for k in from_file},
        **{k: f"GD_{k.upper()}" for k in env},
        **{k: flag(k) for k in flags},
    }
    return _VALIDATE.validate_python({**from_file, **env, **flags}, context={"names": names})
