import json

import numpy as np
import onnx
import pytest

import export.quantize as quantize
from core.bundle import load_bundle
from export.cli import main
from export.evaluate import CacheClips
from export.onnx import ort_runner, verify_bundle
from export.quantize import QuantizationRefused, VariantSettings, make_variant
from tests.export import SPEC

FAST = dict(calibration_clips=16, timing_seconds=0.0, threads=1)
pytestmark = pytest.mark.slow  # every test quantizes the shared export


def ops(path):
    return {n.op_type for n in onnx.load(path).graph.node}


@pytest.mark.numerics
def test_int8_variant_is_a_complete_bundle(made, tmp_path):
    _, cache, src = made
    out = tmp_path / "int8"
    bundle, report = make_variant(src, out, cache, VariantSettings("int8", force=True, **FAST))
    assert bundle.root == out and verify_bundle(out) == load_bundle(out)
    meta = json.loads((out / "model.json").read_text())
    assert meta["precision"] == {"visual_encoder": "int8", "sequence_encoder": "fp32"}
    assert meta["files"]["visual_encoder"]["path"] == "visual_encoder_int8.onnx"
    assert meta["version"].endswith("-int8")
    assert meta["training"]["source_bundle"]["visual_encoder_sha256"] == (
        load_bundle(src).files["visual_encoder"].sha256
    )
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(out / "visual_encoder_int8.onnx")
    assert report["calibration"] == {"subset": "train", "clips": 16, "method": "minmax"}
    assert set(report["speedup"]) == {"1", "8"} and all(v > 0 for v in report["speedup"].values())
    figures = meta["metrics"]["precision"]
    assert figures["map_loss_points"] == pytest.approx(
        100 * (figures["before"]["0.5"] - figures["after"]["0.5"])
    )
    assert meta["metrics"]["test"]["map_action"] == figures["after"]
    # INT8 features stay close to FP32 ones on real clips
    clips = CacheClips(cache, SPEC).consecutive("test", 10)
    ref = ort_runner(src / "visual_encoder.onnx")(clips)
    got = ort_runner(out / "visual_encoder_int8.onnx")(clips)
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.98  # 4 channels: coarse, not wrong
    assert np.abs(got - ref).mean() < 0.1 * np.abs(ref).mean()


@pytest.mark.numerics
def test_fp16_variant_keeps_float32_io(made, tmp_path):
    _, cache, src = made
    out = tmp_path / "fp16"
    make_variant(src, out, cache, VariantSettings("fp16", **FAST))
    model = onnx.load(out / "visual_encoder_fp16.onnx")
    f32 = onnx.TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == f32
    assert model.graph.output[0].type.tensor_type.elem_type == f32
    weights = [i for i in model.graph.initializer if len(i.dims) == 4]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    clips = CacheClips(cache, SPEC).consecutive("test", 4)
    ref = ort_runner(src / "visual_encoder.onnx")(clips)
    got = ort_runner(out / "visual_encoder_fp16.onnx")(clips)
    # FP16 rounds each layer's weights and its output by half an fp16 ulp, 2**-11 = 4.9e-4
    # relative; the visual encoder's 18 layers (17 convolutions and the pooling) add those two
    # errors per layer to first order: 2 * 18 * 4.9e-4 = 1.8e-2 of the output's scale.
    assert np.abs(got - ref).max() < 2 * 18 * 2**-11 * np.abs(ref).max()


@pytest.mark.parametrize(
    ("loss", "allowed", "force", "kept"),
    [
        (1.5, 1.0, False, False),
        (0.5, 1.0, False, True),
        (1.5, 1.0, True, True),
        (0.0, -0.1, False, False),
    ],
)
def test_a_variant_losing_too_much_is_refused(
    made, tmp_path, monkeypatch, loss, allowed, force, kept
):
    _, cache, src = made
    real = quantize.compare

    def measured_loss(*args):
        report, after = real(*args)
        return {**report, "map_loss_points": loss}, after

    monkeypatch.setattr(quantize, "compare", measured_loss)
    out = tmp_path / "v"
    settings = VariantSettings("fp16", max_map_loss=allowed, force=force, **FAST)
    if kept:
        _, report = make_variant(src, out, cache, settings)
        assert report["forced"] == (loss > allowed)
        assert load_bundle(out).metrics["precision"]["forced"] == (loss > allowed)
    else:
        with pytest.raises(QuantizationRefused, match=f"loses {loss:.2f} points .* allowed"):
            make_variant(src, out, cache, settings)
    assert out.exists() == kept
    assert not list(tmp_path.glob(".v.partial-*"))


def test_cli_refusal_exits_1_and_reports_figures(made, tmp_path, capsys):
    _, cache, src = made
    out = tmp_path / "int8"
    args = ["quantize", "--bundle", str(src), "--out", str(out), "--cache", str(cache),
            "--calibration-clips", "8", "--max-map-loss", "-1", "--threads", "1",
            "--timing-seconds", "0"]  # fmt: skip
    assert main(args) == 1  # any variant loses more than -1 points
    err = capsys.readouterr().err
    assert "mAP@0.5 loss" in err and "nothing was written" in err and "calibrating" in err
    assert not out.exists()
    assert main(["quantize", "--bundle", str(src), "--out", str(out), "--cache", str(cache),
                 "--target", "tensorrt", "--force", "--calibration-clips", "8",
                 "--timing-seconds", "0"]) == 0  # fmt: skip
    with pytest.raises(SystemExit):
        main(["quantize", "--bundle", str(src), "--out", str(out), "--precision", "int4"])
    assert "argument --precision: invalid choice: 'int4'" in capsys.readouterr().err
    # a variant is not quantized again
    again = tmp_path / "again"
    assert main(["quantize", "--bundle", str(out), "--out", str(again), "--cache", str(cache)]) == 1
    assert "start from the FP32 one" in capsys.readouterr().err
