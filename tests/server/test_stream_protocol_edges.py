"""Protocol edges (issue 12 item 4): malformed hellos, oversized messages, HEAD probes and
tokens in URLs, against a real uvicorn on loopback with a real websockets client."""

import asyncio
import json
import logging
import socket

import pytest
from websockets.asyncio.client import connect

from core.wire import MAX_CONTROL_BYTES, MAX_JSON_DEPTH, pack_header
from server.cli import WS_MARGIN
from server.querytokens import redact, sensitive_keys
from tests.helpers.live import TOKEN, hello, run_stream
from tests.helpers.loopback import http
from tests.helpers.streams import FRAMES

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def nested(depth: int) -> str:
    """A hello with one extra field nested `depth - 1` lists deep (the hello is level 1)."""
    body = json.dumps(hello())[:-1]
    return body + ', "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


MALFORMED_HELLOS = {
    # name: (first message as sent, message fragment)
    "nested_100k": ("[" * 100_000, f"deeper than {MAX_JSON_DEPTH}"),
    "nested_objects": ('{"a":' * 100_000 + "1" + "}" * 100_000, f"deeper than {MAX_JSON_DEPTH}"),
    "nested_just_over": (nested(MAX_JSON_DEPTH + 1), f"deeper than {MAX_JSON_DEPTH}"),
    "array": ("[1, 2]", "JSON object, got list"),
    "string": ('"hello"', "JSON object, got str"),
    "null": ("null", "JSON object, got NoneType"),
    "no_type": ("{}", "string 'type'"),
    "integer_of_5000_digits": ('{"type": "hello", "width": ' + "9" * 5000 + "}", "not valid JSON"),
    "fps_nan": (json.dumps(hello(fps=float("nan"))), "'fps' must be a finite number"),
    "fps_infinity": (json.dumps(hello(fps=float("inf"))), "'fps' must be a finite number"),
    "fps_1e400": (json.dumps(hello())[:-1] + ', "fps": 1e400}', "'fps' must be a finite number"),
    "fps_huge_int": (json.dumps(hello(fps=10**400)), "'fps' must be a finite number"),
    "fps_1e9": (json.dumps(hello(fps=1e9)), "fps must be in (0, 1000]"),
    "fps_string": (json.dumps(hello(fps="30")), "'fps' must be float"),
    "width_huge_int": (json.dumps(hello(width=10**300)), "width must be in [1, 4096], got 1000"),
    "width_negative": (json.dumps(hello(width=-1)), "width must be in [1, 4096]"),
    "height_float": (json.dumps(hello(height=48.5)), "'height' must be int"),
    "height_list": (json.dumps(hello(height=[48])), "'height' must be int"),
    "depth_units_null": (json.dumps(hello(depth_units=None)), "'depth_units' must be float"),
    "depth_units_nan": (
        json.dumps(hello(depth_units=float("nan"))), "'depth_units' must be a finite number",
    ),
    "protocol_huge": (json.dumps(hello(protocol=10**1000)), "is not supported"),
    "protocol_bool": (json.dumps(hello(protocol=True)), "'protocol' must be int"),
    "camera_id_number": (json.dumps(hello(camera_id=7)), "'camera_id' must be str"),
    "camera_id_long": (json.dumps(hello(camera_id="c" * 100_000)), "camera_id must be 1-128"),
    "encoding_object": (json.dumps(hello(encoding={"a": 1})), "unknown encoding"),
    "many_unknown_fields": (
        json.dumps({**hello(), **{f"f{i}": i for i in range(5000)}}), "unknown field(s)",
    ),
}  # fmt: skip


def test_every_malformed_hello_closes_4400_naming_the_problem(server):
    async def everything():
        return await asyncio.gather(*(
            run_stream(server.ws_url, messages=[], hello_message=first, end=False)
            for first, _ in MALFORMED_HELLOS.values()
        ))  # fmt: skip

    results = asyncio.run(everything())
    for (name, (_, fragment)), r in zip(MALFORMED_HELLOS.items(), results, strict=True):
        errors = r.of("error")
        assert r.close_code == 4400, (name, r.close_code, r.events)
        assert len(errors) == 1 and errors[0]["code"] == "bad_request", (name, errors)
        assert fragment in errors[0]["message"], (name, errors[0]["message"])
        assert len(errors[0]["message"]) < 300, name  # echoes the bad value briefly
    assert server.service.active_streams == 0
    assert asyncio.run(run_stream(server.ws_url, FRAMES[:30])).close_code == 1000


def test_a_hello_nested_to_the_limit_is_only_an_unknown_field(server):
    r = asyncio.run(
        run_stream(server.ws_url, messages=[], hello_message=nested(MAX_JSON_DEPTH), end=False)
    )
    assert r.close_code == 4400 and "unknown field(s): x" in r.of("error")[0]["message"]


LIMIT = 16 << 20  # the test server's max_frame_bytes: the default


@pytest.mark.parametrize(
    ("first", "then", "code"),
    [  # first: the first message (None: a good hello); then: the message after it
        (None, b"\0" * (LIMIT + 1), "frame_too_large"),  # a frame
        (None, b"\0" * (LIMIT + WS_MARGIN), "frame_too_large"),  # the largest uvicorn reads
        (None, " " * (LIMIT + 1), "message_too_large"),  # a text control message
        (b"\0" * (LIMIT + 1), None, "message_too_large"),  # binary instead of the hello
        ("x" * (LIMIT + 1), None, "message_too_large"),  # a text hello
        ("x" * (MAX_CONTROL_BYTES + 1), None, "message_too_large"),  # just over the JSON cap
        ("é" * (MAX_CONTROL_BYTES // 2 + 1), None, "message_too_large"),  # UTF-8 bytes count
    ],
)
def test_oversized_messages_close_4413(server, first, then, code):
    first = json.dumps(hello()) if first is None else first
    messages = [] if then is None else [then]
    r = asyncio.run(run_stream(server.ws_url, messages=messages, hello_message=first, end=False))
    assert r.close_code == 4413, (r.close_code, r.events)
    assert r.close_reason == code and r.of("error")[0]["code"] == code
    assert server.service.active_streams == 0


def test_messages_far_over_the_limit_are_cut_unread_by_the_transport(server):
    """Beyond max_frame_bytes + WS_MARGIN uvicorn closes with the standard 1009 before
    reading the payload; the server serves on."""
    too_big = b"\0" * (LIMIT + WS_MARGIN + 1)
    r = asyncio.run(run_stream(server.ws_url, messages=[too_big], end=False))
    assert r.close_code == 1009
    assert asyncio.run(run_stream(server.ws_url, FRAMES[:30])).close_code == 1000


# --- HEAD on the probes ------------------------------------------------------------------


def raw_head(url: str, path: str) -> bytes:
    """The whole answer to a HEAD request, read off the socket until the server closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_head_on_health_and_readiness(server):
    for path in ("/healthz", "/readyz"):
        answer = raw_head(server.url, path)
        assert answer.startswith(b"HTTP/1.1 200 "), (path, answer)
        assert answer.endswith(b"\r\n\r\n"), (path, answer)  # headers, and no body
    server.service.draining = True
    try:
        answer = raw_head(server.url, "/readyz")
    finally:
        server.service.draining = False
    assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(b"\r\n\r\n"), answer
    assert http.head(server.url + "/healthz").status_code == 200


def test_head_stays_out_of_the_openapi_schema(server):
    paths = http.get(server.url + "/openapi.json").json()["paths"]
    assert set(paths["/healthz"]) == set(paths["/readyz"]) == {"get"}


# --- tokens in URLs ----------------------------------------------------------------------

SECRET = "s3cret-in-the-url"


@pytest.mark.parametrize(
    ("query", "keys"),
    [
        ("token=a", ["token"]),
        ("fps=30&access_token=a", ["access_token"]),
        ("Api-Key=a", ["Api-Key"]),
        ("%74oken=a", ["token"]),  # percent-encoded key
        ("fps=30;password=a", ["password"]),
        ("fps=30&scores=true", []),
        ("tokens=a&monkey=b", []),
        ("", []),
    ],
)
def test_sensitive_keys(query, keys):
    assert sensitive_keys(query) == keys
    assert sensitive_keys(query.encode()) == keys


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('1.2.3.4 - "GET /v1/model?token=abc HTTP/1.1" 400', '"GET /v1/model?token=*** HTTP/1.1"'),
        ("/v1/stream?fps=30&API_KEY=abc&x=1", "/v1/stream?fps=30&API_KEY=***&x=1"),
        ("/v1/stream?%74oken=abc#frag", "/v1/stream?%74oken=***#frag"),
        ("/v1/detections?fps=30", "/v1/detections?fps=30"),
        ("token=abc without a query", "token=abc without a query"),
    ],
)
def test_redact(text, want):
    assert want in redact(text)


@pytest.fixture
def access_log():
    """Every uvicorn access and error log line, formatted, while the test runs."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.INFO)  # the test server logs warnings only
        lg.addHandler(handler)
    yield lines
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def test_tokens_in_the_url_are_refused_and_never_logged(server, access_log):
    for query in (f"token={SECRET}", f"fps=30&access_token={SECRET}", f"%74oken={SECRET}"):
        r = http.get(f"{server.url}/v1/model?{query}", headers=AUTH)  # even with a good header
        assert r.status_code == 400, query
        error = r.json()["error"]
        assert error["code"] == "token_in_url" and "Authorization header" in error["message"]
        assert SECRET not in r.text
    r = http.post(f"{server.url}/v1/detections?fps=30&api_key={SECRET}", headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "token_in_url"
    assert http.get(f"{server.url}/v1/model?fps=30", headers=AUTH).status_code == 200

    ws = asyncio.run(run_stream(f"{server.ws_url}?token={SECRET}", FRAMES[:30]))
    assert ws.close_code == 4400 and ws.close_reason == "token_in_url"
    assert "hello" in ws.of("error")[0]["message"] and not ws.of("scores")

    log = "\n".join(access_log)
    assert SECRET not in log
    assert "/v1/model?token=*** HTTP/1.1" in log and "/v1/stream?token=***" in log
    assert server.service.active_streams == 0


def test_a_stream_token_in_the_header_or_hello_still_works(server):
    async def both():
        async with connect(server.ws_url, additional_headers=AUTH) as ws:
            await ws.send(json.dumps(hello()))
            header = json.loads(await ws.recv())["type"]
        r = await run_stream(server.ws_url, FRAMES[:30], header_token=False)
        return header, r.close_code

    assert asyncio.run(both()) == ("ready", 1000)


def test_binary_first_message_under_the_limit_is_still_a_bad_request(server):
    r = asyncio.run(run_stream(server.ws_url, messages=[], hello_message=pack_header(1, 0)))
    assert r.close_code == 4400 and "JSON hello" in r.of("error")[0]["message"]
