"""Credentials in URLs: refused, and never written to the logs.

A token in a query string ends up in access logs, proxy logs and shell history. The API takes
tokens only in the `Authorization` header (or a stream's `hello`): a request that puts one in
the URL is refused (HTTP 400 here, close 4400 in server/stream.py), and the uvicorn log lines
that echo URLs have the values of sensitive keys replaced before any handler sees them.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

SENSITIVE_KEYS = frozenset({
    "token", "access_token", "id_token", "refresh_token", "auth_token", "bearer", "jwt",
    "api_key", "apikey", "key", "auth", "authorization", "password", "secret", "client_secret",
})  # fmt: skip
REDACTED = "***"
# One `key=value` pair of a query string inside any text (a path, a whole log line).
_PAIR = re.compile(r"(?<=[?&;])([^=&;#\s\"]+)=([^&;#\s\"]*)")
LOGGERS = ("uvicorn.access", "uvicorn.error")  # the ones that print request URLs


def _is_sensitive(key: str) -> bool:
    return unquote_plus(key).strip().lower().replace("-", "_") in SENSITIVE_KEYS


def sensitive_keys(query: str | bytes) -> list[str]:
    """The sensitive keys in a query string (without its `?`), as the client spelled them."""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    pairs = (p.partition("=")[0] for p in re.split(r"[&;]", query) if p)
    return sorted({unquote_plus(k) for k in pairs if _is_sensitive(k)})


def refusal_message(keys: list[str]) -> str:
    return (
        f"credentials in the URL ({', '.join(keys)}) are refused, as URLs end up in logs: "
        "send the token in the Authorization header (Bearer), or on a stream in the hello"
    )


def redact(text: str) -> str:
    """`text` with the value of every sensitive `key=value` after `?`, `&` or `;` hidden."""

    def hide(m: re.Match) -> str:
        return f"{m[1]}={REDACTED}" if _is_sensitive(m[1]) else m[0]

    return _PAIR.sub(hide, text) if "=" in text else text


class RedactFilter(logging.Filter):
    """Hides sensitive query values in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_any(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_any(v) for k, v in record.args.items()}
        return True


def _redact_any(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def install_log_redaction() -> None:
    """Put a `RedactFilter` on uvicorn's loggers (once; uvicorn's own config keeps it)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactFilter) for f in logger.filters):
            logger.addFilter(RedactFilter())


class RefuseQueryTokens:
    """ASGI middleware: an HTTP request with a credential in its query string gets a 400."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (keys := sensitive_keys(scope.get("query_string", b""))):
            body = {"error": {"code": "token_in_url", "message": refusal_message(keys)}}
            await JSONResponse(body, status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)
