"""Reduced-precision variants of a bundle: INT8 (static, calibrated) and FP16 visual encoders.

A variant is a complete bundle of its own: `files.visual_encoder` is the reduced-precision
encoder, the sequence encoder stays FP32 (a GRU over 10 feature vectors costs nothing and is
the part most sensitive to rounding), inputs and outputs stay float32. A server runs any
variant unchanged; a deployment picks one by pointing at its folder. `model.json` records the
precision, the mAP before and after on the cache's test videos, and the measured speed-up.

INT8 uses ONNX Runtime's static quantization (QDQ format, per-channel weights), calibrated on
clips of the cache's training videos. Two targets:

- `cpu`: uint8 activations (asymmetric), int8 weights: the fast path of ONNX Runtime on x86
  CPUs with VNNI and on ARM;
- `tensorrt`: int8 activations and weights, both symmetric, as TensorRT's explicit
  quantization requires (`gd-export tensorrt --int8` builds from such a bundle).
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from core.bundle import FileRef, ModelBundle, sha256_file, write_bundle_json
from export.evaluate import CacheClips, Evaluation, evaluate_bundle, seconds_per_clip
from export.onnx import IO_NAMES, ExportError, ort_runner, staged_folder, verify_bundle

PRECISIONS = ("int8", "fp16")
TARGETS = ("cpu", "tensorrt")
MAX_MAP_LOSS = 1.0  # points of mAP@0.5 a variant may lose before it is refused
REFUSAL_TIOU = 0.5
REFUSAL_KEY = str(REFUSAL_TIOU)  # Evaluation.map_action is keyed by the tIoU as text
TIMING_BATCHES = (1, 8)


class QuantizationRefused(ExportError):
    """The variant loses more accuracy than allowed; `report` holds the figures."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def _calibration_reader(clips: np.ndarray, batch: int, progress: bool) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class ClipBatches(CalibrationDataReader):
        """Feeds calibration clips to ONNX Runtime's calibrator, `batch` at a time."""

        def __init__(self) -> None:
            self.start = 0
            self.bar = tqdm(total=len(clips), desc="calibrating", unit="clip", disable=not progress)

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= len(clips):
                self.bar.close()
                return None
            x = clips[self.start : self.start + batch]
            self.start += len(x)
            self.bar.update(len(x))
            return {IO_NAMES["visual_encoder"][0]: np.ascontiguousarray(x, np.float32)}

        def rewind(self) -> None:
            self.start = 0

    return ClipBatches()


def quantize_int8(
    src: Path,
    dst: Path,
    clips: np.ndarray,
    target: str = "cpu",
    batch: int = 8,
    progress: bool = False,
) -> None:
    """Static INT8 quantization of a visual encoder, calibrated (min/max) on `clips`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if target not in TARGETS:
        raise ExportError(f"INT8 target must be one of {', '.join(TARGETS)}, got {target!r}")
    if len(clips) == 0:
        raise ExportError("INT8 calibration needs at least one clip")
    prepared = dst.with_name(f".{dst.stem}.prepared.onnx")
    try:
        # Shape inference and graph optimization first, as ONNX Runtime recommends.
        quant_pre_process(str(src), str(prepared))
        tensorrt = target == "tensorrt"
        options = {"ActivationSymmetric": tensorrt, "WeightSymmetric": True}
        if tensorrt:
            # TensorRT's explicit quantization: float biases (it has no int32 dequantization)
            # and Q/DQ pairs on float weights, the form every TensorRT version parses.
            options.update(QuantizeBias=False, AddQDQPairToWeight=True)
        quantize_static(
            str(prepared),
            str(dst),
            _calibration_reader(clips, batch, progress),
            quant_format=QuantFormat.QDQ,
            per_channel=True,  # ResNet convolutions' weight ranges differ a lot between channels
            activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            extra_options=options,
        )
    finally:
        prepared.unlink(missing_ok=True)


def convert_fp16(src: Path, dst: Path) -> None:
    """FP16 weights and arithmetic, float32 inputs and outputs (casts at the edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = convert_float_to_float16(onnx.load(src), keep_io_types=True)
    # The converter appends its input casts after the nodes that use them; ONNX wants them first.
    OnnxModel.graph_topological_sort(model.graph)
    onnx.save(model, dst)


@dataclass(frozen=True)
class VariantSettings:
    precision: str  # one of PRECISIONS
    target: str = "cpu"  # INT8 only, one of TARGETS
    calibration_clips: int = 256
    max_map_loss: float = MAX_MAP_LOSS
    force: bool = False
    threads: int = 0
    timing_seconds: float = 1.0
    progress: bool = False


def make_variant(
    source: str | Path,
    out: str | Path,
    cache: str | Path,
    s: VariantSettings,
    overwrite: bool = False,
) -> tuple[ModelBundle, dict[str, Any]]:
    """Write the `s.precision` variant of the FP32 bundle `source` to `out`.

    Both are evaluated on the cache's test videos and timed on its clips; the variant is
    refused (`QuantizationRefused`, nothing written) if it loses more than `s.max_map_loss`
    points of mAP@0.5, unless `s.force`. Returns the new bundle and the report.
    """
    if s.precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {s.precision!r}")
    src = verify_bundle(source)
    if set(src.precision.values()) != {"fp32"}:
        raise ExportError(f"{source}: already a {src.precision} bundle; start from the FP32 one")
    data = CacheClips(cache, src.clip)
    with staged_folder(Path(out), overwrite) as stage:
        visual = stage / f"visual_encoder_{s.precision}.onnx"
        sequence = stage / src.files["sequence_encoder"].path
        shutil.copyfile(src.path("sequence_encoder"), sequence)
        calibration = None
        if s.precision == "int8":
            clips = data.sample("train", s.calibration_clips)
            quantize_int8(src.path("visual_encoder"), visual, clips, s.target, progress=s.progress)
            calibration = {"subset": "train", "clips": len(clips), "method": "minmax"}
        else:
            convert_fp16(src.path("visual_encoder"), visual)
        variant = dataclasses.replace(
            src,
            root=stage,
            version=f"{src.version}-{s.precision}",
            files={
                "visual_encoder": FileRef(visual.name, sha256_file(visual)),
                "sequence_encoder": FileRef(sequence.name, sha256_file(sequence)),
            },
            precision={"visual_encoder": s.precision, "sequence_encoder": "fp32"},
            training={**src.training, "source_bundle": source_record(src)},
            metrics={},
        )
        write_bundle_json(variant)
        verify_bundle(stage)
        report, after = compare(src, variant, data, s)
        if calibration:
            report["calibration"] = calibration
        if s.precision == "int8":
            report["target"] = s.target
        if report["map_loss_points"] > s.max_map_loss and not s.force:
            raise QuantizationRefused(
                f"{s.precision.upper()} loses {report['map_loss_points']:.2f} points of "
                f"mAP@{REFUSAL_TIOU} ({report['before'][REFUSAL_KEY]:.3f} -> "
                f"{report['after'][REFUSAL_KEY]:.3f}), more than the allowed "
                f"{s.max_map_loss:g}; nothing was written (--force keeps it anyway)",
                report,
            )
        report["forced"] = report["map_loss_points"] > s.max_map_loss
        variant = dataclasses.replace(
            variant,
            metrics={"test": after.to_dict(), "precision": report},
        )
        write_bundle_json(variant)
    return dataclasses.replace(variant, root=Path(out)), report


def source_record(src: ModelBundle) -> dict[str, Any]:
    return {
        "path": str(src.root.resolve()),
        "version": src.version,
        "visual_encoder_sha256": src.files["visual_encoder"].sha256,
    }


def compare(
    src: ModelBundle, variant: ModelBundle, data: CacheClips, s: VariantSettings
) -> tuple[dict[str, Any], Evaluation]:
    """mAP of both bundles on the test videos and their visual encoders' time per clip: the
    report, and the variant's full evaluation."""
    before = evaluate_bundle(src, data.root, s.threads, progress=s.progress)
    after = evaluate_bundle(variant, data.root, s.threads, progress=s.progress)
    clips = data.consecutive("test", max(TIMING_BATCHES))
    runs = {
        name: ort_runner(bundle.path("visual_encoder"), s.threads, spinning=False)
        for name, bundle in (("fp32", src), (s.precision, variant))
    }
    ms: dict[str, dict[str, float]] = {name: {} for name in runs}
    for batch in TIMING_BATCHES:
        if len(clips) >= batch:
            for name, t in seconds_per_clip(runs, clips, batch, s.timing_seconds).items():
                ms[name][str(batch)] = 1000 * t
    report = {
        "precision": s.precision,
        "before": before.map_action,
        "after": after.map_action,
        "map_loss_points": 100 * (before.map_at(REFUSAL_TIOU) - after.map_at(REFUSAL_TIOU)),
        "max_map_loss_points": s.max_map_loss,
        "ms_per_clip": ms,
        "speedup": {b: ms["fp32"][b] / ms[s.precision][b] for b in ms["fp32"]},
        "threads": s.threads,
    }
    return report, after
