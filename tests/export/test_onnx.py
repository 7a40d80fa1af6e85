import dataclasses
import json
import logging
import shutil

import numpy as np
import onnx
import pytest
import torch

from core.bundle import (
    BundleError,
    absolute_paths,
    check_encoder_shapes,
    load_bundle,
    portable,
    sha256_file,
    write_bundle_json,
)
from export import onnx as onnx_export
from export.card import main as write_card
from export.cli import main, trained_threshold
from export.evaluate import CacheClips
from export.onnx import (
    PARITY_TOLERANCE,
    STACK_TRACE,
    ExportError,
    ParityError,
    check_checkpoint,
    check_parity,
    onnx_io_shapes,
    ort_runner,
    recorded_cache,
    verify_bundle,
)
from tests.export import CLASSES, SPEC
from tests.helpers.export_models import ARCH, make_checkpoint
from tests.helpers.numerics import reorder_tol
from tests.helpers.tiny_bundle import make_bundle
from training.checkpoint import load_checkpoint


@pytest.mark.slow
def test_cli_writes_a_complete_bundle(made):
    ckpt_path, _, root = made
    bundle = verify_bundle(root)  # schema, hashes, onnx.checker, shapes
    meta = json.loads((root / "model.json").read_text())
    assert meta["format_version"] == 1 and meta["name"] == "tiny"
    assert meta["version"] == "ckpt-" + sha256_file(ckpt_path)[:12]
    assert meta["classes"] == CLASSES and meta["clip"] == SPEC.to_dict()
    assert meta["postprocess"] == {"activity_threshold": 0.4, "score_delay": 0}
    assert meta["feature_dim"] == 8 * ARCH.width and meta["sequence"] == {"causal": False}
    for key in ("visual_encoder", "sequence_encoder"):
        assert meta["files"][key]["sha256"] == sha256_file(root / meta["files"][key]["path"])
    assert meta["training"]["checkpoint_sha256"] == sha256_file(ckpt_path)
    assert meta["training"]["checkpoint_metrics"] == {"val_map": 0.25}
    parity = meta["metrics"]["parity"]
    assert parity["max_abs_diff_probabilities"] <= PARITY_TOLERANCE
    assert parity["clips"] == 12  # all clips of the test videos: 10 + 2 (40 and 10 frames)
    test = meta["metrics"]["test"]
    assert set(test["map_action"]) == {"0.1", "0.3", "0.5"} and test["videos"] == 2
    assert all(0.0 <= v <= 1.0 for v in test["map_action"].values())
    assert bundle.clip == SPEC and bundle.classes == tuple(CLASSES)


@pytest.mark.slow
def test_one_registry_serves_every_export_of_a_process(made):
    """A bundle is two exports: the exporter's registry of ONNX functions is built for the
    first and reused by the second (export.onnx._one_registry), and torch's own builder is
    back in place after each export."""
    assert made[2].exists()  # the two encoders exported in this process
    # imported here, as export.onnx does at the first export: it costs collection a CPU second
    from torch.onnx._internal.exporter._registration import ONNXRegistry

    assert onnx_export._registry.cache_info().hits >= 1
    assert ONNXRegistry.__dict__["from_torchlib"] is onnx_export._torch_builder()[1]


@pytest.mark.slow
def test_onnx_shapes_are_dynamic_where_the_server_needs_it(made):
    root = made[2]
    bundle = load_bundle(root)
    shapes = {k: onnx_io_shapes(bundle.path(k)) for k in ("visual_encoder", "sequence_encoder")}
    assert shapes["visual_encoder"] == (["batch", 4, 32, 32], ["batch", 32])
    assert shapes["sequence_encoder"] == (["batch", "time", 32], ["batch", "time", 3])
    for key, (i, o) in shapes.items():
        check_encoder_shapes(bundle, key, i, o)


@pytest.mark.numerics
@pytest.mark.slow
@pytest.mark.parametrize(("batch", "time"), [(1, 1), (3, 4), (2, 7)])
@pytest.mark.parametrize("export", ["made", "random_parity"], ids=["bidirectional", "causal"])
def test_onnx_equals_torch_for_any_batch_and_window_length(export, batch, time, request):
    # The two exports of this module: `made` (a bidirectional sequence encoder) and
    # `random_parity` (a causal one, `model.causal=true`): each through the exporter, once.
    if export == "made":
        ckpt_path, _, root = request.getfixturevalue("made")
    else:
        work = request.getfixturevalue("random_parity")[0]
        ckpt_path, root = work / "c.pt", work / "b"
    net = load_checkpoint(ckpt_path).network()
    rng = np.random.default_rng(batch * 10 + time)
    clips = rng.standard_normal((batch * time, 4, 32, 32)).astype(np.float32)
    with torch.no_grad():
        logits, _ = net(torch.from_numpy(clips).reshape(batch, time, 4, 32, 32))
        want = logits.softmax(-1).numpy()
    features = ort_runner(root / "visual_encoder.onnx")(clips)
    got = ort_runner(root / "sequence_encoder.onnx")(features.reshape(batch, time, -1))
    assert got.shape == (batch, time, 3)
    # Probabilities (<= 1) through another summation order: the visual encoder's 17
    # convolutions and pooling, the largest summing 8 x width x 3 x 3 = 288 terms (layer4),
    # then the GRU's steps and the linear layer.
    tol = reorder_tol(8 * ARCH.width * 3 * 3, layers=18 + time + 1)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


@pytest.mark.slow
def test_parity_check_fails_loudly(made):
    ckpt_path, cache, root = made
    net = load_checkpoint(ckpt_path).network()
    clips = CacheClips(cache, SPEC).consecutive("test", 8)
    assert check_parity(net, load_bundle(root), clips, "test").clips == 8
    with torch.no_grad():
        net.sequence.fc.bias[1] += 1e-2  # the ONNX file no longer matches this network
    with pytest.raises(ParityError, match=r"max abs difference of probabilities \S+ > 0.0001"):
        check_parity(net, load_bundle(root), clips, "test")


@pytest.mark.slow
def test_tampered_or_inconsistent_bundles_are_named(made, tmp_path, capsys):
    copy = shutil.copytree(made[2], tmp_path / "b")
    data = bytearray((copy / "sequence_encoder.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "sequence_encoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sequence_encoder file .* does not match its sha256"):
        load_bundle(copy)
    assert main(["verify", "--bundle", str(copy)]) == 1
    assert "sequence_encoder file sequence_encoder.onnx does not match" in capsys.readouterr().err

    shutil.copyfile(made[2] / "sequence_encoder.onnx", copy / "sequence_encoder.onnx")
    meta = json.loads((copy / "model.json").read_text())
    meta["clip"]["height"] = 64
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="visual_encoder input axis 2 is 32, the bundle says 64"):
        verify_bundle(copy)


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += record.getMessage() + "\n"


@pytest.fixture(scope="module")
def random_parity(tmp_path_factory):
    """One `gd-export onnx --parity-random --score-delay` run (an export takes seconds) from
    its own working directory, of a checkpoint trained on no cache that still exists, whose
    provenance names folders of this machine: (working directory, argv, log messages). Its
    sequence encoder is causal, so both directions go through the exporter."""
    work = tmp_path_factory.mktemp("random-parity").resolve()
    provenance = {
        "dataset": {"dataset": "pku", "root": str(work / "runs" / "data" / "pku")},
        "command": [str(work / ".venv/bin/gd-train"), "pipeline", "--workdir", str(work / "runs")],
        "cache": "/elsewhere/cache/pku",
    }
    ckpt = make_checkpoint(work / "c.pt", provenance=provenance, causal=True)
    args = ["onnx", "--checkpoint", str(ckpt), "--out", "b", "--parity-random",
            "--score-delay", str(SPEC.window - 1)]  # fmt: skip
    messages = _Messages()
    logging.getLogger().addHandler(messages)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(work)
            assert main(args) == 0
    finally:
        logging.getLogger().removeHandler(messages)
    return work, args, messages.text


def test_export_without_a_cache_needs_parity_random(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    assert main(["onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "b")]) == 1
    assert "--parity-random" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_parity_random_checks_random_clips_and_measures_nothing(random_parity, capsys, monkeypatch):
    work, args, _ = random_parity
    meta = json.loads((work / "b" / "model.json").read_text())
    assert meta["metrics"]["parity"]["source"] == "random clips"
    assert "test" not in meta["metrics"]  # no cache: no test mAP
    monkeypatch.chdir(work)
    assert main(args) == 1  # the bundle exists now
    assert "exists and is not empty" in capsys.readouterr().err
    assert not list(work.glob(".b.partial-*"))  # nothing left behind


def test_only_depth_detection_checkpoints_export(tmp_path):
    ckpt = load_checkpoint(make_checkpoint(tmp_path / "c.pt", task="classification"))
    with pytest.raises(ExportError, match="a classification checkpoint"):
        check_checkpoint(ckpt, "c.pt")


@pytest.mark.slow
def test_visual_encoder_file_has_no_training_leftovers(made):
    # BatchNorm folded and no dropout: what runs is the eval-mode network.
    ops = {n.op_type for n in onnx.load(made[2] / "visual_encoder.onnx").graph.node}
    assert "Conv" in ops and "BatchNormalization" not in ops and "Dropout" not in ops


def test_threshold_and_cache_default_to_what_training_used(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "meta.json").write_text("{}")
    provenance = {"config": {"target": {"activity_threshold": 0.3}}, "cache": str(cache)}
    ckpt = load_checkpoint(make_checkpoint(tmp_path / "c.pt", provenance=provenance))
    assert trained_threshold(ckpt) == 0.3 and recorded_cache(ckpt.provenance) == cache
    assert recorded_cache({"dataset": {"cache": str(cache)}}) == cache
    assert recorded_cache({"cache": str(tmp_path / "gone")}) is None
    assert trained_threshold(load_checkpoint(make_checkpoint(tmp_path / "d.pt"))) == 0.4


# --- no paths of the build machine in a bundle --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("/work/main/runs/default/data/pku", "runs/default/data/pku"),  # inside the base
        ("/work/main", "."),
        ("/mnt/data/pku", ".../pku"),  # outside: only its name
        ("test clips of /mnt/cache/pku", "test clips of .../pku"),
        ("--workdir=/work/main/runs/x", "--workdir=runs/x"),
        ("runs/default/cache/pku", "runs/default/cache/pku"),  # relative already
        ("http://host/v1/model", "http://host/v1/model"),
        ("1/3 of the clips", "1/3 of the clips"),
        ("a / b", "a / b"),
    ],
)
def test_portable_paths(text, want):
    assert portable({"k": [text]}, base="/work/main") == {"k": [want]}
    assert absolute_paths({"k": [want]}) == []


def stack_traces(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node for p in n.metadata_props if p.key == STACK_TRACE]


@pytest.mark.slow
def test_an_export_records_no_folder_of_this_machine(random_parity):
    work, _, messages = random_parity
    meta = json.loads((work / "b" / "model.json").read_text())
    assert absolute_paths(meta) == []
    training = meta["training"]
    assert training["dataset"] == {"dataset": "pku", "root": "runs/data/pku"}
    assert training["command"] == [".venv/bin/gd-train", "pipeline", "--workdir", "runs"]
    assert (training["cache"], training["checkpoint"]) == (".../pku", "c.pt")
    assert "made machine paths portable" not in messages  # gd-export wrote them so
    for path in (work / "b").glob("*.onnx"):  # the exporter's stack traces name source files
        assert not stack_traces(onnx.load(path)), path.name
    verify_bundle(work / "b")


def test_model_json_is_written_portably_and_says_what_it_rewrote(tmp_path, caplog):
    bundle = make_bundle(tmp_path / "b")
    root = str(tmp_path.resolve() / "data" / "pku")
    write_bundle_json(dataclasses.replace(bundle, training={"dataset": {"root": root}}))
    assert "made machine paths portable in training.dataset.root" in caplog.text
    assert load_bundle(bundle.root).training == {"dataset": {"root": ".../pku"}}


def test_verify_refuses_a_bundle_naming_the_build_machine(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b")
    meta = json.loads((bundle.root / "model.json").read_text())
    meta["training"] = {"dataset": {"root": "/mnt/x/data/pku"}, "command": ["/mnt/bin/x"]}
    (bundle.root / "model.json").write_text(json.dumps(meta))
    load_bundle(bundle.root)  # the server still runs it
    assert main(["verify", "--bundle", str(bundle.root)]) == 1
    err = capsys.readouterr().err
    assert "absolute paths" in err and "training.dataset.root, training.command[0]" in err
    assert write_card([str(bundle.root)]) == 0  # the fix the message names
    assert main(["verify", "--bundle", str(bundle.root)]) == 0
    assert load_bundle(bundle.root).training["dataset"]["root"] == ".../pku"


@pytest.mark.slow
def test_the_score_delay_is_recorded_and_checked_against_the_window(random_parity, tmp_path):
    window = SPEC.window
    assert load_bundle(random_parity[0] / "b").score_delay == window - 1  # --score-delay
    # One clip more than the window holds: a copy of the bundle with its model.json edited,
    # not a second export (the check is the loader's).
    copy = shutil.copytree(random_parity[0] / "b", tmp_path / "b")
    meta = json.loads((copy / "model.json").read_text())
    meta["postprocess"]["score_delay"] = window
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="score_delay must be in"):
        load_bundle(copy)
