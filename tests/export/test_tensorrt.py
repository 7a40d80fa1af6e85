import dataclasses
import importlib.util
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from core.bundle import load_bundle
from export.cli import main
from export.onnx import ExportError
from export.quantize import quantize_int8
from export.tensorrt import (
    TensorRTUnavailable,
    engine_folder,
    int8_problem,
    load_tensorrt,
    precision_of_build,
    profile_shapes,
)

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
NO_TENSORRT = "needs TensorRT and a CUDA GPU (this machine has no GPU)"


@pytest.mark.slow
def test_profiles_cover_every_batch_and_window_length(made):
    bundle = load_bundle(made[2])  # T_c 4, 32x32, D 32, T_w 4
    assert profile_shapes(bundle, "visual_encoder", 32) == (
        (1, 4, 32, 32), (8, 4, 32, 32), (32, 4, 32, 32),
    )  # fmt: skip
    assert profile_shapes(bundle, "sequence_encoder", 4) == ((1, 1, 32), (4, 4, 32), (4, 4, 32))
    with pytest.raises(ExportError, match="--max-batch must be >= 1"):
        profile_shapes(bundle, "visual_encoder", 0)


@pytest.mark.slow
def test_engine_folders_are_named_by_gpu_and_version(made):
    bundle = load_bundle(made[2])
    folder = engine_folder(bundle, "NVIDIA H200", "10.13.3.9")
    assert folder == made[2] / "engines" / "nvidia-h200-trt10.13.3.9"
    assert engine_folder(bundle, "Orin (nvgpu)", "10.3.0").name == "orin-nvgpu-trt10.3.0"


def tiny_conv(path):
    """A 1-conv ONNX model with a dynamic batch, to quantize in milliseconds."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 1, 3, 3], np.linspace(-1, 1, 18))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["clips", "w"], ["features"], pads=[1, 1, 1, 1])],
        "tiny",
        [helper.make_tensor_value_info("clips", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 2, 8, 8])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@pytest.mark.slow
def test_int8_plans_need_symmetric_int8_qdq(tmp_path):
    src = tiny_conv(tmp_path / "f.onnx")
    clips = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
    quantize_int8(src, tmp_path / "cpu.onnx", clips, target="cpu")
    quantize_int8(src, tmp_path / "trt.onnx", clips, target="tensorrt")
    assert "has no Q/DQ nodes" in int8_problem(onnx.load(src))
    assert "quantized for the CPU" in int8_problem(onnx.load(tmp_path / "cpu.onnx"))
    assert int8_problem(onnx.load(tmp_path / "trt.onnx")) is None


@pytest.mark.slow
def test_bad_flag_combinations_are_refused(made):
    fp32 = load_bundle(made[2])
    assert precision_of_build(fp32, fp16=False, int8=False) == "fp32"
    assert precision_of_build(fp32, fp16=True, int8=False) == "fp16"
    with pytest.raises(ExportError, match="choose one of --fp16 and --int8"):
        precision_of_build(fp32, fp16=True, int8=True)
    with pytest.raises(ExportError, match="--int8: .* has no Q/DQ nodes"):
        precision_of_build(fp32, fp16=False, int8=True)
    int8 = dataclasses.replace(fp32, precision={"visual_encoder": "int8"})
    with pytest.raises(ExportError, match="INT8 bundle: build it with --int8"):
        precision_of_build(int8, fp16=False, int8=False)


@pytest.mark.slow
@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT and CUDA are available here")
def test_without_tensorrt_the_command_stops_clearly(made, capsys):
    with pytest.raises(TensorRTUnavailable):
        load_tensorrt()
    assert main(["tensorrt", "--bundle", str(made[2]), "--max-batch", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gd-export: TensorRT is not available here: ")
    assert not (made[2] / "engines").exists()


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TENSORRT, reason=NO_TENSORRT)
@pytest.mark.parametrize("flags", [[], ["--fp16"]])
def test_plans_are_built_and_match_onnx_runtime(made, tmp_path, flags):
    import shutil

    root = shutil.copytree(made[2], tmp_path / "b")
    assert main(["tensorrt", "--bundle", str(root), "--max-batch", "4", *flags]) == 0
    (folder,) = (root / "engines").iterdir()
    names = {p.name for p in folder.iterdir()}
    assert {"visual_encoder.plan", "sequence_encoder.plan", "timing.cache", "build.json"} <= names
    build = json.loads((folder / "build.json").read_text())
    assert build["parity"]["max_abs_diff_probabilities"] <= build["parity"]["tolerance"]
    assert build["profiles"]["sequence_encoder"]["min"] == [1, 1, 32]
    load_bundle(root)  # engines/ does not disturb the bundle's own checks
