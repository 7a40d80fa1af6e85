"""`gd-serve`: run the detection server.

    gd-serve [--config FILE] [--model BUNDLE] [--tokens-file F] [--no-auth] [--SETTING VALUE ...]

Every setting (server/settings.py) has a flag, a `GD_*` environment variable and a key in the
TOML config file; flags win over the environment, the environment over the file.

SIGHUP reloads the configured model bundle without a restart (server/service.py, `reload`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import uvicorn

from core.bundle import BundleError
from core.clip import ClipSpec
from server.engine import EngineError
from server.querytokens import install_log_redaction
from server.settings import FIELDS, MiB, Settings, SettingsError, flag, from_env

# uvicorn's own WebSocket limit sits this far above the server's `max_frame_bytes`, so that a
# message just over the limit reaches the server's check and gets its 4413 (uvicorn would
# answer 1009); only messages larger still are cut by uvicorn, unread.
WS_MARGIN = 1 * MiB


# Settings with no flag: a token on the command line shows in every process listing.
NO_FLAG = ("tokens", "admin_tokens")
RELOADING = (
    "Hot reload: SIGHUP (kill -HUP PID) reloads the --model bundle, or an admin "
    "(--admin-tokens-file) POSTs /v1/admin/reload; streams and uploads go on, a bundle that "
    "fails its checks is refused and the old model keeps serving (docs/server.md)."
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """One flag per setting, generated from the model: its description, `GD_*` variable and
    default in the help. Values stay strings here; `Settings` parses them as it parses the
    environment, so a bad one is reported the same way (with its flag's name)."""
    p = argparse.ArgumentParser(
        prog="gd-serve",
        description=__doc__.split("\n")[0],
        allow_abbrev=False,  # `--tokens SECRET` must not pass for `--tokens-file SECRET`
        epilog="Precedence: flags > GD_* environment variables > config file > defaults. "
        "Without a flag (environment or config file only): "
        + "; ".join(f"GD_{n.upper()}: {FIELDS[n].description}" for n in NO_FLAG)
        + ". "
        + RELOADING,
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file of settings, one key per setting as in 'max_streams = 32' "
        "(GD_CONFIG; default: none)",
    )
    for name, field in FIELDS.items():
        if name in NO_FLAG:
            continue
        if field.annotation is bool:
            p.add_argument(flag(name), action="store_const", const=True, help=_help(name))
        else:
            choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
            metavar = "{" + ",".join(choices) + "}" if choices else name.upper()
            p.add_argument(flag(name), metavar=metavar, help=_help(name))
    return p.parse_args(argv)


def _help(name: str) -> str:
    default = FIELDS[name].default
    shown = "none" if default in (None, ()) else "off" if default is False else default
    # argparse formats help with %: a literal percent sign must be doubled
    return f"{FIELDS[name].description} (GD_{name.upper()}; default: {shown})".replace("%", "%%")


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn settings the server needs; tests and benchmarks use the same."""
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws_max_size=settings.max_frame_bytes + WS_MARGIN,
        ws_per_message_deflate=False,  # frames are compressed by choice (zstd/png), not twice
        timeout_graceful_shutdown=5,
    )
    options.update(overrides)
    config = uvicorn.Config(app, **options)  # configures uvicorn's loggers
    install_log_redaction()
    return config


class _Server(uvicorn.Server):
    """uvicorn, with `before_shutdown` run as soon as a shutdown starts (the recording
    decoders' stop: an upload waiting on one is answered 503 `shutting_down` at once, where
    uvicorn would wait out its graceful-shutdown time and then cut it off with a 500)."""

    def __init__(self, config: uvicorn.Config, before_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self.before_shutdown = before_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await asyncio.to_thread(self.before_shutdown)
        await super().shutdown(sockets)


def _check_score_delay(delay: int, spec: ClipSpec) -> None:
    from server.stream import check_score_delay  # imported with the app, after logging

    try:
        check_score_delay(delay, spec)
    except ValueError as e:
        raise SettingsError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    args = vars(parse_args(argv))
    try:
        settings = from_env(**args)
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        from server.app import create_app  # after logging is set up: loading logs

        app = create_app(settings)
        service = app.state.service
        _check_score_delay(service.score_delay, service.bundle.clip)
    except (SettingsError, BundleError, EngineError) as e:
        print(f"gd-serve: {e}", file=sys.stderr)
        return 2
    # uvicorn handles SIGINT and SIGTERM; SIGHUP (by default: exit) becomes a reload. The
    # handler runs on the main thread, the event loop's, and only schedules the reload there.
    signal.signal(signal.SIGHUP, lambda signum, frame: service.reload_from_signal())
    try:
        _Server(uvicorn_config(app, settings), service.recordings.stop).run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: no traceback
        return 130  # the shell's status for "stopped by SIGINT"
    return 0


if __name__ == "__main__":
    sys.exit(main())
