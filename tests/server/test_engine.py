"""server.engine: provider selection, TensorRT plan discovery, shape and output checks."""

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from core.bundle import load_bundle
from server.engine import (
    CPU,
    CUDA,
    TENSORRT,
    EngineError,
    find_plans,
    gpu_name,
    load_engine,
    select_providers,
)
from tests.helpers.tiny_bundle import (
    PROB_TOL,
    TINY_SPEC,
    make_bundle,
    reference_probs,
    visual_encoder,
)


def test_select_providers():
    assert select_providers("cpu", [TENSORRT, CUDA, CPU]) == [CPU]
    assert select_providers("auto", [CPU]) == [CPU]
    assert select_providers("auto", [TENSORRT, CUDA, CPU]) == [TENSORRT, CUDA, CPU]
    assert select_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert select_providers("cuda", [TENSORRT, CUDA, CPU]) == [CUDA, CPU]
    assert select_providers("tensorrt", [TENSORRT, CUDA, CPU]) == [TENSORRT, CUDA, CPU]


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_devices_without_gpu_providers_are_clear_errors(device):
    with pytest.raises(EngineError, match=f"--device {device} needs ONNX Runtime's"):
        select_providers(device, [CPU])


def test_gpu_devices_fail_at_load_on_this_machine(tiny_bundle):
    if CUDA in ort.get_available_providers():
        pytest.skip("this machine has CUDA: the refusal cannot be shown here")
    with pytest.raises(EngineError, match="--device cuda needs"):
        load_engine(tiny_bundle, "cuda")


@pytest.mark.numerics
def test_cpu_engine_computes_the_tiny_model(tiny_bundle):
    engine = load_engine(tiny_bundle, "auto", threads=1)
    assert engine.info["backend"] == "onnxruntime" and engine.info["providers"][-1] == CPU
    spec = TINY_SPEC
    clips = np.zeros((3, spec.clip_len, spec.height, spec.width), np.float32)
    clips[:] = 0.9  # a far wall everywhere
    clips[1, :, :8, :] = 0.2  # a near band: 8 / 32 rows of every frame
    clips[2, :, 0, 0] = 0.0  # a hole, invalid: not near
    features = engine.encode_clips(clips)
    assert features.shape == (3, 8)
    assert features[:, 0] == pytest.approx([0.0, 0.25, 0.0])
    probs = engine.score_windows(features[None])
    assert probs[0] == pytest.approx(reference_probs(np.array([0.0, 0.25, 0.0])), abs=PROB_TOL)


def test_plans_are_skipped_with_the_reason(tiny_bundle, tmp_path):
    folder, why = find_plans(tiny_bundle)
    assert folder is None and why == "the bundle has no engines/ folder"
    bundle = make_bundle(tmp_path / "b")
    (bundle.root / "engines" / "nvidia-a100-trt10.0").mkdir(parents=True)
    folder, why = find_plans(bundle, trt_version=lambda: None)
    assert folder is None and "tensorrt" in why and "not installed" in why
    folder, why = find_plans(bundle, trt_version=lambda: "10.3", gpu=lambda: None)
    assert folder is None and "no NVIDIA GPU" in why
    if shutil.which("nvidia-smi") or Path("/dev/nvidiactl").exists():
        assert gpu_name()  # a machine with an NVIDIA driver: its GPU's name
    else:
        assert gpu_name() is None  # no driver, no device: no name, so no plan is ever picked
    folder, why = find_plans(bundle, trt_version=lambda: "10.3", gpu=lambda: "NVIDIA H200")
    assert folder is None
    assert why == "no plans for nvidia-h200-trt10.3 in engines/ (has: nvidia-a100-trt10.0)"
    plans = bundle.root / "engines" / "nvidia-h200-trt10.3"  # gd-export tensorrt's naming
    plans.mkdir()
    for key in ("visual_encoder", "sequence_encoder"):
        (plans / f"{key}.plan").write_bytes(b"plan")
    folder, why = find_plans(bundle, trt_version=lambda: "10.3", gpu=lambda: "NVIDIA H200")
    assert folder == plans and why == ""


def test_engine_falls_back_to_onnxruntime_and_says_why(tmp_path, caplog):
    bundle = make_bundle(tmp_path / "b")
    (bundle.root / "engines").mkdir()
    caplog.set_level("INFO", logger="gd.server.engine")
    engine = load_engine(load_bundle(bundle.root), "auto", threads=1)
    assert engine.info["backend"] == "onnxruntime"
    assert "native TensorRT plans not used" in caplog.text
    assert engine.info["plans_skipped"]


def test_shape_mismatch_names_the_encoder_and_axis(tmp_path):
    wrong = visual_encoder(TINY_SPEC.__class__(**{**TINY_SPEC.to_dict(), "height": 16}))
    bundle = make_bundle(tmp_path / "b", visual=wrong)
    with pytest.raises(EngineError, match="visual_encoder input axis 2 is 16, the bundle says 32"):
        load_engine(bundle, "cpu")


def test_fixed_batch_axis_is_refused(tmp_path):
    bundle = make_bundle(tmp_path / "b", visual=visual_encoder(TINY_SPEC, batch=1))
    with pytest.raises(EngineError, match="fixed batch size 1"):
        load_engine(bundle, "cpu")


def test_logits_instead_of_probabilities_are_refused(tmp_path):
    bundle = make_bundle(tmp_path / "b", softmax=False)
    with pytest.raises(EngineError, match="must output probabilities"):
        load_engine(bundle, "cpu")


def test_unloadable_onnx_file(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    bundle.path("sequence_encoder").write_bytes(b"not onnx")
    with pytest.raises(EngineError, match="ONNX Runtime cannot load it"):
        load_engine(load_bundle(bundle.root, verify_hashes=False), "cpu")


def test_plans_that_cannot_load_fall_back_to_onnxruntime(tmp_path, monkeypatch):
    """Plans present for this GPU, but TensorRT cannot run them here (no tensorrt module):
    the engine still starts, on ONNX Runtime, and says why."""
    import server.engine as engine_module

    bundle = make_bundle(tmp_path / "b")
    plans = bundle.root / "engines" / "nvidia-h200-trt10.3"
    plans.mkdir(parents=True)
    monkeypatch.setattr(engine_module, "find_plans", lambda b: (plans, ""))
    engine = load_engine(bundle, "auto", threads=1)
    assert engine.info["backend"] == "onnxruntime"
    assert engine.info["plans_skipped"].startswith("loading nvidia-h200-trt10.3 failed")
