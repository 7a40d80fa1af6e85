"""The retraining loop of docs/retraining.md end to end, as a site engineer runs it, tiny:
`gd-synth recordings --color` (depth + colour through librealsense's software device and
recorder) -> labels.csv with a class the starting model lacks -> `gd-labels check` ->
`gd-prep --dataset recordings` -> `gd-train finetune --epochs 1 --export` -> a real server on
loopback serving the starting bundle, `POST /v1/admin/reload` to the fine-tuned one -> a held-out
recording streamed by `gd-stream file` over the real WebSocket, scored by the new model.

The recordings, the cache, the starting bundle and its fine-tuning are the fixtures of
tests/helpers/retraining.py, shared with tests/training/test_finetune.py (the starting bundle's
weights.pt is gd-export's, its encoders hand-made ONNX: the fine-tuned bundle is the one gd-export
writes whole); the reload request is tests/server/test_reload.py's."""

import dataclasses
import json

import pytest

from clients import stream
from core.bundle import load_bundle
from core.recording_labels import main as labels_main
from tests.helpers.live import ADMIN, TOKEN, reload
from tests.helpers.loopback import http
from tests.helpers.retraining import MODEL

NEW = "leaves bed"  # the site's label the starting model lacks (test_finetune's `site`)


@pytest.mark.slow
def test_site_recordings_retrain_and_hot_reload_into_a_streaming_server(
    site,
    bundle,
    finetuned,
    make_server,
    test_settings,
    capsys,
):
    # Label: the generated labels.csv, with the new class, passes the check gd-prep also runs.
    labels = site / "labels.csv"
    assert NEW in labels.read_text()
    args = ["check", str(labels), "--recordings", str(site), "--classes", str(site / "classes.txt")]
    assert labels_main(args) == 0
    assert "no problems" in capsys.readouterr().out

    # Fine-tune the starting bundle for one epoch and export the site's bundle: `gd-train
    # finetune --export` through the command's main (the `finetuned` fixture,
    # tests/helpers/retraining.py, which tests/training/test_finetune.py checks in detail).
    work, site_model, printed = finetuned
    assert "mAP before:" in printed and "mAP after:" in printed
    report = json.loads((work / "finetune.json").read_text())
    start, tuned = load_bundle(bundle), load_bundle(site_model)
    assert NEW not in start.classes and NEW in tuned.classes
    assert (tuned.name, tuned.version) != (start.name, start.version)  # tells the models apart

    # A real server on loopback, started on the starting bundle, with an admin token.
    settings = dataclasses.replace(test_settings, model=bundle, admin_tokens=(ADMIN,))
    live = make_server(settings)
    card = http.get(f"{live.url}/v1/model", headers={"Authorization": f"Bearer {TOKEN}"})
    assert card.json()["version"] == start.version and NEW not in card.json()["classes"]
    answer = reload(live, site_model)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == {"name": tuned.name, "version": tuned.version}
    assert answer.json()["previous"] == {"name": start.name, "version": start.version}
    card = http.get(f"{live.url}/v1/model", headers={"Authorization": f"Bearer {TOKEN}"})
    assert card.json()["version"] == tuned.version
    assert card.json()["classes"] == list(tuned.classes)

    # A held-out recording through the streaming client: scored by the fine-tuned model.
    recording = site / f"{report['test_recordings'][0]}.db3"
    argv = ["file", str(recording), "--fast", "--url", live.ws_url, "--token", TOKEN, "--json"]
    code = stream.main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    events = [json.loads(line) for line in out.out.splitlines()]
    ready, end = events[0], events[-1]
    assert ready["type"] == "ready" and end["type"] == "end"
    assert ready["model"] == {"name": tuned.name, "version": tuned.version}
    assert ready["classes"] == list(tuned.classes) == ["background", *MODEL, *report["new_classes"]]
    assert NEW in ready["classes"]
    scores = [e for e in events if e["type"] == "scores"]
    assert scores and len(scores) == end["clips"]
    assert {s["model_version"] for s in scores} == {tuned.version}
    assert all(t["label"] in tuned.classes for s in scores for t in s["top"])
