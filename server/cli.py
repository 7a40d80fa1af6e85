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
from server.engine import EngineError
from server.settings import DEVICES, Settings, SettingsError, from_env


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
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=False,  # frames are compressed by choice (zstd/png), not twice
        timeout_graceful_shutdown=5,
    )
    options.update(overrides)
    return uvicorn.Config(app, **options)


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
            log_level=args.log_level,
            demo=args.demo,
        )
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        from server.app import create_app  # after logging is set up: loading logs

        app = create_app(settings)
    except (SettingsError, BundleError, EngineError) as e:
        print(f"gd-serve: {e}", file=sys.stderr)
        return 2
    uvicorn.Server(uvicorn_config(app, settings)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
