"""The inference engine: the bundle's two encoders behind ONNX Runtime or native TensorRT.

`--device auto` takes TensorRT, then CUDA, from ONNX Runtime's providers when they exist and
falls back to the CPU; `cuda` and `tensorrt` refuse to start without them. Native TensorRT
plans (`<bundle>/engines/<gpu>-trt<version>/{visual_encoder,sequence_encoder}.plan`) are used
when the device is not `cpu`, the `tensorrt` and `cuda` Python modules import and the bundle has
plans for this GPU and TensorRT version; otherwise the engine says why and uses ONNX Runtime.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.bundle import (
    ENGINES_DIR,
    BundleError,
    ModelBundle,
    check_encoder_shapes,
    engine_folder_name,
)
from core.ortsession import CPU_PROVIDER, ort_session

log = logging.getLogger("gd.server.engine")

CPU, CUDA, TENSORRT = CPU_PROVIDER, "CUDAExecutionProvider", "TensorrtExecutionProvider"
ENCODERS = ("visual_encoder", "sequence_encoder")


class EngineError(ValueError):
    """The requested device is unavailable, or the bundle's encoders do not behave."""


def select_providers(device: str, available: Sequence[str]) -> list[str]:
    """ONNX Runtime providers for `device`, best first, from those `available`."""
    if device == "cpu":
        return [CPU]
    if device == "auto":
        return [p for p in (TENSORRT, CUDA) if p in available] + [CPU]
    wanted = {"cuda": [CUDA], "tensorrt": [TENSORRT, CUDA]}[device]
    if wanted[0] not in available:
        raise EngineError(
            f"--device {device} needs ONNX Runtime's {wanted[0]}, which this installation lacks "
            f"(available: {', '.join(available)}); install onnxruntime-gpu (the 'gpu' extra) on "
            "a machine with an NVIDIA GPU, or use --device auto|cpu"
        )
    return [p for p in wanted if p in available] + [CPU]


class OrtEncoder:
    """One encoder as an ONNX Runtime session: float32 array in, float32 array out."""

    def __init__(self, path: Path, providers: list[str], threads: int) -> None:
        try:
            # Idle ORT threads would busy-wait: on a few cores that steals the event loop's time.
            self.session = ort_session(path, providers, threads, spinning=False)
        except Exception as e:  # ORT raises its own exception types
            raise EngineError(f"{path}: ONNX Runtime cannot load it: {e}") from e
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(f"{path}: want one input and one output tensor")
        self.input_name = inputs[0].name
        self.input_shape = [d if isinstance(d, int) else None for d in inputs[0].shape]
        self.output_shape = [d if isinstance(d, int) else None for d in outputs[0].shape]
        self.providers = self.session.get_providers()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class TrtEncoder:
    """One encoder as a native TensorRT plan, dynamic batch, one input and one output.

    Needs `tensorrt` and NVIDIA's `cuda` Python bindings; device buffers are allocated per call
    (simple; the copy dominates at these sizes).
    """

    def __init__(self, plan: Path) -> None:
        import tensorrt as trt

        self._cudart = _cudart()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise EngineError(f"{plan}: TensorRT cannot deserialize this plan")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        modes = {n: self.engine.get_tensor_mode(n) for n in names}
        self.input = next(n for n in names if modes[n] == trt.TensorIOMode.INPUT)
        self.output = next(n for n in names if modes[n] == trt.TensorIOMode.OUTPUT)
        self.input_shape = [None if d < 0 else d for d in self.engine.get_tensor_shape(self.input)]
        self.output_shape = [
            None if d < 0 else d for d in self.engine.get_tensor_shape(self.output)
        ]
        self.stream = _cuda_check(self._cudart.cudaStreamCreate())
        self.providers = ["TensorRT (native plan)"]
        # the optimization profile's largest batch (gd-export tensorrt --max-batch)
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.input, 0)[2][0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) > self.max_batch:
            step = self.max_batch
            return np.concatenate([self(x[i : i + step]) for i in range(0, len(x), step)])
        cudart = self._cudart
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.context.set_input_shape(self.input, x.shape)
        out = np.empty(tuple(self.context.get_tensor_shape(self.output)), dtype=np.float32)
        d_in = _cuda_check(cudart.cudaMalloc(x.nbytes))
        d_out = _cuda_check(cudart.cudaMalloc(out.nbytes))
        try:
            h2d, d2h = (
                cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
            )
            _cuda_check(cudart.cudaMemcpyAsync(d_in, x.ctypes.data, x.nbytes, h2d, self.stream))
            self.context.set_tensor_address(self.input, int(d_in))
            self.context.set_tensor_address(self.output, int(d_out))
            if not self.context.execute_async_v3(self.stream):
                raise EngineError("TensorRT execution failed")
            _cuda_check(
                cudart.cudaMemcpyAsync(out.ctypes.data, d_out, out.nbytes, d2h, self.stream)
            )
            _cuda_check(cudart.cudaStreamSynchronize(self.stream))
        finally:
            cudart.cudaFree(d_in)
            cudart.cudaFree(d_out)
        return out


def _cudart():
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime
    return runtime


def _cuda_check(result: Any) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EngineError(f"CUDA runtime error {err}")
    return rest[0] if rest else None


def gpu_name() -> str | None:
    """The first CUDA GPU's name ("NVIDIA H200", "Orin"), as TensorRT's builder saw it."""
    try:
        props = _cuda_check(_cudart().cudaGetDeviceProperties(0))
        name = props.name
        return (name.decode() if isinstance(name, bytes) else str(name)).strip("\x00 ") or None
    except Exception:  # no cuda bindings, no driver, no device: try nvidia-smi
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out else None


def find_plans(
    bundle: ModelBundle,
    trt_version: Callable[[], str | None] | None = None,
    gpu: Callable[[], str | None] = gpu_name,
) -> tuple[Path | None, str]:
    """`(folder with both plans, "")`, or `(None, why not)`."""
    engines = bundle.root / ENGINES_DIR
    if not engines.is_dir():
        return None, f"the bundle has no {ENGINES_DIR}/ folder"
    version = (trt_version or _tensorrt_version)()
    if version is None:
        return None, "the tensorrt and cuda Python modules are not installed"
    name = gpu()
    if name is None:
        return None, "no NVIDIA GPU found"
    folder = engines / engine_folder_name(name, version)
    missing = [k for k in ENCODERS if not (folder / f"{k}.plan").is_file()]
    if missing:
        have = sorted(p.name for p in engines.iterdir() if p.is_dir())
        return None, (
            f"no plans for {folder.name} in {ENGINES_DIR}/ (has: {', '.join(have) or 'none'})"
        )
    return folder, ""


def _tensorrt_version() -> str | None:
    try:
        import tensorrt

        _cudart()
    except ImportError:
        return None
    return tensorrt.__version__


@dataclass
class Engine:
    """The bundle's visual and sequence encoders, loaded, checked and warmed up."""

    bundle: ModelBundle
    visual: Callable[[np.ndarray], np.ndarray]
    sequence: Callable[[np.ndarray], np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    def encode_clips(self, clips: np.ndarray) -> np.ndarray:
        """float32[B, T_c, H, W] -> float32[B, D]."""
        return self.visual(np.ascontiguousarray(clips, dtype=np.float32))

    def score_windows(self, features: np.ndarray) -> np.ndarray:
        """float32[B, T, D] -> float32[B, T, L+1] probabilities."""
        return self.sequence(np.ascontiguousarray(features, dtype=np.float32))


def default_threads() -> int:
    """All cores but one: the event loop, which receives and preprocesses every frame of
    every stream, keeps a core of its own (on 2 cores this halved the p99 clip latency)."""
    return max(1, (os.cpu_count() or 1) - 1)


def load_engine(bundle: ModelBundle, device: str = "auto", threads: int = 0) -> Engine:
    """Open both encoders on `device`, check their shapes and outputs on a warm-up batch.
    `threads` = ONNX Runtime intra-op threads, 0 = `default_threads()`."""
    import onnxruntime as ort

    providers = select_providers(device, ort.get_available_providers())
    threads = threads or default_threads()
    info: dict[str, Any] = {"device": device, "threads": threads}
    plans, why = (None, "--device cpu") if device == "cpu" else find_plans(bundle)
    encoders: dict[str, Any] = {}
    if plans is not None:
        try:
            encoders = {k: TrtEncoder(plans / f"{k}.plan") for k in ENCODERS}
            info.update(backend="tensorrt", plans=str(plans.relative_to(bundle.root)))
        except Exception as e:  # a stale or foreign plan: ONNX Runtime still works
            why = f"loading {plans.name} failed: {e}"
            encoders = {}
    if not encoders:
        log.info("native TensorRT plans not used: %s", why)
        encoders = {k: OrtEncoder(bundle.path(k), providers, threads) for k in ENCODERS}
        info.update(backend="onnxruntime", plans_skipped=why)
    for key, enc in encoders.items():
        try:
            check_encoder_shapes(bundle, key, enc.input_shape, enc.output_shape)
        except BundleError as e:
            raise EngineError(str(e)) from e
    info["providers"] = encoders["visual_encoder"].providers
    engine = Engine(bundle, encoders["visual_encoder"], encoders["sequence_encoder"], info)
    _warm_up(engine)
    log.info("engine ready: %s", info)
    return engine


def _warm_up(engine: Engine) -> None:
    """One batch through both encoders: checks what static shapes cannot (output sizes at run
    time, probabilities) and takes the first-run cost before the first stream does."""
    b, spec = engine.bundle, engine.bundle.clip
    clip = np.zeros((1, spec.clip_len, spec.height, spec.width), np.float32)
    features = engine.encode_clips(clip)
    if features.shape != (1, b.feature_dim):
        raise EngineError(
            f"visual_encoder returned shape {features.shape}, want (1, {b.feature_dim})"
        )
    window = np.repeat(features[:, None], spec.window, axis=1)
    probs = engine.score_windows(window)
    want = (1, spec.window, b.num_classes + 1)
    if probs.shape != want:
        raise EngineError(f"sequence_encoder returned shape {probs.shape}, want {want}")
    sums = probs.sum(axis=-1)
    if not (np.all(probs >= 0) and np.allclose(sums, 1.0, atol=1e-3)):
        raise EngineError(
            "sequence_encoder must output probabilities (softmax over L+1 classes); its rows "
            f"sum to {float(sums.min()):.4g}..{float(sums.max()):.4g}"
        )
