"""gd-serve: start-up errors, and a real start as a subprocess."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from server.cli import WS_MARGIN, main, uvicorn_config
from server.events.store import EventStore, database_url
from server.settings import Settings
from tests.helpers.loopback import http


def test_refuses_to_start_without_tokens(tiny_bundle, capsys):
    assert main(["--model", str(tiny_bundle.root)]) == 2
    assert "no API tokens" in capsys.readouterr().err


def test_refuses_no_auth_on_a_public_bind(tiny_bundle, capsys):
    assert main(["--model", str(tiny_bundle.root), "--no-auth", "--host", "0.0.0.0"]) == 2
    assert "only on a loopback bind" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nothing"), "--no-auth"]) == 2
    assert "not a model bundle" in capsys.readouterr().err


def test_a_score_delay_beyond_the_models_window_is_a_clear_error(tiny_bundle, capsys):
    argv = ["--model", str(tiny_bundle.root), "--no-auth", "--score-delay", "4"]
    assert main(argv) == 2
    assert "score_delay must be in [0, 3] clips for this model" in capsys.readouterr().err


def test_tensorrt_without_it_is_a_clear_error(tiny_bundle, capsys):
    assert main(["--model", str(tiny_bundle.root), "--no-auth", "--device", "tensorrt"]) == 2
    assert "--device tensorrt needs" in capsys.readouterr().err


def _ctrl_c_works() -> None:
    """In the child: SIGINT as a terminal gives it, even where the test runner was started with
    it ignored (nohup, setsid in scripts), which Python would otherwise keep ignoring."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# What a start with the event store on, and no alert rules or MQTT, leaves unimported: each
# is imported where a configuration uses it (docs/server.md, "Start-up cost").
NOT_AT_START = ("alembic", "httpx", "paho", "yaml", "sqlalchemy.dialects.postgresql")


def imported(output: str) -> set[str]:
    """The modules a process imported, from its `-X importtime` lines."""
    return {
        line.rpartition("|")[2].strip()
        for line in output.splitlines()
        if line.startswith("import time:")
    }


@pytest.mark.slow  # a gd-serve process: 3-4 CPU s of imports
@pytest.mark.parametrize(
    "stop, store",
    [(signal.SIGTERM, "empty"), (signal.SIGINT, "current")],  # SIGINT: Ctrl-C on make run
    ids=["SIGTERM-empty-store", "SIGINT-current-store"],
)
def test_serves_from_the_command_line(tiny_bundle, tmp_path, stop, store):
    if store == "current":  # a restart: the event store is at the newest schema already
        EventStore.open(database_url(str(tmp_path / "events.db"))).close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tokens = tmp_path / "tokens"
    tokens.write_text("cli-token\n")
    env = {**os.environ, "GD_MAX_STREAMS": "3", "GD_THREADS": "1", "GD_DATA_DIR": str(tmp_path)}
    log = tmp_path / "output"  # a file, not a pipe: nothing blocks the server while unread
    with log.open("w") as output:
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "server.cli",
             "--model", str(tiny_bundle.root), "--port", str(port), "--tokens-file", str(tokens)],
            env=env, stdout=output, stderr=subprocess.STDOUT, preexec_fn=_ctrl_c_works,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 240  # only against a hang: a loaded machine starts slowly
        while True:
            try:
                r = http.get(f"http://127.0.0.1:{port}/readyz")
                break
            except httpx.ConnectError:
                assert proc.poll() is None, log.read_text()  # it exited: its output says why
                assert time.monotonic() < deadline, "gd-serve did not start listening"
                time.sleep(0.05)
        assert r.json()["max_streams"] == 3  # from the environment
        auth = {"Authorization": "Bearer cli-token"}
        assert http.get(f"http://127.0.0.1:{port}/v1/model", headers=auth).status_code == 200
        # a token in the URL: refused, and the access log (stdout, at info) shows it redacted
        r = http.get(f"http://127.0.0.1:{port}/v1/model?token=cli-token", headers=auth)
        assert r.status_code == 400 and r.json()["error"]["code"] == "token_in_url"
    finally:
        proc.send_signal(stop)
        proc.wait(timeout=20)
    out = log.read_text()
    # uvicorn shuts down gracefully, then re-raises the signal it caught: SIGTERM ends the
    # process, SIGINT becomes a KeyboardInterrupt that gd-serve turns into a quiet exit 130
    assert proc.returncode == {signal.SIGTERM: -signal.SIGTERM, signal.SIGINT: 130}[stop], out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    assert "Finished server process" in out
    assert "cli-token" not in out
    assert '"GET /v1/model?token=*** HTTP/1.1" 400' in out
    modules = imported(out)
    assert {"server.app", "sqlalchemy", "server.events.store"} <= modules  # the store is on
    late = {m for m in modules for name in NOT_AT_START if m == name or m.startswith(name + ".")}
    assert late == set()


def test_uvicorn_reads_messages_past_the_servers_own_limit(tiny_bundle):
    """uvicorn's WebSocket limit sits above max_frame_bytes, so the server's check (4413)
    sees every message just over its limit; uvicorn's 1009 only cuts far larger ones."""
    settings = Settings(model=tiny_bundle.root, max_frame_bytes=1000)
    config = uvicorn_config(None, settings)
    assert config.ws_max_size == 1000 + WS_MARGIN
    assert uvicorn_config(None, settings, ws_max_size=5).ws_max_size == 5  # overrides win
