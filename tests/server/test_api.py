"""REST endpoints against a real uvicorn on loopback: uploads, errors, auth, ops endpoints."""

import dataclasses
import io
import logging
import zipfile

import cv2
import numpy as np
import pytest

from core.clip import frame_timestamps_us
from core.realsense import record_depth
from tests.helpers.live import TOKEN, npy_bytes, upload
from tests.helpers.loopback import http
from tests.helpers.tiny_bundle import PROB_TOL, TINY_SPEC, reference_probs, scene

AUTH = {"Authorization": f"Bearer {TOKEN}"}
FRAMES = scene(150, actions=((24, 72, 0.15), (96, 132, 0.5)))


def test_npy_upload(server):
    r = upload(server.url, npy_bytes(FRAMES), fps=30)
    assert r.status_code == 200
    body = r.json()
    assert body["detections"] == [
        {
            "label": "small",
            "class_id": 1,
            "start_frame": 24,
            "end_frame": 71,
            "start_s": 0.8,
            "end_s": 2.4,
            "confidence": pytest.approx(reference_probs(0.15)[1], abs=0.02),
        },
        {
            "label": "large",
            "class_id": 2,
            "start_frame": 96,
            "end_frame": 131,
            "start_s": 3.2,
            "end_s": 4.4,
            "confidence": pytest.approx(reference_probs(0.5)[2], abs=0.02),
        },
    ]
    assert body["clip_scores"] is None
    assert body["model"] == {"name": "tiny", "version": "0.0.1"}
    assert body["video"] == {
        "format": "npy", "frames": 150, "height": 48, "width": 64,
        "duration_s": pytest.approx(149 / 30, abs=1e-6), "clips": 12,
    }  # fmt: skip
    assert set(body["timing_ms"]) >= {"decode", "visual_encoder", "sequence_encoder", "total"}


@pytest.mark.numerics
def test_clip_scores_on_request(server):
    body = upload(server.url, npy_bytes(FRAMES), fps=30, scores="true").json()
    scores = body["clip_scores"]
    assert [s["clip"] for s in scores] == list(range(12))
    assert (scores[1]["start_s"], scores[1]["end_s"]) == (0.4, 0.8)
    assert scores[0]["activity"] == pytest.approx(1 - reference_probs(0.0)[0], abs=PROB_TOL)
    assert scores[9]["probs"] == pytest.approx(list(reference_probs(0.5)), abs=0.02)


def test_other_frame_rates_number_frames_in_the_upload(server):
    """At 15 fps, detections give the upload's own frame numbers and the same seconds."""
    slow = FRAMES[::2]  # 75 frames at 15 fps: actions at frames 12..35 and 48..65
    body = upload(server.url, npy_bytes(slow), fps=15).json()
    d = body["detections"]
    assert [(x["label"], x["start_s"], x["end_s"]) for x in d] == [
        ("small", 0.8, 2.4),
        ("large", 3.2, 4.4),
    ]
    assert [(x["start_frame"], x["end_frame"]) for x in d] == [(12, 35), (48, 65)]


def test_zip_npz_and_db3_give_the_same_detections(server, tmp_path):
    want = upload(server.url, npy_bytes(FRAMES), fps=30).json()["detections"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, f in enumerate(FRAMES):
            z.writestr(f"depth/{i:05d}.png", cv2.imencode(".png", f)[1].tobytes())
    assert upload(server.url, buf.getvalue(), "frames.zip", fps=30).json()["detections"] == want
    npz = io.BytesIO()
    np.savez(npz, depth=FRAMES, fps=np.array(30.0))
    assert upload(server.url, npz.getvalue(), "clip.npz").json()["detections"] == want
    record_depth(tmp_path / "r.db3", FRAMES, 5_000_000 + frame_timestamps_us(150, 30), fps=30)
    r = upload(server.url, (tmp_path / "r.db3").read_bytes(), "r.db3")
    assert r.status_code == 200 and r.json()["detections"] == want


@pytest.mark.parametrize(
    ("data", "params", "status", "code"),
    [
        (b"GIF89a" + b"\0" * 100, {"fps": 30}, 415, "unsupported_media_type"),
        (npy_bytes(FRAMES.astype(np.float32)), {"fps": 30}, 422, "invalid_video"),
        (npy_bytes(FRAMES), {}, 422, "fps_required"),
        (npy_bytes(FRAMES[:5]), {"fps": 30}, 422, "invalid_video"),  # shorter than one clip
        (npy_bytes(FRAMES), {"fps": -1}, 400, "bad_request"),
        (npy_bytes(FRAMES), {"fps": "fast"}, 400, "bad_request"),
    ],
)
def test_upload_errors(server, data, params, status, code):
    r = upload(server.url, data, **params)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_too_short_says_why(server):
    r = upload(server.url, npy_bytes(FRAMES[:5]), fps=30)
    assert "one clip needs 4" in r.json()["error"]["message"]


def test_oversized_upload_is_413_and_the_server_goes_on(server, test_settings):
    big = b"\x93NUMPY" + b"\0" * (test_settings.max_upload_bytes + 100_000)
    r = upload(server.url, big, fps=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert upload(server.url, npy_bytes(FRAMES), fps=30).status_code == 200


@pytest.mark.slow
def test_zip_bomb_upload_is_413(server):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("0.png", b"\0" * (200 << 20))
    r = upload(server.url, buf.getvalue(), "bomb.zip", fps=30)
    assert r.status_code == 413 and "inflates" in r.json()["error"]["message"]


def test_not_multipart_and_missing_field(server):
    r = http.post(f"{server.url}/v1/detections?fps=30", content=npy_bytes(FRAMES), headers=AUTH)
    assert r.status_code == 415 and "multipart" in r.json()["error"]["message"]
    r = http.post(
        f"{server.url}/v1/detections?fps=30",
        files={"video": ("a.npy", npy_bytes(FRAMES))},
        headers=AUTH,
    )
    assert r.status_code == 400 and "'file'" in r.json()["error"]["message"]
    r = http.post(
        f"{server.url}/v1/detections?fps=30",
        content=b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert r.status_code in (400, 415)


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
def test_401_without_a_valid_token(server, headers):
    for r in (
        http.post(
            f"{server.url}/v1/detections?fps=30", files={"file": ("a", b"x")}, headers=headers
        ),
        http.get(f"{server.url}/v1/model", headers=headers),
    ):
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"


def test_tokens_never_reach_the_logs(server, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-never-logged"
    http.get(f"{server.url}/v1/model", headers={"Authorization": f"Bearer {secret}"})
    http.get(f"{server.url}/v1/model", headers=AUTH)
    upload(server.url, npy_bytes(FRAMES), fps=30)
    import asyncio

    from tests.helpers.live import run_stream

    asyncio.run(run_stream(server.ws_url, FRAMES[:30], token=secret, header_token=False))
    asyncio.run(run_stream(server.ws_url, FRAMES[:30], header_token=False))
    # every record but the test client's own (websockets.client logs what it sends)
    server_side = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args}" for r in server_side)
    assert "gd.server.stream" in logged and "uvicorn" in logged  # the server did log ...
    assert secret not in logged and TOKEN not in logged  # ... without the tokens


def test_model_card(server, tiny_bundle):
    card = http.get(f"{server.url}/v1/model", headers=AUTH).json()
    assert card["name"] == "tiny" and card["classes"] == ["background", "small", "large"]
    assert card["clip"] == dataclasses.asdict(TINY_SPEC)
    assert card["files"]["visual_encoder"] == {"sha256": tiny_bundle.files["visual_encoder"].sha256}
    assert card["engine"]["backend"] == "onnxruntime"
    assert card["engine"]["providers"] == ["CPUExecutionProvider"]


def test_health_ready_metrics(server):
    assert http.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = http.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    upload(server.url, npy_bytes(FRAMES), fps=30)
    text = http.get(f"{server.url}/metrics").text
    for name in (
        "gd_streams_active",
        "gd_frames_received_total",
        "gd_frames_dropped_total",
        "gd_clip_latency_seconds_bucket",
        "gd_batch_size_bucket",
        'gd_uploads_total{status="200"}',
    ):
        assert name in text


def test_readyz_is_503_at_the_stream_limit(make_server, test_settings):
    live = make_server(dataclasses.replace(test_settings, max_streams=1))
    live.service.active_streams = 1  # as if a stream were open
    r = http.get(f"{live.url}/readyz")
    assert r.status_code == 503 and r.json()["status"] == "busy"
    live.service.active_streams = 0


def test_cors_is_closed_by_default_and_opens_per_origin(server, make_server, test_settings):
    origin = {"Origin": "https://evil.example", **AUTH}
    r = http.get(f"{server.url}/v1/model", headers=origin)
    assert "access-control-allow-origin" not in r.headers
    live = make_server(dataclasses.replace(test_settings, cors_origins=("https://ok.example",)))
    r = http.get(f"{live.url}/v1/model", headers={**AUTH, "Origin": "https://ok.example"})
    assert r.headers["access-control-allow-origin"] == "https://ok.example"
    r = http.get(f"{live.url}/v1/model", headers=origin)
    assert "access-control-allow-origin" not in r.headers


def test_no_auth_on_loopback(make_server, test_settings):
    live = make_server(dataclasses.replace(test_settings, tokens=(), no_auth=True))
    assert http.get(f"{live.url}/v1/model").status_code == 200


def test_unknown_route_has_the_error_format(server):
    r = http.get(f"{server.url}/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_openapi_documents_the_upload(server):
    spec = http.get(f"{server.url}/openapi.json").json()
    post = spec["paths"]["/v1/detections"]["post"]
    assert "file" in post["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"fps", "scores"} <= {p["name"] for p in post["parameters"]}
