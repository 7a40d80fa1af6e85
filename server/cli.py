"""`gd-serve`: run the detection server.

    gd-serve [--model BUNDLE] [--host H] [--port P] [--device auto|cpu|cuda|tensorrt]
             [--tokens-file F] [--no-auth]

Every setting can also come from a `GD_*` environment variable (see server/settings.py and
docs/server.md); flags win over the environment.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from core.bundle import BundleError
from core.clip import ClipSpec
from server.engine import EngineError
from server.querytokens import install_log_redaction
from server.settings import DEVICES, MiB, Settings, SettingsError, from_env

# uvicorn's own WebSocket limit sits this far above the server's `max_frame_bytes`, so that a
# message just over the limit reaches the server's check and gets its 4413 (uvicorn would
# answer 1009); only messages larger still are cut by uvicorn, unread.
WS_MARGIN = 1 * MiB


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gd-serve", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="model bundle folder (default: models/default)")
    p.add_argument("--host", help="bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: 8000)")
    p.add_argument("--device", choices=DEVICES, help="inference device (default: auto)")
    p.add_argument("--tokens-file", type=Path, help="API tokens, one a line")
    p.add_argument(
        "--no-auth",
        action="store_const",
        const=True,
        help="accept requests without a token (loopback binds only)",
    )
    p.add_argument("--max-streams", type=int, help="concurrent WebSocket streams (default: 64)")
    p.add_argument("--threads", type=int, help="inference threads (default: all cores but one)")
    p.add_argument(
        "--score-delay",
        type=int,
        help="clips of future context for live scores, 0 .. window - 1: more is more accurate "
        "and later (default: the model's own, postprocess.score_delay in model.json)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--demo",
        action="store_const",
        const=True,
        help="also stream a scripted synthetic scene into this server and log its detections",
    )
    return p.parse_args(argv)


def uvicorn_config(app, settings: Settings, **overrides) -> uvicorn.Config:
    """The uvicorn settings the server needs; tests and benchmarks use the same."""
    options = dict(
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


def _check_score_delay(delay: int, spec: ClipSpec) -> None:
    from server.stream import check_score_delay  # imported with the app, after logging

    try:
        check_score_delay(delay, spec)
    except ValueError as e:
        raise SettingsError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = from_env(
            model=args.model,
            host=args.host,
            port=args.port,
            device=args.device,
            tokens_file=args.tokens_file,
            no_auth=args.no_auth,
            max_streams=args.max_streams,
            threads=args.threads,
            score_delay=args.score_delay,
            log_level=args.log_level,
            demo=args.demo,
        )
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
    uvicorn.Server(uvicorn_config(app, settings)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
