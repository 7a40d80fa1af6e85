"""A detection checkpoint -> a model bundle of two ONNX encoders, checked against PyTorch.

```
visual_encoder.onnx    clips    float32[batch, T_c, H, W] -> features      float32[batch, D]
sequence_encoder.onnx  features float32[batch, time, D]   -> probabilities float32[batch, time, L+1]
```

Beside them, `weights.pt`: the detector's PyTorch weights (a `training.checkpoint` file without
resume state), named with its sha256 in model.json `training.weights`, so that `gd-train
finetune` can start from a bundle. The server never reads it.

The sequence encoder includes the softmax, so the server gets probabilities. Its time axis is
dynamic as well as its batch: a video shorter than one window is scored in one shorter window
(`core.clip.window_starts`). The export is only kept if `onnx.checker` accepts both files, their
shapes satisfy `core.bundle.check_encoder_shapes`, and ONNX Runtime reproduces PyTorch's
probabilities on real clips to within `PARITY_TOLERANCE`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from core.bundle import (
    MODEL_JSON,
    REQUIRED_FILES,
    Dim,
    FileRef,
    ModelBundle,
    absolute_paths,
    check_encoder_shapes,
    load_bundle,
    portable,
    sha256_file,
    write_bundle_json,
)
from core.clip import ClipSpec
from core.files import make_temp_dir
from core.ortsession import ort_session
from core.postprocess import ACTIVITY_THRESHOLD
from training.checkpoint import Checkpoint, save_checkpoint
from training.networks import Detector

OPSET = 18  # the dynamo exporter's lowest; TensorRT 8.6 and later parse it
PARITY_TOLERANCE = 1e-4  # max abs difference of probabilities, ONNX Runtime vs PyTorch
WEIGHTS = "weights.pt"  # the detector's torch weights inside a bundle (gd-train finetune)
IO_NAMES = {  # (input, output) tensor names of each encoder
    "visual_encoder": ("clips", "features"),
    "sequence_encoder": ("features", "probabilities"),
}


class ExportError(ValueError):
    """The checkpoint, the cache or the exported files are not what an export needs."""


class ParityError(ExportError):
    """ONNX Runtime and PyTorch disagree by more than the tolerance."""


class SequenceProbabilities(nn.Module):
    """The sequence encoder with its softmax: features [B, T, D] -> probabilities [B, T, L+1]."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.sequence = detector.sequence

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.sequence(features)[0].softmax(dim=-1)


# --- writing the ONNX files ----------------------------------------------------------------


def export_encoders(detector: Detector, spec: ClipSpec, folder: Path) -> dict[str, Path]:
    """Write `visual_encoder.onnx` and `sequence_encoder.onnx` into `folder`."""
    detector = detector.eval()
    d = detector.encoder.out_dim
    # Example sizes >= 2: torch.export specializes axes whose example size is 0 or 1.
    examples = {
        "visual_encoder": torch.zeros(2, spec.clip_len, spec.height, spec.width),
        "sequence_encoder": torch.zeros(2, max(spec.window, 2), d),
    }
    modules = {
        "visual_encoder": detector.encoder,
        "sequence_encoder": SequenceProbabilities(detector),
    }
    dynamic = {"visual_encoder": ("batch",), "sequence_encoder": ("batch", "time")}
    paths = {}
    for key in REQUIRED_FILES:
        paths[key] = folder / f"{key}.onnx"
        _export(modules[key], examples[key], paths[key], *IO_NAMES[key], dynamic[key])
    return paths


def _export(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str,
    output_name: str,
    dynamic: tuple[str, ...],
) -> None:
    """Export with the named leading axes dynamic in the input and the output."""
    axes = {i: torch.export.Dim(name, min=1) for i, name in enumerate(dynamic)}
    # The exporter prints progress and warns about torch internals; neither helps a user.
    with _quiet(), _one_registry(), torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=(axes,),
            opset_version=OPSET,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    model = program.model_proto
    # The exporter can record a dynamic axis of the output with the example's size (the GRU's
    # time axis); the output has the input's dynamic axes, so name them as such.
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    for i, name in enumerate(dynamic):
        out_dims[i].Clear()
        out_dims[i].dim_param = name
    del model.graph.value_info[:]  # intermediate shapes carry the same stale sizes
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.save(strip_stack_traces(model), path)


@functools.cache
def _torch_builder() -> tuple[type, Any]:
    """torch's `ONNXRegistry` and its own `from_torchlib` classmethod (saved before
    `_one_registry` replaces it). Imported at the first export, not with this module: the
    exporter's internals (onnxscript, onnx_ir, sympy) cost a CPU second that `gd-export
    quantize`, `evaluate` and `--help` never need."""
    from torch.onnx._internal.exporter import _registration

    cls = _registration.ONNXRegistry
    return cls, cls.__dict__["from_torchlib"]


@functools.cache
def _registry(opset_version: int = OPSET) -> Any:
    cls, from_torchlib = _torch_builder()
    return from_torchlib.__get__(None, cls)(opset_version=opset_version)


@contextlib.contextmanager
def _one_registry() -> Iterator[None]:
    """The exporter's table of ONNX functions, built once a process instead of once an export.

    `torch.onnx.export` builds it on every call (a second of CPU, a third of what exporting
    the tiny test model costs once the exporter is warm) and only reads it when no custom
    translation table is given (torch 2.13, `torch/onnx/_internal/exporter/_compat.py`). A
    bundle is two exports, and `gd-train finetune --export` and the tests export more."""
    cls, from_torchlib = _torch_builder()
    cls.from_torchlib = staticmethod(_registry)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        cls.from_torchlib = from_torchlib  # type: ignore[attr-defined]


STACK_TRACE = "pkg.torch.onnx.stack_trace"


def strip_stack_traces(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the exporter's per-node Python stack traces: they name files on the machine that
    exported (a bundle carries no absolute paths) and nothing reads them."""
    for node in model.graph.node:
        kept = [p for p in node.metadata_props if p.key != STACK_TRACE]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    return model


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def onnx_io_shapes(path: Path) -> tuple[list[Dim], list[Dim]]:
    """The (input, output) shapes an ONNX file declares: ints, axis names, or None."""
    graph = onnx.load(path, load_external_data=False).graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ExportError(
            f"{path}: want one input and one output, got {len(graph.input)} and {len(graph.output)}"
        )

    def dims(value: onnx.ValueInfoProto) -> list[Dim]:
        return [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value.type.tensor_type.shape.dim
        ]

    return dims(graph.input[0]), dims(graph.output[0])


def verify_bundle(root: str | Path) -> ModelBundle:
    """`load_bundle` (schema, spec, hashes) plus what needs onnx: each encoder passes
    `onnx.checker` and has the shapes the bundle promises; and model.json names no folder of
    the machine that built it."""
    bundle = load_bundle(root)
    found = absolute_paths(bundle.to_dict())
    if found:
        raise ExportError(
            f"{bundle.root / MODEL_JSON} holds absolute paths of the machine that built it, in "
            f"{', '.join(found)}; rewrite it portably with `python -m export.card "
            f"{bundle.root}` (or export it again)"
        )
    for key in REQUIRED_FILES:
        path = bundle.path(key)
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"{path}: onnx.checker rejects it: {e}") from e
        check_encoder_shapes(bundle, key, *onnx_io_shapes(path))
    return bundle


# --- running the ONNX files ------------------------------------------------------------------


def ort_runner(path: Path, threads: int = 0, spinning: bool = True) -> Any:
    """`float32 array -> float32 array` through an ONNX Runtime CPU session with the server's
    options (`core.ortsession`; `threads` 0 = one per core, `spinning` as there)."""
    session = ort_session(path, threads=threads, spinning=spinning)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]


def torch_runners(detector: Detector) -> tuple[Any, Any]:
    """(visual, sequence) of the PyTorch detector as `float32 array -> float32 array`."""
    sequence = SequenceProbabilities(detector).eval()

    def run(module: nn.Module, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    return (lambda x: run(detector.encoder, x)), (lambda x: run(sequence, x))


# --- parity ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parity:
    """How far ONNX Runtime is from PyTorch on the same clips."""

    source: str  # where the clips came from
    clips: int
    windows: int
    max_abs_diff_probabilities: float
    max_abs_diff_features: float
    feature_scale: float  # max |feature|, to judge the feature difference by
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_parity(
    detector: Detector,
    bundle: ModelBundle,
    clips: np.ndarray,
    source: str,
    tolerance: float = PARITY_TOLERANCE,
    threads: int = 0,
) -> Parity:
    """Run consecutive `clips` `[N, T_c, H, W]` through PyTorch and through the bundle's ONNX
    files, as the server chains them (visual encoder, then windows of features through the
    sequence encoder: full windows and one shorter window), and compare. Raises `ParityError`
    naming the largest difference if probabilities differ by more than `tolerance`, or
    features by more than `tolerance` relative to their scale."""
    torch_visual, torch_sequence = torch_runners(detector)
    ort_visual = ort_runner(bundle.path("visual_encoder"), threads)
    ort_sequence = ort_runner(bundle.path("sequence_encoder"), threads)
    f_torch, f_ort = torch_visual(clips), ort_visual(clips)
    windows_torch = _windows(f_torch, bundle.clip.window)
    windows_ort = _windows(f_ort, bundle.clip.window)
    prob_diff = max(
        float(np.abs(torch_sequence(a) - ort_sequence(b)).max())
        for a, b in zip(windows_torch, windows_ort, strict=True)
    )
    scale = max(float(np.abs(f_torch).max()), 1.0)
    parity = Parity(
        source=source,
        clips=len(clips),
        windows=sum(len(w) for w in windows_torch),
        max_abs_diff_probabilities=prob_diff,
        max_abs_diff_features=float(np.abs(f_torch - f_ort).max()),
        feature_scale=scale,
        tolerance=tolerance,
    )
    if not prob_diff <= tolerance:  # NaN fails too
        raise ParityError(
            f"ONNX Runtime and PyTorch disagree: max abs difference of probabilities "
            f"{prob_diff:.3g} > {tolerance:g} on {len(clips)} clips ({source})"
        )
    if not parity.max_abs_diff_features <= tolerance * scale:
        raise ParityError(
            f"ONNX Runtime and PyTorch disagree: max abs difference of visual features "
            f"{parity.max_abs_diff_features:.3g} > {tolerance:g} x {scale:.3g} on {len(clips)} "
            f"clips ({source})"
        )
    return parity


def _windows(features: np.ndarray, window: int) -> list[np.ndarray]:
    """Batches `[k, T, D]` of consecutive features: all full windows, and one of the first
    `T < window` clips, so the dynamic time axis is exercised too."""
    n = len(features)
    full = (n // window) * window
    out = [features[:full].reshape(-1, window, features.shape[1])] if full else []
    short = min(n, max(window // 2, 1))
    if short < window:
        out.append(features[None, :short])
    return out


# --- the bundle ------------------------------------------------------------------------------


def check_checkpoint(ckpt: Checkpoint, where: str) -> None:
    """A bundle serves depth action detection; anything else cannot be exported."""
    if ckpt.task != "detection":
        raise ExportError(
            f"{where}: a {ckpt.task} checkpoint; gd-export needs a detection checkpoint "
            "(visual encoder + sequence encoder, from gd-train's detection stage)"
        )
    if ckpt.architecture.modality != "depth":
        raise ExportError(
            f"{where}: the network reads {ckpt.architecture.modality!r}; a bundle serves depth"
        )
    want = ckpt.architecture.num_classes + 1
    if len(ckpt.classes) != want or ckpt.classes[0] != "background":
        raise ExportError(
            f"{where}: classes must be 'background' and {want - 1} actions, got {ckpt.classes}"
        )


def write_bundle(
    ckpt: Checkpoint,
    checkpoint_path: Path,
    folder: Path,
    name: str,
    version: str,
    threshold: float = ACTIVITY_THRESHOLD,
    score_delay: int = 0,
) -> ModelBundle:
    """Export the encoders of `ckpt` into `folder` and describe them in `model.json`."""
    check_checkpoint(ckpt, str(checkpoint_path))
    detector = ckpt.network()
    paths = export_encoders(detector, ckpt.clip, folder)
    training = training_record(ckpt, checkpoint_path)
    training["weights"] = write_weights(ckpt, folder)
    bundle = ModelBundle(
        root=folder,
        name=name,
        version=version,
        classes=tuple(ckpt.classes),
        clip=ckpt.clip,
        feature_dim=detector.encoder.out_dim,
        activity_threshold=threshold,
        score_delay=score_delay,
        causal=ckpt.architecture.causal,
        files={k: FileRef(p.name, sha256_file(p)) for k, p in paths.items()},
        training=training,
    )
    write_bundle_json(bundle)
    return bundle


def write_weights(ckpt: Checkpoint, folder: Path) -> dict[str, str]:
    """`folder/weights.pt`: the deployable network's weights, its architecture, clip spec and
    classes, with a portable provenance and no resume state; returns its model.json entry.
    Not in `files` (the server's contract): the server has no use for torch weights."""
    path = folder / WEIGHTS
    light = Checkpoint(
        task=ckpt.task, architecture=ckpt.architecture, clip=ckpt.clip, classes=ckpt.classes,
        model=ckpt.model, provenance=portable(ckpt.provenance), metrics={}, state={},
    )  # fmt: skip
    save_checkpoint(path, light)
    return {"path": WEIGHTS, "sha256": sha256_file(path)}


def training_record(ckpt: Checkpoint, checkpoint_path: Path) -> dict[str, Any]:
    """Where the model came from: the checkpoint's provenance and what exported it, with
    paths `portable` (relative to the working directory): a bundle is shipped elsewhere."""
    record = {
        **ckpt.provenance,
        "checkpoint": str(checkpoint_path),
        "checkpoint_sha256": sha256_file(checkpoint_path),
        "architecture": ckpt.architecture.to_dict(),
        "checkpoint_metrics": ckpt.metrics,
        "exported": {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "opset": OPSET,
        },
    }
    return portable(record)


def recorded_cache(provenance: dict[str, Any]) -> Path | None:
    """The gd-prep cache a checkpoint was trained on, if its provenance names one that exists
    (`provenance["cache"]`, or `provenance["dataset"]["cache"]`)."""
    dataset = provenance.get("dataset")
    for value in (
        provenance.get("cache"),
        dataset.get("cache") if isinstance(dataset, dict) else None,
    ):
        if isinstance(value, str) and (Path(value) / "meta.json").is_file():
            return Path(value)
    return None


@contextlib.contextmanager
def staged_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """A fresh folder beside `out` that becomes `out` if the block succeeds and disappears if
    it fails, so `out` never holds a half-written or rejected bundle."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExportError(f"{out} exists and is not empty; choose another --out or --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = make_temp_dir(out.parent, prefix=f".{out.name}.partial-")
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    stage.rename(out)
