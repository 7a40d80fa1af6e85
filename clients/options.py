"""Command-line options and exit codes that `gd-stream` and `gd-upload` share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

EXIT_OK = 0
EXIT_ERROR = 1  # the server failed or refused, or reconnecting gave up
EXIT_USAGE = 2  # bad arguments, or a source / file that cannot be read
EXIT_UNAUTHORIZED = 3  # HTTP 401 / close 4401
EXIT_TOO_MANY_STREAMS = 4  # close 4429
EXIT_INTERRUPTED = 130  # Ctrl-C


def exit_codes(streams: bool) -> str:
    """The exit codes, for a command's --help."""
    rows = [
        (EXIT_OK, "done"),
        (EXIT_ERROR, "the server failed, refused the request or could not be reached"),
        (EXIT_USAGE, "bad arguments, or a file or source that cannot be read"),
        (EXIT_UNAUTHORIZED, "unauthorized: missing or wrong token (HTTP 401, close code 4401)"),
        (EXIT_TOO_MANY_STREAMS, "too many streams: the server is at its limit (close code 4429)"),
        (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
    ]
    if not streams:
        del rows[4]
    return "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in rows)


def add_server_options(parser: argparse.ArgumentParser, default_url: str) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("GD_URL", default_url),
        help=f"the server (env GD_URL; default {default_url}); http(s):// and ws(s):// both work",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("GD_TOKEN"),
        help="API token (env GD_TOKEN; prefer it or --token-file: arguments show in `ps`)",
    )
    parser.add_argument("--token-file", type=Path, help="read the token from the first line")
    parser.add_argument("--json", action="store_true", help="one JSON object a line on stdout")


def token(args: argparse.Namespace) -> str | None:
    """The token from --token-file (its first line that is not blank or a # comment), else
    --token / GD_TOKEN."""
    if args.token_file is None:
        return args.token or None
    try:
        lines = args.token_file.read_text().splitlines()
    except OSError as e:
        raise ValueError(f"cannot read the token file {args.token_file}: {e}") from e
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    raise ValueError(f"{args.token_file}: no token in the file")
