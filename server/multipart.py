"""The `file` field of a multipart upload, read into memory as it streams in.

Starlette's form parser spools large files to disk; depth frames must never touch it. The body
is capped at the upload limit; an oversized one is read and dropped up to `DRAIN_LIMIT` so that
the client sees the 413.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from server.errors import ApiError

# Bytes of an oversized body read (and dropped) past the limit, so that a client that sends
# its whole body before reading the answer sees the 413 rather than a broken connection.
DRAIN_LIMIT = 64 << 20
MAX_BOUNDARY = 70  # RFC 2046


async def read_file_field(request: Request, max_bytes: int) -> bytearray:
    """The `file` part of a multipart body (ApiError 400, 413 or 415 otherwise)."""
    mime, params = parse_options_header(request.headers.get("content-type", ""))
    if mime != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(
            415, "unsupported_media_type", "send multipart/form-data with the video in 'file'"
        )
    if not 1 <= len(params[b"boundary"]) <= MAX_BOUNDARY:
        raise ApiError(
            400, "bad_request", f"the multipart boundary must be 1 to {MAX_BOUNDARY} characters"
        )
    part: dict[str, Any] = {}
    found: list[bytearray] = []
    header: list[bytes] = [b"", b""]

    def on_part_begin() -> None:
        part.clear()
        part["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        part["headers"][header[0].lower()] = header[1]
        header[0] = header[1] = b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if disposition.get(b"name") == b"file":
            part["data"] = bytearray()
            found.append(part["data"])

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if "data" in part:
            part["data"] += data[start:end]

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    total = 0
    body_limit = max_bytes + (64 << 10)  # room for the multipart framing
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total <= body_limit:
                parser.write(chunk)
            elif total > DRAIN_LIMIT + body_limit:
                break  # read (and dropped) enough: answer now, the connection closes
        if total > body_limit:
            raise ApiError(413, "too_large", f"the upload exceeds the limit of {max_bytes} bytes")
        parser.finalize()
    except ValueError as e:  # the parser's errors, and anything raised on its callbacks' input
        raise ApiError(400, "bad_request", f"malformed multipart body: {e}") from e
    if len(found) != 1:
        raise ApiError(
            400, "bad_request", f"send exactly one multipart field 'file' (got {len(found)})"
        )
    return found[0]
