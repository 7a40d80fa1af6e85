"""Live scores with a delay (issue 11 item 3): clip c's scores come from its position in the
window that ends `score_delay` clips later. Real uvicorn on loopback, real websockets client,
and the live server's own ONNX Runtime sessions for the offline reference."""

import asyncio
import dataclasses
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from core.bundle import FileRef, sha256_file, write_bundle_json
from core.clip import DepthPreprocessor, frame_timestamps_us, resample_indices, video_clips
from tests.helpers.live import TOKEN, frame_messages, hello, run_stream
from tests.helpers.loopback import http
from tests.helpers.streams import FRAMES, TS, stream
from tests.helpers.tiny_bundle import (
    CLASSES,
    FEATURES,
    TINY_SPEC,
    W_1,
    W_N,
    _const,
    _model,
    make_bundle,
    scene,
)

T_W = TINY_SPEC.window


def future_mean_encoder() -> onnx.ModelProto:
    """A sequence encoder that looks ahead: position t scores the mean feature of positions
    t .. end of its window (the tiny model's classes otherwise)."""
    w = np.zeros((FEATURES, len(CLASSES)), np.float32)
    w[0], w[1] = W_N, W_1
    nodes = [
        _const("w", w),
        _const("axis", np.array(1, np.int64)),
        _const("one", np.array(1.0, np.float32)),
        _const("zero", np.array(0.0, np.float32)),
        helper.make_node("Mul", ["features", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "one"], ["ones"]),
        helper.make_node("CumSum", ["ones", "axis"], ["count"], reverse=1),
        helper.make_node("CumSum", ["features", "axis"], ["total"], reverse=1),
        helper.make_node("Div", ["total", "count"], ["mixed"]),
        helper.make_node("MatMul", ["mixed", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "time", FEATURES])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", "time", len(CLASSES)])
    return _model(nodes, [x], [y])


@pytest.fixture(scope="module")
def lookahead_bundle(tmp_path_factory):
    bundle = make_bundle(tmp_path_factory.mktemp("lookahead") / "bundle", name="lookahead")
    path = bundle.root / "sequence_encoder.onnx"
    onnx.save(future_mean_encoder(), path)
    files = {**bundle.files, "sequence_encoder": FileRef(path.name, sha256_file(path))}
    bundle = dataclasses.replace(bundle, files=files, causal=False)
    write_bundle_json(bundle)
    return bundle


def varied_scene(n_clips: int = 9) -> np.ndarray:
    """48x64 frames, a different near area every clip (12 source frames = 4 kept = 1 clip)."""
    areas = np.random.default_rng(11).choice([0.0, 0.03, 0.1, 0.2, 0.4, 0.6], n_clips)
    return np.concatenate([scene(12, actions=((0, 12, a),), seed=c) for c, a in enumerate(areas)])


def offline_rows(engine, frames: np.ndarray, delay: int) -> np.ndarray:
    """Each clip's probabilities as the delay rule takes them, computed here: resampling,
    preprocessing and clips by core, each window through the sequence encoder alone."""
    ts = frame_timestamps_us(len(frames), 30) + 1_000_000  # what run_stream sends
    kept = frames[resample_indices(ts, TINY_SPEC.kept_fps)]
    clips = video_clips(DepthPreprocessor(TINY_SPEC, 48, 64)(kept), TINY_SPEC)
    features = engine.encode_clips(clips)
    rows = []
    for c in range(len(clips)):
        end = min(c + delay, len(clips) - 1)  # the last clips: the stream's last window
        window = features[max(0, end - T_W + 1) : end + 1]
        probs = engine.score_windows(window[None])[0]
        rows.append(probs[len(window) - 1 - (end - c)])
    return np.array(rows)


def assert_scores_are(events, rows):
    assert [e["clip"] for e in events] == list(range(len(rows)))
    for e, row in zip(events, rows, strict=True):
        assert e["activity"] == float(1.0 - row[0]), e["clip"]
        assert {t["class_id"]: t["score"] for t in e["top"]} == {1: float(row[1]), 2: float(row[2])}


def test_delayed_scores_are_the_windows_output_at_the_clips_position(
    make_server, test_settings, lookahead_bundle
):
    """d = T_w - 1: clip c is the first position of the window c .. c + T_w - 1, so a
    look-ahead encoder scores it from all T_w clips; bit-identical to the offline run."""
    live = make_server(dataclasses.replace(test_settings, model=lookahead_bundle.root))
    frames = varied_scene()
    d = T_W - 1
    delayed = asyncio.run(run_stream(live.ws_url, frames, hello_message=hello(score_delay=d)))
    now = asyncio.run(run_stream(live.ws_url, frames))
    assert delayed.close_code == now.close_code == 1000
    assert (delayed.ready["score_delay"], now.ready["score_delay"]) == (d, 0)
    assert delayed.ready["latency_s"] == pytest.approx((4 + d * 4) / 10)  # clips of 0.4 s
    engine = live.service.engine
    assert_scores_are(delayed.of("scores"), offline_rows(engine, frames, d))
    assert_scores_are(now.of("scores"), offline_rows(engine, frames, 0))
    assert delayed.of("scores") != now.of("scores")  # the future was used
    # the segmenter was fed in clip order: its actions are those of the delayed scores
    assert delayed.events[-1]["clips"] == len(delayed.of("scores")) == 9


@pytest.mark.parametrize("delay", [1, T_W - 1])
def test_a_delay_flushes_before_a_gap_and_at_the_end(server, delay):
    """With the per-position tiny model a delay changes no score: the events are those of
    the undelayed stream, the waiting clips flushed before the gap's warning and at the end."""
    ts = TS.copy()
    ts[60:] += 100_000_000
    sent = frame_messages(FRAMES, ts)
    r = asyncio.run(
        run_stream(server.ws_url, messages=sent, hello_message=hello(score_delay=delay))
    )
    reference = asyncio.run(run_stream(server.ws_url, messages=sent))
    assert r.close_code == 1000 and r.ready["score_delay"] == delay
    assert r.of("scores") == reference.of("scores") and r.ends == reference.ends
    kinds = [(e["type"], e.get("clip")) for e in r.events]
    assert kinds.index(("scores", 4)) < kinds.index(("warning", 5)) < kinds.index(("scores", 5))


@pytest.mark.parametrize(
    ("delay", "fragment"),
    [
        (T_W, f"score_delay must be in [0, {T_W - 1}] clips for this model"),
        (-1, "score_delay must be in [0, 1000]"),
        (True, "'score_delay' must be int"),
        (1.5, "'score_delay' must be int"),
    ],
)
def test_a_score_delay_the_model_cannot_give_is_refused(server, delay, fragment):
    r = asyncio.run(
        run_stream(server.ws_url, messages=[], hello_message=hello(score_delay=delay), end=False)
    )
    assert r.close_code == 4400 and fragment in r.of("error")[0]["message"]


def test_the_server_default_and_the_model_card(make_server, test_settings):
    live = make_server(dataclasses.replace(test_settings, score_delay=2))
    card = http.get(live.url + "/v1/model", headers={"Authorization": f"Bearer {TOKEN}"})
    assert card.json()["streaming"] == {
        "score_delay": 2,
        "max_score_delay": T_W - 1,
        "latency_s": pytest.approx(1.2),
    }
    r = stream(live.ws_url)
    assert r.ready["score_delay"] == 2 and r.ready["latency_s"] == pytest.approx(1.2)
    override = asyncio.run(run_stream(live.ws_url, FRAMES, hello_message=hello(score_delay=0)))
    assert override.ready["score_delay"] == 0 and override.ready["latency_s"] == 0.4


def test_without_a_setting_streams_get_the_bundles_own_delay(
    make_server, test_settings, tiny_bundle, tmp_path
):
    """The model card's live figures were measured at the bundle's `postprocess.score_delay`:
    a server with no setting of its own must serve that delay, or live accuracy and latency
    would not be what the card says."""
    root = tmp_path / "delayed"
    shutil.copytree(tiny_bundle.root, root)
    meta = json.loads((root / "model.json").read_text())
    meta["postprocess"]["score_delay"] = 1
    (root / "model.json").write_text(json.dumps(meta))
    live = make_server(dataclasses.replace(test_settings, model=root, score_delay=None))
    card = http.get(live.url + "/v1/model", headers={"Authorization": f"Bearer {TOKEN}"})
    assert card.json()["streaming"]["score_delay"] == 1
    assert stream(live.ws_url).ready["score_delay"] == 1
