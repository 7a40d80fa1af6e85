"""Every hostile input found so far, with its exact bytes: issue 12's cases and what the
fuzzers found since. Uploads are files in `corpus/` (how each is sent: `corpus.CASES`);
WebSocket and HTTP cases are written out here. Each is judged by the fuzzers' oracles
(tests/fuzz/harness.py): a JSON 4xx (or a bounded 200), a documented close code, a server
that answers `/healthz` afterwards."""

import contextlib
import dataclasses
import threading
import time
from pathlib import Path

import httpx
import pytest

from core.wire import HEADER
from tests.fuzz import corpus, harness
from tests.fuzz.harness import AUTH, check_http, check_stream, proc_status, upload
from tests.helpers.live import TOKEN, hello

pytestmark = pytest.mark.slow  # every test talks to the run's gd-serve subprocess


def test_every_corpus_file_has_a_case():
    assert sorted(p.name for p in corpus.CORPUS.iterdir()) == sorted(corpus.CASES)


@pytest.mark.parametrize("name", sorted(corpus.CASES))
def test_corpus_upload(fuzz_server, name):
    case = corpus.CASES[name]
    upload(
        fuzz_server,
        name,
        corpus.load(name),
        case.filename,
        case.params,
        refuse=not case.may_succeed,
    )


def test_zip_bomb_memory_stays_near_the_decode_limit(fuzz_server):
    """issue 12: a bzip2 member declared as 100 bytes inflated to 1 GiB (1.3 GB of memory)
    before it was refused. Inflating must stop at the decoded-bytes limit; the peak RSS may
    grow by a few copies of that limit (4x), not by the bomb's size."""
    fuzz_server.reset_peak()  # earlier cases (this bomb among them) raised it
    before = proc_status(fuzz_server.pid, "VmHWM")
    upload(
        fuzz_server,
        "zip-bzip2-bomb",
        corpus.load("zip-bzip2-bomb.zip"),
        "frames.zip",
        {"fps": 30},
        refuse=True,
    )
    grown = proc_status(fuzz_server.pid, "VmHWM") - before
    assert grown <= 4 * fuzz_server.settings.max_decoded_bytes, f"peak RSS grew {grown} bytes"


# --- multipart framing ---------------------------------------------------------------------


def _post_raw(content_type: str, body: bytes):
    def send(client):
        headers = {**AUTH, "Content-Type": content_type}
        return client.post("/v1/detections", params={"fps": 30}, content=body, headers=headers)

    return send


MULTIPART = {
    # issue 12: a boundary of 300 characters raised FormParserError (500)
    "boundary-300": (
        "multipart/form-data; boundary=" + "b" * 300,
        b"--"
        + b"b" * 300
        + b'\r\nContent-Disposition: form-data; name="file"\r\n\r\n'
        + corpus.load("npy-2-frames.npy")
        + b"\r\n--"
        + b"b" * 300
        + b"--\r\n",
    ),
}


@pytest.mark.parametrize("name", sorted(MULTIPART))
def test_multipart(fuzz_server, name):
    content_type, body = MULTIPART[name]
    check_http(fuzz_server, name, _post_raw(content_type, body), body, refuse=True)


# --- protocol edges ------------------------------------------------------------------------


def test_head_on_health_endpoints(fuzz_server):
    """issue 12: `HEAD /healthz` answered 405 (load balancers probe with HEAD)."""
    for path in ("/healthz", "/readyz"):
        response = check_http(fuzz_server, f"HEAD {path}", lambda c, p=path: c.head(p))
        assert response.status_code == 200, f"HEAD {path}: {response.status_code}"


def test_deeply_nested_hello_is_4400(fuzz_server):
    """issue 12: a deeply nested JSON hello closed with 1011."""
    for text in ("[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000):
        result = check_stream(fuzz_server, "nested-hello", text, [])
        assert result.close_code == 4400


def test_message_over_16_mib_is_4413(fuzz_server):
    """issue 12: binary messages over 16 MiB closed with 1009, not the documented 4413."""
    message = HEADER.pack(1_000_000, 0) + bytes(16 << 20)
    result = check_stream(fuzz_server, "16-mib", None, [message])
    assert result.close_code == 4413


def test_two_frames_an_hour_apart_make_few_clips(fuzz_server):
    """issue 12: two frames 3,000 s apart made 3,000 clips (17 s of work, 470 MB)."""
    image = bytes(2 * 32 * 32)
    messages = [HEADER.pack(1_000_000, 0) + image, HEADER.pack(3_001_000_000, 1) + image]
    check_stream(fuzz_server, "gap-3000-s", hello(32, 32, 10), messages)


def test_query_string_tokens_are_refused_and_never_logged(fuzz_server):
    """issue 12: a token put in the URL query was written to the access log."""
    secret = "query-" + TOKEN  # a valid token's look-alike, unique to this test

    def get(client):
        return client.get("/v1/model", params={"token": secret})

    check_http(fuzz_server, "query-token", get, refuse=True)
    in_query = _WithUrl(fuzz_server, f"{fuzz_server.ws_url}?token={secret}")
    check_stream(in_query, "query-token-ws", hello(32, 32, 10), [], token=None, refuse=True)
    assert secret not in fuzz_server.log_path.read_text(errors="replace")


class _WithUrl:
    """`server` with another WebSocket URL (query strings)."""

    def __init__(self, server, ws_url: str) -> None:
        self._server, self.ws_url = server, ws_url

    def __getattr__(self, name):
        return getattr(self._server, name)


def test_stale_spool_files_are_removed_at_start(fuzz_server):
    """issue 12: recordings spooled by a server that was killed stayed in the spool folder.
    The run's server started on a spool with such a file in it (tests/fuzz/conftest.py);
    nothing but a server's start or stop removes another server's files."""
    spool = fuzz_server.settings.spool_dir
    assert not (spool / harness.STALE_SPOOL_FILE).exists()
    assert (spool / harness.OTHERS_SPOOL_FILE).read_text() == "keep"  # not the server's


def test_metrics_content_type_is_the_documented_one(fuzz_server):
    """schemathesis (ST105): `GET /metrics` answers Prometheus text while the OpenAPI schema
    documents application/json."""
    response = check_http(fuzz_server, "metrics", lambda c: c.get("/metrics"))
    documented = fuzz_server.client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    media = documented["responses"]["200"].get("content", {})
    served = response.headers["content-type"].split(";")[0]
    assert served in media, f"serves {served}, documents {sorted(media)}"


def test_stopping_the_server_ends_its_recording_decoders(fuzz_server, tmp_path):
    """Found by the fuzz runs and the soak: a server stopped (SIGTERM) while a recording
    decoder was stuck in librealsense left the decoder running, orphaned, at 100% of a core
    (one ran 28 minutes after its server had gone), and its two spool files behind. Stopping
    the server must end its decoders and remove their files, and answer the upload waiting on
    one 503 `shutting_down` (it was cut off with a 500 after uvicorn's graceful 5 s)."""
    server = _server_of_stuck_decoders(fuzz_server, tmp_path)
    answers: list = []
    sender = threading.Thread(target=_upload_quietly, args=(server, answers), daemon=True)
    try:
        sender.start()
        deadline = time.monotonic() + harness.REQUEST_TIMEOUT_S  # the decoder's start
        while not (decoders := harness.descendants(server.pid)):
            assert time.monotonic() < deadline, "no decoder process was started"
            time.sleep(0.02)
    finally:
        server.stop()  # SIGTERM; kills and records any child still running 5 s later
    assert not server.orphans, f"decoders {server.orphans} outlived the server ({decoders})"
    left = sorted(p.name for p in tmp_path.glob("gd-upload-*"))
    assert not left, f"spool files left behind: {left}"
    sender.join(harness.REQUEST_TIMEOUT_S)
    assert [(r.status_code, r.json()["error"]["code"]) for r in answers] == [(503, "shutting_down")]


def test_a_killed_server_takes_its_recording_decoders_with_it(fuzz_server, tmp_path):
    """`kill -9` gives the server no shutdown to kill its decoders in: the kernel must
    (PR_SET_PDEATHSIG in the decoder), or a decoder stuck in librealsense runs on."""
    server = _server_of_stuck_decoders(fuzz_server, tmp_path)
    sender = threading.Thread(target=_upload_quietly, args=(server,), daemon=True)
    try:
        sender.start()
        deadline = time.monotonic() + harness.REQUEST_TIMEOUT_S
        while not (decoders := harness.descendants(server.pid)) or not _in_librealsense(decoders):
            assert time.monotonic() < deadline, "no decoder process reached librealsense"
            time.sleep(0.02)
        server.proc.kill()
        server.proc.wait()
        assert not harness.reap(decoders), "a decoder outlived its server's SIGKILL"
    finally:
        server.stop()


def _server_of_stuck_decoders(fuzz_server, tmp_path: Path) -> harness.ServerProcess:
    """A gd-serve of its own (the test ends it) whose decoders are still running when it
    ends."""
    settings = dataclasses.replace(
        harness.server_settings(fuzz_server.settings.model, tmp_path),
        decode_timeout_s=300.0,  # the decoder is still running when the server ends
    )
    return harness.ServerProcess(settings, tmp_path / "server.log")


def _in_librealsense(pids: list[int]) -> bool:
    """Past its start-up checks (a decoder whose server is already gone exits there)."""
    try:
        return all("realsense" in Path(f"/proc/{p}/maps").read_text() for p in pids)
    except OSError:
        return False


def _upload_quietly(server, answers: list | None = None) -> None:
    """Upload the recording that hangs librealsense, on a client of its own (`stop` closes the
    server's); its answer, if one comes, goes to `answers`."""
    with (
        contextlib.suppress(httpx.TransportError),
        httpx.Client(base_url=server.url, timeout=harness.REQUEST_TIMEOUT_S) as client,
    ):  # the server stops under it
        answer = client.post(
            "/v1/detections",
            files={"file": ("clip.db3", corpus.load("db3-flipped-freeze.db3"))},
            headers=AUTH,
        )
        if answers is not None:
            answers.append(answer)
