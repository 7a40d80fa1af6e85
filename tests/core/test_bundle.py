import json

import pytest

from core.bundle import (
    BundleError,
    FileRef,
    ModelBundle,
    check_encoder_shapes,
    engine_folder_name,
    load_bundle,
    sha256_file,
    write_bundle_json,
)
from core.clip import ClipSpec


def make_bundle(root, **overrides) -> ModelBundle:
    files = {}
    for key in ("visual_encoder", "sequence_encoder"):
        (root / f"{key}.onnx").write_bytes(key.encode() * 10)
        files[key] = FileRef(f"{key}.onnx", sha256_file(root / f"{key}.onnx"))
    fields = dict(
        root=root, name="tiny", version="1.2.0", classes=("background", "drink", "fall"),
        clip=ClipSpec(height=32, width=32), feature_dim=16, activity_threshold=0.4,
        causal=False, files=files, training={"seed": 1}, metrics={"map": 0.5},
    )  # fmt: skip
    bundle = ModelBundle(**{**fields, **overrides})
    write_bundle_json(bundle)
    return bundle


def edit_json(root, change):
    meta = json.loads((root / "model.json").read_text())
    change(meta)
    (root / "model.json").write_text(json.dumps(meta))


def test_score_delay_is_0_unless_given(tmp_path):
    """0 clips of future context: a bundle built without one, and model.json files written
    before the field existed."""
    assert make_bundle(tmp_path).score_delay == 0
    edit_json(tmp_path, lambda m: m["postprocess"].pop("score_delay"))
    assert load_bundle(tmp_path).score_delay == 0


def test_round_trip(tmp_path):
    written = make_bundle(tmp_path)
    loaded = load_bundle(tmp_path)
    assert loaded == written
    assert loaded.num_classes == 2
    assert loaded.path("visual_encoder") == tmp_path / "visual_encoder.onnx"
    card = loaded.card()
    assert card["classes"] == ["background", "drink", "fall"]
    assert "path" not in card["files"]["visual_encoder"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format_version=2), "format_version 2 is not supported"),
        (lambda m: m.update(classes=["background"]), "classes must be >= 2"),
        (lambda m: m.update(classes=["background", "a", "a"]), "duplicate names"),
        (lambda m: m["clip"].update(height=0), "clip: height must be in"),
        (lambda m: m["clip"].update(colour=1), "clip: unknown clip spec field"),
        (lambda m: m.update(feature_dim="16"), "'feature_dim' must be int"),
        (lambda m: m.update(feature_dim=True), "'feature_dim' must be int"),
        (lambda m: m.update(feature_dim=0), "feature_dim must be positive, got 0"),
        (lambda m: m["postprocess"].update(activity_threshold=1.5), "must be in \\[0, 1\\]"),
        (lambda m: m["files"].pop("sequence_encoder"), "files lacks sequence_encoder"),
        (lambda m: m["files"]["visual_encoder"].update(path="../x.onnx"), "stay inside"),
        (lambda m: m["files"]["visual_encoder"].update(path="gone.onnx"), "gone.onnx is missing"),
        (lambda m: m.pop("name"), "missing 'name'"),
    ],
)
def test_every_defect_is_named(tmp_path, change, message):
    make_bundle(tmp_path)
    edit_json(tmp_path, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(tmp_path)


def test_hash_mismatch_and_missing_bundle(tmp_path):
    make_bundle(tmp_path)
    (tmp_path / "sequence_encoder.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="sequence_encoder file .* does not match its sha256"):
        load_bundle(tmp_path)
    assert load_bundle(tmp_path, verify_hashes=False).name == "tiny"
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path / "nothing")
    (tmp_path / "model.json").write_text("{oops")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)


def test_encoder_shapes(tmp_path):
    b = make_bundle(tmp_path)
    check_encoder_shapes(b, "visual_encoder", ["batch", 10, 32, 32], ["batch", 16])
    check_encoder_shapes(b, "sequence_encoder", [None, "time", 16], [None, "time", 3])
    check_encoder_shapes(b, "sequence_encoder", ["b", 10, 16], ["b", 10, 3])  # fixed T_w is fine
    with pytest.raises(BundleError, match="visual_encoder input axis 2 is 64, the bundle says 32"):
        check_encoder_shapes(b, "visual_encoder", ["b", 10, 64, 32], ["b", 16])
    with pytest.raises(BundleError, match="sequence_encoder output axis 2 is 52"):
        check_encoder_shapes(b, "sequence_encoder", ["b", "t", 16], ["b", "t", 52])
    with pytest.raises(BundleError, match="fixed batch size 1"):
        check_encoder_shapes(b, "visual_encoder", [1, 10, 32, 32], [1, 16])
    with pytest.raises(BundleError, match="has 3 axes"):
        check_encoder_shapes(b, "visual_encoder", ["b", 10, 32], ["b", 16])


def test_precision_defaults_to_fp32_and_is_checked(tmp_path):
    written = make_bundle(tmp_path, precision={"visual_encoder": "int8"})
    assert written.precision == {"visual_encoder": "int8", "sequence_encoder": "fp32"}
    assert load_bundle(tmp_path) == written
    edit_json(tmp_path, lambda m: m.pop("precision"))  # bundles from before the field
    assert set(load_bundle(tmp_path).precision.values()) == {"fp32"}
    edit_json(tmp_path, lambda m: m.update(precision={"visual_encoder": "int4"}))
    with pytest.raises(BundleError, match="precision.visual_encoder must be one of fp32, fp16"):
        load_bundle(tmp_path)
    edit_json(tmp_path, lambda m: m.update(precision={"extra": "fp16"}))
    with pytest.raises(BundleError, match="precision names 'extra', which is not in files"):
        load_bundle(tmp_path)


def test_engine_folder_name():
    assert engine_folder_name("NVIDIA H200", "10.13.3") == "nvidia-h200-trt10.13.3"
    assert engine_folder_name("NVIDIA GeForce RTX 4090", "8.6.1.6") == (
        "nvidia-geforce-rtx-4090-trt8.6.1.6"
    )
    with pytest.raises(BundleError, match="cannot name an engine folder"):
        engine_folder_name("???", "10.0")
