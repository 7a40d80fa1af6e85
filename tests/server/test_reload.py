"""Hot reload: POST /v1/admin/reload and gd-serve's SIGHUP swap the model under open streams."""

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from core.bundle import FileRef, sha256_file, write_bundle_json
from core.events import Scores, parse_event
from core.wire import WireError
from server import service as service_module
from server.batcher import MicroBatcher
from server.settings import Settings, SettingsError
from tests.helpers.live import ADMIN, ADMIN_AUTH, TOKEN, collect, frame_messages, hello, reload
from tests.helpers.loopback import http
from tests.helpers.streams import FRAMES, TS, stream
from tests.helpers.tiny_bundle import TINY_SPEC, make_bundle, visual_encoder

AUTH = {"Authorization": f"Bearer {TOKEN}"}
OTHER_SPEC = dataclasses.replace(TINY_SPEC, height=16, width=16)
SWITCH_CLIP = 6  # FRAMES[:72] complete clips 0-5 (clip 5 ends at kept frame 23 = frame 69)


def bundle_at(root, version, **kwargs):
    """A tiny bundle with its own version (make_bundle writes 0.0.1)."""
    bundle = dataclasses.replace(make_bundle(root, **kwargs), version=version)
    write_bundle_json(bundle)
    return bundle


@pytest.fixture
def admin_server(make_server, test_settings):
    # a stream waits, sending nothing, while the test reloads: not idle for the server
    settings = dataclasses.replace(test_settings, admin_tokens=(ADMIN,), idle_timeout_s=120)
    return make_server(settings)


def served(live):
    return http.get(f"{live.url}/v1/model", headers=AUTH).json()


async def stream_across(live, model):
    """Stream FRAMES; once clip SWITCH_CLIP - 1 is scored, reload `model`, then send the rest."""
    messages = frame_messages(FRAMES, TS)
    async with connect(live.ws_url, additional_headers=AUTH, max_size=None) as ws:
        await ws.send(json.dumps(hello()))
        events = [json.loads(await ws.recv())]
        for m in messages[: 12 * SWITCH_CLIP]:
            await ws.send(m)
        async with asyncio.timeout(60):
            while events[-1].get("clip") != SWITCH_CLIP - 1 or events[-1]["type"] != "scores":
                events.append(json.loads(await ws.recv()))
        answer = await asyncio.to_thread(reload, live, model)
        for m in messages[12 * SWITCH_CLIP :]:
            await ws.send(m)
        await ws.send(json.dumps({"type": "end"}))
        events += await collect(ws)
        return events, ws.close_code, answer


def test_a_stream_switches_to_the_reloaded_model_at_a_clip_boundary(admin_server, tmp_path):
    new = bundle_at(tmp_path / "new", "0.0.2", name="tiny-new", extra_classes=1)
    events, close, answer = asyncio.run(stream_across(admin_server, new.root))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "model": {"name": "tiny-new", "version": "0.0.2"},
        "previous": {"name": "tiny", "version": "0.0.1"},
        "reloads": 1,
    }
    assert close == 1000 and events[-1]["type"] == "end"
    scores = [e for e in events if e["type"] == "scores"]
    assert [s["clip"] for s in scores] == list(range(12))  # not dropped, no clip lost
    versions = [s["model_version"] for s in scores]
    assert versions == ["0.0.1"] * SWITCH_CLIP + ["0.0.2"] * (12 - SWITCH_CLIP)
    labels = [{t["label"] for t in s["top"]} for s in scores]  # the new model's classes
    assert all("extra-0" not in x for x in labels[:SWITCH_CLIP])
    assert all("extra-0" in x for x in labels[SWITCH_CLIP:])
    # between the old model's last scores and the new one's first: the open action ends (the
    # new model's window starts empty), then the warning
    at = events.index(scores[SWITCH_CLIP - 1])
    between = events[at + 1 : events.index(scores[SWITCH_CLIP])]
    assert [(e["type"], e.get("state", e.get("code"))) for e in between] == [
        ("action", "end"),
        ("warning", "model_switched"),
    ]
    assert f"from clip {SWITCH_CLIP} on" in between[1]["message"]
    # the actions are those of one model's stream: small ends before the switch, large after
    ends = [
        (e["label"], e["first_clip"], e["last_clip"]) for e in events if e.get("state") == "end"
    ]
    assert ends == [("small", 2, 5), ("large", 8, 10)]
    # what the server shows: the card, a new stream's ready, the metrics
    assert served(admin_server)["version"] == "0.0.2"
    assert stream(admin_server.ws_url).ready["model"] == {"name": "tiny-new", "version": "0.0.2"}
    metrics = http.get(f"{admin_server.url}/metrics").text
    assert 'gd_model_reloads_total{result="ok"} 1.0' in metrics
    assert 'gd_model_info{name="tiny-new",version="0.0.2"} 1.0' in metrics
    assert 'version="0.0.1"' not in metrics


def test_a_stream_finishes_on_its_model_when_the_new_clip_spec_differs(admin_server, tmp_path):
    new = bundle_at(tmp_path / "small", "0.0.3", spec=OTHER_SPEC)
    events, close, answer = asyncio.run(stream_across(admin_server, new.root))
    assert answer.status_code == 200, answer.text
    assert close == 1000
    scores = [e for e in events if e["type"] == "scores"]
    assert [s["clip"] for s in scores] == list(range(12))
    assert {s["model_version"] for s in scores} == {"0.0.1"}
    kept = [e for e in events if e.get("code") == "model_kept"]
    assert len(kept) == 1 and "reconnect" in kept[0]["message"]  # told once
    assert [e["code"] for e in events if e["type"] == "warning"] == ["model_kept"]
    after = stream(admin_server.ws_url)  # a new stream gets the new model and its sizes
    assert after.ready["model"]["version"] == "0.0.3" and after.ready["clip"]["height"] == 16
    assert {s["model_version"] for s in after.of("scores")} == {"0.0.3"}


def broken_bundles(tmp_path):
    """(bundle folder, what the refusal must say) for each check a bundle can fail."""
    bad_onnx = make_bundle(tmp_path / "bad-onnx")
    path = bad_onnx.path("sequence_encoder")
    path.write_bytes(b"not an ONNX file")
    ref = FileRef(path.name, sha256_file(path))  # the hash matches: ONNX Runtime must refuse
    write_bundle_json(
        dataclasses.replace(bad_onnx, files={**bad_onnx.files, "sequence_encoder": ref})
    )
    wrong_shape = make_bundle(tmp_path / "shape", visual=visual_encoder(OTHER_SPEC))
    corrupt = make_bundle(tmp_path / "corrupt")
    corrupt.path("visual_encoder").write_bytes(b"changed")
    return [
        (tmp_path / "nothing", "not a model bundle"),
        (bad_onnx.root, "ONNX Runtime cannot load it"),
        (wrong_shape.root, "visual_encoder input axis 2 is 16, the bundle says 32"),
        (corrupt.root, "does not match its sha256"),
    ]


def test_a_bundle_that_fails_its_checks_is_refused_and_the_old_model_serves(admin_server, tmp_path):
    for root, problem in broken_bundles(tmp_path):
        r = reload(admin_server, root)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_bundle" and problem in error["message"], error
    assert served(admin_server)["version"] == "0.0.1"
    scores = stream(admin_server.ws_url).of("scores")
    assert len(scores) == 12 and {s["model_version"] for s in scores} == {"0.0.1"}
    metrics = http.get(f"{admin_server.url}/metrics").text
    assert 'gd_model_reloads_total{result="refused"} 4.0' in metrics
    assert 'gd_model_info{name="tiny",version="0.0.1"} 1.0' in metrics


def test_a_score_delay_setting_the_new_model_cannot_take_is_refused(
    make_server, test_settings, tmp_path
):
    live = make_server(dataclasses.replace(test_settings, admin_tokens=(ADMIN,), score_delay=3))
    small_window = bundle_at(tmp_path / "w2", "2", spec=dataclasses.replace(TINY_SPEC, window=2))
    r = reload(live, small_window.root)
    assert r.status_code == 422 and "score_delay must be in [0, 1]" in r.json()["error"]["message"]


def test_the_event_loop_serves_while_a_bundle_loads(admin_server, tmp_path, monkeypatch):
    """The load runs in a thread: held there, the server still answers."""
    new = bundle_at(tmp_path / "new", "0.0.2")
    entered, release = threading.Event(), threading.Event()
    real = service_module.load_engine

    def held(*args, **kwargs):
        entered.set()
        assert release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(service_module, "load_engine", held)
    answer = []
    caller = threading.Thread(target=lambda: answer.append(reload(admin_server, new.root)))
    caller.start()
    try:
        assert entered.wait(60)
        assert http.get(f"{admin_server.url}/healthz").status_code == 200
        assert served(admin_server)["version"] == "0.0.1"  # the old serves until the swap
    finally:
        release.set()
        caller.join(60)
    assert answer[0].status_code == 200 and served(admin_server)["version"] == "0.0.2"


def test_only_admin_tokens_reload(admin_server, make_server, test_settings, tiny_bundle):
    root = tiny_bundle.root
    none = reload(admin_server, root, headers={})
    assert none.status_code == 401 and none.json()["error"]["code"] == "unauthorized"
    client = reload(admin_server, root, headers=AUTH)
    assert client.status_code == 403 and client.json()["error"]["code"] == "forbidden"
    # an admin token is no API token
    assert http.get(f"{admin_server.url}/v1/model", headers=ADMIN_AUTH).status_code == 401
    # without admin tokens: off, for every token; SIGHUP still reloads
    off = make_server(test_settings)
    r = reload(off, root, headers=AUTH)
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"
    assert "SIGHUP" in r.json()["error"]["message"]
    # without auth (a loopback bind): as open as the rest, to this loopback client
    open_server = make_server(dataclasses.replace(test_settings, tokens=(), no_auth=True))
    assert reload(open_server, root, headers={}).status_code == 200
    # a body the endpoint does not know
    assert reload(admin_server, None).status_code == 200  # no body: the configured model
    r = http.post(f"{admin_server.url}/v1/admin/reload", json={"modle": "x"}, headers=ADMIN_AUTH)
    assert r.status_code == 400 and "modle" in r.json()["error"]["message"]


def test_admin_tokens_are_their_own(tmp_path, tiny_bundle):
    path = tmp_path / "admins"
    path.write_text("# admins\nadmin-a\n\nadmin-b\n")
    settings = Settings(model=tiny_bundle.root, tokens=("client",), admin_tokens_file=path)
    assert settings.check_admin(settings.check_auth()) == ("admin-a", "admin-b")
    both = Settings(model=tiny_bundle.root, tokens=("same",), admin_tokens=("same",))
    with pytest.raises(SettingsError, match="both an API token and an admin token"):
        both.check_admin(both.check_auth())
    assert "same" not in repr(both)  # secret, like the API tokens
    with pytest.raises(SettingsError, match="cannot read admin tokens file"):
        Settings(admin_tokens_file=tmp_path / "missing").all_admin_tokens()


def test_a_batcher_runs_each_models_items_with_that_model():
    """Old and new models' clips share the batcher; each run is one model's."""

    async def main():
        sizes = []
        batcher = MicroBatcher(None, ThreadPoolExecutor(1), 8, 0.01, lambda n, s: sizes.append(n))
        batcher.start()
        double, negate = (lambda x: x * 2), (lambda x: -x)
        items = [np.full(3, i, np.float32) for i in range(6)]
        fns = [double, negate] * 3
        futures = [batcher.submit(x, f) for x, f in zip(items, fns, strict=True)]  # one batch
        out = await asyncio.gather(*futures)
        with pytest.raises(ValueError, match="no model function"):
            batcher.submit(items[0])
        await batcher.stop()
        return items, fns, out, sizes

    items, fns, out, sizes = asyncio.run(main())
    for x, f, y in zip(items, fns, out, strict=True):
        assert np.array_equal(y, f(x))
    assert sizes == [3, 3]  # one batch of six items: a run per model


def test_scores_of_an_older_server_parse_without_a_model_version():
    scores = stream_scores_message()
    old = {k: v for k, v in scores.items() if k != "model_version"}
    assert parse_event(old).model_version == ""
    assert parse_event(scores).model_version == "0.0.2"
    with pytest.raises(WireError, match="model_version must be a string"):
        Scores.parse({**scores, "model_version": 2})


def stream_scores_message():
    top = [{"label": "small", "class_id": 1, "score": 0.9}]
    return {"type": "scores", "clip": 0, "start_frame": 0, "end_frame": 11, "start_s": 0.0,
            "end_s": 0.4, "start_timestamp_us": 0, "end_timestamp_us": 400_000,
            "activity": 0.9, "top": top, "frame_index": 11, "timestamp_us": 366_667,
            "model_version": "0.0.2"}  # fmt: skip


def wait_for(predicate, proc, what, timeout=300):
    """Poll until `predicate()` holds; the deadline only bounds a hang, it decides nothing."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_sighup_reloads_the_configured_bundle(tmp_path):
    root = tmp_path / "served"
    bundle_at(root, "1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    # its event store in tmp_path, not the checkout's data/ (which `make run` shows)
    env = {**os.environ, "GD_TOKENS": TOKEN, "GD_THREADS": "1", "GD_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "--model", str(root), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    def version():
        return http.get(f"{url}/v1/model", headers=AUTH).json()["version"]

    try:
        wait_for(lambda: version() == "1", proc, "the server serves")
        bundle_at(root, "2", name="tiny-2")  # a new export over the configured folder
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: version() == "2", proc, "SIGHUP reloads version 2")
        (root / "sequence_encoder.onnx").unlink()  # a broken bundle: refused, 2 serves on
        os.kill(proc.pid, signal.SIGHUP)
        refused = 'gd_model_reloads_total{result="refused"} 1.0'
        wait_for(lambda: refused in http.get(f"{url}/metrics").text, proc, "refusal")
        assert version() == "2"
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert "model reloaded from" in out and "tiny 1 -> tiny-2 2" in out
    assert "model reload refused, still serving tiny-2 2" in out
    assert "sequence_encoder file sequence_encoder.onnx is missing" in out
    assert "Traceback" not in out
