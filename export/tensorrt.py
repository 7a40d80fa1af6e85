"""TensorRT plans for a bundle, built on the GPU that will run them.

```
<bundle>/engines/<gpu>-trt<version>/visual_encoder.plan     dynamic batch 1..max_batch
                                   /sequence_encoder.plan   batch 1..max_batch, time 1..T_w
                                   /timing.cache            reused by the next build here
                                   /build.json              flags, profiles, source hashes, parity
```

A plan only runs on the GPU model and TensorRT version that built it, hence one folder per
pair (`core.bundle.engine_folder_name`). Precision comes from the ONNX graph where TensorRT
supports strong typing (10.x; required from 11): `--fp16` builds from an FP16 conversion of the
visual encoder, `--int8` from the bundle's own Q/DQ graph (a bundle made by `gd-export quantize
--precision int8 --target tensorrt`). TensorRT 8.x gets the same result from builder flags. The
sequence encoder stays FP32. Plans are only kept if they match ONNX Runtime on the same clips.

`tensorrt` is imported lazily: everything else in `export` works without it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from core.bundle import ENGINES_DIR, REQUIRED_FILES, ModelBundle, engine_folder_name
from core.files import atomic_write_bytes, atomic_write_text
from export.onnx import IO_NAMES, ExportError, ParityError, ort_runner, staged_folder
from export.quantize import convert_fp16

DEFAULT_MAX_BATCH = 32
OPT_BATCH = 8  # the batch TensorRT tunes kernels for: the server's typical micro-batch
WORKSPACE_BYTES = 1 << 30
# Max abs difference of probabilities vs ONNX Runtime on the bundle's own ONNX files. FP32
# plans are built without TF32; FP16 and INT8 round differently from the CPU by design.
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": 5e-2}

Shape = tuple[int, ...]


class TensorRTUnavailable(ExportError):
    """TensorRT or a CUDA GPU is missing on this machine."""


class TensorRTBuildError(ExportError):
    """TensorRT could not parse or build an encoder."""


# --- what can be decided without a GPU ---------------------------------------------------------


def profile_shapes(bundle: ModelBundle, key: str, max_batch: int) -> tuple[Shape, Shape, Shape]:
    """(min, opt, max) input shapes of an encoder's optimization profile: batch 1..max_batch
    and, for the sequence encoder, time 1..T_w (a video shorter than a window)."""
    if max_batch < 1:
        raise ExportError(f"--max-batch must be >= 1, got {max_batch}")
    spec, opt = bundle.clip, min(OPT_BATCH, max_batch)
    if key == "visual_encoder":
        clip = (spec.clip_len, spec.height, spec.width)
        return (1, *clip), (opt, *clip), (max_batch, *clip)
    if key == "sequence_encoder":
        d, t = bundle.feature_dim, spec.window
        return (1, 1, d), (opt, t, d), (max_batch, t, d)
    raise ExportError(f"no optimization profile for {key!r}")


def engine_folder(bundle: ModelBundle, gpu_name: str, trt_version: str) -> Path:
    return bundle.root / ENGINES_DIR / engine_folder_name(gpu_name, trt_version)


def precision_of_build(bundle: ModelBundle, fp16: bool, int8: bool) -> str:
    """The visual encoder's precision in the plan; refuses combinations that cannot work."""
    if fp16 and int8:
        raise ExportError("choose one of --fp16 and --int8 (INT8 plans keep FP32 elsewhere)")
    visual = bundle.precision["visual_encoder"]
    if int8:
        problem = int8_problem(onnx.load(bundle.path("visual_encoder")))
        if problem:
            raise ExportError(f"--int8: the bundle's visual encoder {problem}")
        return "int8"
    if visual == "int8":
        raise ExportError("this is an INT8 bundle: build it with --int8")
    return "fp16" if fp16 or visual == "fp16" else "fp32"


def int8_problem(model: onnx.ModelProto) -> str | None:
    """Why TensorRT cannot take this graph's quantization as it is, or None."""
    graph = model.graph
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    if not quantize:
        return (
            "has no Q/DQ nodes; make an INT8 bundle first: "
            "gd-export quantize --precision int8 --target tensorrt"
        )
    initializers = {i.name: i for i in graph.initializer}
    for node in quantize:
        zero = initializers.get(node.input[2]) if len(node.input) > 2 else None
        if zero is not None and (
            zero.data_type != onnx.TensorProto.INT8 or np.any(numpy_helper.to_array(zero))
        ):
            return (
                "is quantized for the CPU (uint8, asymmetric); TensorRT needs symmetric int8: "
                "gd-export quantize --precision int8 --target tensorrt"
            )
    return None


# --- TensorRT ------------------------------------------------------------------------------------


def load_tensorrt() -> Any:
    """The `tensorrt` module, once TensorRT and a CUDA GPU are known to be usable."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(
            f"the tensorrt Python package is not installed ({e}); install the 'gpu' extra on "
            "an NVIDIA GPU machine, or use JetPack's python3-libnvinfer on a Jetson"
        ) from e
    import torch

    if not torch.cuda.is_available():
        build = "a CPU build of PyTorch" if torch.version.cuda is None else "no GPU visible"
        raise TensorRTUnavailable(f"no CUDA device ({build}, torch {torch.__version__})")
    return trt


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


@dataclass(frozen=True)
class BuildResult:
    folder: Path
    precision: str
    parity: dict[str, float]


def build_engines(
    bundle: ModelBundle,
    clips: np.ndarray,
    clip_source: str,
    max_batch: int = DEFAULT_MAX_BATCH,
    fp16: bool = False,
    int8: bool = False,
) -> BuildResult:
    """Build both plans into the bundle's engine folder for this GPU and TensorRT version,
    then check them against ONNX Runtime on `clips`; the folder is replaced only on success."""
    precision = precision_of_build(bundle, fp16, int8)
    trt = load_tensorrt()
    folder = engine_folder(bundle, gpu_name(), trt.__version__)
    cache_path = folder / "timing.cache"
    timing = cache_path.read_bytes() if cache_path.is_file() else b""
    shapes = {k: profile_shapes(bundle, k, max_batch) for k in REQUIRED_FILES}
    with staged_folder(folder, overwrite=True) as stage, tempfile.TemporaryDirectory() as tmp:
        sources = {k: bundle.path(k) for k in REQUIRED_FILES}
        if precision == "fp16" and bundle.precision["visual_encoder"] == "fp32":
            sources["visual_encoder"] = Path(tmp) / "visual_encoder_fp16.onnx"
            convert_fp16(bundle.path("visual_encoder"), sources["visual_encoder"])
        for key in REQUIRED_FILES:
            reduced = precision if key == "visual_encoder" else "fp32"
            plan, timing = build_plan(
                trt, sources[key], IO_NAMES[key][0], shapes[key], reduced, timing
            )
            atomic_write_bytes(stage / f"{key}.plan", plan)
        atomic_write_bytes(stage / "timing.cache", timing)
        parity = check_plans(
            trt, bundle, stage, clips, max_batch, TOLERANCE[precision], clip_source
        )
        record = {
            "gpu": gpu_name(),
            "tensorrt": trt.__version__,
            "precision": {"visual_encoder": precision, "sequence_encoder": "fp32"},
            "max_batch": max_batch,
            "profiles": {k: {"min": s[0], "opt": s[1], "max": s[2]} for k, s in shapes.items()},
            "source_sha256": {k: bundle.files[k].sha256 for k in REQUIRED_FILES},
            "parity": parity,
            "built": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        atomic_write_text(stage / "build.json", json.dumps(record, indent=2) + "\n")
    return BuildResult(folder, precision, parity)


def build_plan(
    trt: Any,
    onnx_path: Path,
    input_name: str,
    shapes: tuple[Shape, Shape, Shape],
    precision: str,
    timing: bytes,
) -> tuple[bytes, bytes]:
    """One serialized plan from an ONNX file, and the updated timing cache."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    creation = trt.NetworkDefinitionCreationFlag
    strongly_typed = hasattr(creation, "STRONGLY_TYPED")
    flags = 0
    if strongly_typed:  # precision from the graph: FP16 tensors, Q/DQ nodes
        flags |= 1 << int(creation.STRONGLY_TYPED)
    elif hasattr(creation, "EXPLICIT_BATCH"):  # TensorRT 8.x
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTBuildError(f"{onnx_path.name}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # FP32 means FP32: parity with the CPU
    if not strongly_typed and precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *shapes)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing)
    config.set_timing_cache(cache, False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTBuildError(f"{onnx_path.name}: TensorRT failed to build a plan (see log)")
    return bytes(plan), bytes(config.get_timing_cache().serialize())


class PlanRunner:
    """A plan as `float32 array -> float32 array` on the GPU, buffers held by PyTorch."""

    def __init__(self, trt: Any, plan: Path) -> None:
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise TensorRTBuildError(f"{plan}: TensorRT cannot load the plan it just built")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input = next(n for n in names if self.engine.get_tensor_mode(n) == mode)
        self.output = next(n for n in names if self.engine.get_tensor_mode(n) != mode)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        inp = torch.from_numpy(np.ascontiguousarray(x, np.float32)).cuda()
        self.context.set_input_shape(self.input, tuple(inp.shape))
        shape = tuple(self.context.get_tensor_shape(self.output))
        out = torch.empty(shape, dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.input, inp.data_ptr())
        self.context.set_tensor_address(self.output, out.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise TensorRTBuildError("TensorRT failed to run the plan")
        stream.synchronize()
        return out.cpu().numpy()


def check_plans(
    trt: Any,
    bundle: ModelBundle,
    folder: Path,
    clips: np.ndarray,
    max_batch: int,
    tolerance: float,
    source: str,
) -> dict[str, Any]:
    """Features and window probabilities of the plans vs ONNX Runtime on the same clips:
    each encoder alone, and the two plans chained as the server runs them."""
    visual = {
        "tensorrt": _batched(PlanRunner(trt, folder / "visual_encoder.plan"), max_batch),
        "onnxruntime": ort_runner(bundle.path("visual_encoder")),
    }
    sequence = {
        "tensorrt": _batched(PlanRunner(trt, folder / "sequence_encoder.plan"), max_batch),
        "onnxruntime": ort_runner(bundle.path("sequence_encoder")),
    }
    features = visual["onnxruntime"](clips)
    window = bundle.clip.window
    n = (len(features) // window) * window
    windows = features[:n].reshape(-1, window, features.shape[1]) if n else features[None]
    prob_diff = float(
        np.abs(sequence["tensorrt"](windows) - sequence["onnxruntime"](windows)).max()
    )
    chained = sequence["tensorrt"](_as_windows(visual["tensorrt"](clips), windows.shape))
    chain_diff = float(np.abs(chained - sequence["onnxruntime"](windows)).max())
    parity = {
        "source": source,
        "clips": len(clips),
        "max_abs_diff_probabilities": max(prob_diff, chain_diff),
        "max_abs_diff_features": float(np.abs(visual["tensorrt"](clips) - features).max()),
        "tolerance": tolerance,
    }
    if not parity["max_abs_diff_probabilities"] <= tolerance:
        raise ParityError(
            f"TensorRT and ONNX Runtime disagree: max abs difference of probabilities "
            f"{parity['max_abs_diff_probabilities']:.3g} > {tolerance:g} ({source}); "
            "the plans were not kept"
        )
    return parity


def _batched(run: Any, max_batch: int) -> Any:
    """`run` on at most `max_batch` items at a time (the profile's limit)."""
    return lambda x: np.concatenate(
        [run(x[i : i + max_batch]) for i in range(0, len(x), max_batch)]
    )


def _as_windows(features: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return features[: shape[0] * shape[1]].reshape(shape)
