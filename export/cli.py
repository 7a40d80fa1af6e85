"""`gd-export`: trained checkpoint -> model bundle for the server; precision variants; TensorRT."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.bundle import (
    BundleError,
    ModelBundle,
    load_bundle,
    portable,
    sha256_file,
    write_bundle_json,
)
from core.clip import ClipSpec, DepthPreprocessor
from core.postprocess import ACTIVITY_THRESHOLD
from export.evaluate import CacheClips, evaluate_bundle
from export.onnx import (
    ExportError,
    check_parity,
    recorded_cache,
    staged_folder,
    verify_bundle,
    write_bundle,
)
from training.cache import CacheError
from training.checkpoint import Checkpoint, CheckpointError, load_checkpoint

DESCRIPTION = """\
Turn a trained detection checkpoint into a model bundle that gd-serve runs, make smaller
or faster variants of it, and build TensorRT engines for a GPU.

A bundle is a folder: model.json (classes, clip spec, threshold, file hashes, provenance,
measured mAP) and two ONNX files, the visual encoder (one depth clip -> a feature vector) and
the sequence encoder (a window of features -> per-clip class probabilities).

steps, in order (each has its own --help):
  onnx       checkpoint -> bundle, checked against PyTorch on real clips, mAP measured
  verify     check a bundle: schema, hashes, ONNX validity, tensor shapes
  evaluate   detection mAP of a bundle on a gd-prep cache's test videos (ONNX Runtime)
  quantize   an INT8 or FP16 variant of a bundle, refused if it loses > 1 point of mAP@0.5
  tensorrt   TensorRT engines for this GPU inside the bundle (needs TensorRT and CUDA)
"""

EPILOG = """\
example, from checkpoint to a served INT8 model:
  gd-export onnx --checkpoint runs/pku/detect/depth.pt --cache cache/pku --out models/pku
  gd-export quantize --bundle models/pku --precision int8 --out models/pku-int8
  gd-serve --model models/pku-int8

exit status: 0 done; 1 the export failed a check (parity, accuracy, bad input), the message
says which; 2 bad arguments, or TensorRT/CUDA not available here.
"""

PARITY_CLIPS = 32


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "parity_clips", 1) < 1 or getattr(args, "calibration_clips", 1) < 1:
        parser.error("--parity-clips and --calibration-clips must be >= 1")
    from export.tensorrt import TensorRTUnavailable

    try:
        return args.run(args)
    except TensorRTUnavailable as e:
        print(f"gd-export: TensorRT is not available here: {e}", file=sys.stderr)
        return 2
    except (ExportError, BundleError, CheckpointError, CacheError) as e:
        print(f"gd-export: {e}", file=sys.stderr)
        return 1


# --- onnx ----------------------------------------------------------------------------------------


def run_onnx(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    cache = args.cache or recorded_cache(ckpt.provenance)
    if cache is None and not args.parity_random:
        raise ExportError(
            "no cache to check parity on: give --cache (a gd-prep cache at the model's size), "
            "or --parity-random to check on random clips instead of real ones"
        )
    version = args.version or f"ckpt-{_sha256_prefix(args.checkpoint)}"
    name = args.name or Path(args.out).name
    with staged_folder(Path(args.out), args.overwrite) as stage:
        say(f"exporting {args.checkpoint} -> {args.out}")
        threshold = args.threshold if args.threshold is not None else trained_threshold(ckpt)
        bundle = write_bundle(
            ckpt, Path(args.checkpoint), stage, name, version, threshold, args.score_delay
        )
        verify_bundle(stage)
        say("onnx.checker and shapes: ok")
        clips, source = parity_clips(bundle.clip, cache, args.parity_clips)
        parity = check_parity(ckpt.network(), bundle, clips, source, threads=args.threads)
        say(
            f"parity with PyTorch on {parity.clips} clips ({source}): max |Δp| = "
            f"{parity.max_abs_diff_probabilities:.2e}, max |Δfeature| = "
            f"{parity.max_abs_diff_features:.2e}: ok"
        )
        metrics: dict[str, Any] = {"parity": parity.to_dict()}
        if cache is not None and not args.no_evaluate:
            evaluation = evaluate_bundle(bundle, cache, args.threads, progress=True)
            metrics["test"] = evaluation.to_dict()
            say(f"test mAP ({evaluation.videos} videos): {format_map(evaluation.map_action)}")
        write_bundle_json(dataclasses.replace(bundle, metrics=portable(metrics)))
    print(f"wrote {args.out} ({name} {version})")
    return 0


def trained_threshold(ckpt: Checkpoint) -> float:
    """The activity threshold the checkpoint was evaluated with, else the paper's."""
    target = ckpt.provenance.get("config", {}).get("target", {})
    value = target.get("activity_threshold") if isinstance(target, dict) else None
    return float(value) if isinstance(value, int | float) else ACTIVITY_THRESHOLD


def parity_clips(spec: ClipSpec, cache: Path | None, n: int) -> tuple[np.ndarray, str]:
    """Consecutive test clips of the cache, or random depth clips without one."""
    if cache is not None:
        return CacheClips(cache, spec).consecutive("test", n), f"test clips of {cache}"
    rng = np.random.default_rng(0)
    shape = (n, spec.clip_len, spec.height, spec.width)
    # Depth in and around the valid range, some of it invalid, as a camera gives.
    depth = rng.integers(0, spec.depth_max_mm + 500, size=shape).astype(np.uint16)
    return DepthPreprocessor(spec, spec.height, spec.width)(depth), "random clips"


def _sha256_prefix(path: str) -> str:
    return sha256_file(Path(path))[:12]


# --- verify / evaluate --------------------------------------------------------------------------


def run_verify(args: argparse.Namespace) -> int:
    bundle = verify_bundle(args.bundle)
    print(
        f"{args.bundle}: ok ({bundle.name} {bundle.version}, {bundle.num_classes} classes, "
        f"precision {bundle.precision['visual_encoder']})"
    )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    cache = _cache_of(bundle, args.cache)
    evaluation = evaluate_bundle(bundle, cache, args.threads, progress=not args.json)
    if args.json:
        print(json.dumps(evaluation.to_dict(), indent=2))
    else:
        print(f"mAP_action on {evaluation.videos} test videos of {cache}:")
        print(f"  {format_map(evaluation.map_action)}")
    return 0


def _cache_of(bundle: ModelBundle, given: Path | None, alternative: str = "") -> Path:
    """--cache, else the cache the bundle was evaluated or trained on."""
    if given is not None:
        return given
    recorded = bundle.metrics.get("test", {}).get("cache")
    if recorded and (Path(recorded) / "meta.json").is_file():
        return Path(recorded)
    found = recorded_cache(bundle.training)
    if found is None:
        raise ExportError(
            f"give --cache{alternative}: the bundle records no gd-prep cache that exists here"
        )
    return found


def format_map(map_action: dict[str, float]) -> str:
    # A fraction in 0..1 with 3 decimals, as gd-train prints it: one unit for mAP everywhere.
    return "  ".join(f"@{t}: {v:.3f}" for t, v in map_action.items())


# --- quantize ------------------------------------------------------------------------------------


def run_quantize(args: argparse.Namespace) -> int:
    from export.quantize import QuantizationRefused, VariantSettings, make_variant

    source = load_bundle(args.bundle)
    cache = _cache_of(source, args.cache)
    settings = VariantSettings(
        precision=args.precision,
        target=args.target,
        calibration_clips=args.calibration_clips,
        max_map_loss=args.max_map_loss,
        force=args.force,
        threads=args.threads,
        timing_seconds=args.timing_seconds,
        progress=True,
    )
    say(f"{args.precision} variant of {args.bundle}, evaluated on {cache}")
    try:
        bundle, report = make_variant(args.bundle, args.out, cache, settings, args.overwrite)
    except QuantizationRefused as e:
        print_report(e.report)
        raise
    print_report(report)
    print(f"wrote {args.out} ({bundle.name} {bundle.version})")
    return 0


def print_report(report: dict[str, Any]) -> None:
    p = report["precision"]
    say(f"mAP_action fp32: {format_map(report['before'])}")
    say(f"mAP_action {p}: {format_map(report['after'])}")
    say(
        f"mAP@0.5 loss: {report['map_loss_points']:.2f} points "
        f"(allowed {report['max_map_loss_points']:g})"
    )
    for batch, ms in report["ms_per_clip"]["fp32"].items():
        reduced, speedup = report["ms_per_clip"][p][batch], report["speedup"][batch]
        say(
            f"visual encoder, batch {batch}: fp32 {ms:.2f} ms/clip, {p} {reduced:.2f} ms/clip, "
            f"speed-up x{speedup:.2f}"
        )


# --- tensorrt ------------------------------------------------------------------------------------


def run_tensorrt(args: argparse.Namespace) -> int:
    from export.tensorrt import build_engines, load_tensorrt, precision_of_build

    bundle = verify_bundle(args.bundle)
    precision_of_build(bundle, args.fp16, args.int8)  # refuse bad flags before anything else
    load_tensorrt()  # refuse before reading clips if there is no TensorRT or GPU
    cache = None if args.parity_random else _cache_of(bundle, args.cache, " or --parity-random")
    clips, source = parity_clips(bundle.clip, cache, args.parity_clips)
    result = build_engines(bundle, clips, source, args.max_batch, args.fp16, args.int8)
    p = result.parity
    print(
        f"wrote {result.folder} ({result.precision}); parity with ONNX Runtime on {p['clips']} "
        f"clips: max |Δp| = {p['max_abs_diff_probabilities']:.2e} (tolerance {p['tolerance']:g})"
    )
    return 0


# --- arguments -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="gd-export", description=DESCRIPTION, epilog=EPILOG, formatter_class=raw
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    o = sub.add_parser(
        "onnx",
        help="checkpoint -> bundle (ONNX), checked against PyTorch",
        formatter_class=raw,
        description=(
            "Export a detection checkpoint (gd-train) to a model bundle: two ONNX files with a\n"
            "dynamic batch axis (and time axis for the sequence encoder), and model.json.\n"
            "The export is kept only if onnx.checker accepts both files, their shapes match\n"
            "model.json, and ONNX Runtime gives the same probabilities as PyTorch (max abs\n"
            "difference <= 1e-4) on consecutive clips of the cache's test videos. Then the\n"
            "bundle's detection mAP on those videos is measured and stored in model.json."
        ),
        epilog=(
            "examples:\n"
            "  gd-export onnx --checkpoint runs/pku/detect/depth.pt --cache cache/pku \\\n"
            "      --out models/pku\n"
            "  gd-export onnx --checkpoint runs/pku/detect/depth.pt --out models/try \\\n"
            "      --parity-random --no-evaluate\n"
            "gd-train writes the detector's checkpoint to WORKDIR/detect/depth.pt."
        ),
    )
    o.add_argument("--checkpoint", required=True, metavar="CKPT", help="gd-train checkpoint (.pt)")
    o.add_argument("--out", required=True, metavar="BUNDLE", help="bundle folder to create")
    o.add_argument(
        "--cache",
        type=Path,
        help="gd-prep cache for parity clips and mAP (default: the checkpoint's training cache)",
    )
    o.add_argument(
        "--parity-random",
        action="store_true",
        help="without any cache, check parity on random clips (and measure no mAP)",
    )
    o.add_argument("--name", help="model name in model.json (default: the --out folder's name)")
    o.add_argument(
        "--version", help="model version (default: ckpt-<first 12 hex of the checkpoint's sha256>)"
    )
    o.add_argument(
        "--score-delay",
        type=int,
        default=0,
        metavar="D",
        help="clips of future context live scores wait for, 0 .. window - 1 (default 0): the "
        "server's default for this model; measure it with bench/live_accuracy.py",
    )
    o.add_argument(
        "--threshold",
        type=float,
        metavar="GAMMA",
        help="activity threshold for segments (default: the one the checkpoint was evaluated "
        f"with, else {ACTIVITY_THRESHOLD}, the paper's)",
    )
    o.add_argument(
        "--parity-clips",
        type=int,
        default=PARITY_CLIPS,
        metavar="N",
        help=f"clips for the parity check (default {PARITY_CLIPS})",
    )
    o.add_argument("--no-evaluate", action="store_true", help="skip measuring the test mAP")
    _common(o, overwrite=True)
    o.set_defaults(run=run_onnx)

    v = sub.add_parser(
        "verify",
        help="check a bundle (schema, hashes, ONNX, shapes)",
        description="Check a bundle as the server will, and with onnx.checker: exit 1 names "
        "the first defect.",
        epilog="example:\n  gd-export verify --bundle models/pku",
        formatter_class=raw,
    )
    v.add_argument("--bundle", required=True, type=Path, help="bundle folder")
    v.set_defaults(run=run_verify)

    e = sub.add_parser(
        "evaluate",
        help="detection mAP of a bundle on a cache (ONNX Runtime)",
        formatter_class=raw,
        description=(
            "Detect actions in every test video of a gd-prep cache with the bundle, as the\n"
            "server does for an upload, and score them with the PKU-MMD protocol (mAP_action\n"
            "at tIoU 0.1, 0.3, 0.5). Works for any precision variant."
        ),
        epilog="example:\n  gd-export evaluate --bundle models/pku-int8 --cache cache/pku",
    )
    e.add_argument("--bundle", required=True, type=Path, help="bundle folder")
    e.add_argument("--cache", type=Path, help="gd-prep cache (default: the one the bundle names)")
    e.add_argument("--json", action="store_true", help="print the figures as JSON")
    _common(e)
    e.set_defaults(run=run_evaluate)

    q = sub.add_parser(
        "quantize",
        help="INT8 or FP16 variant of a bundle, with mAP before/after",
        formatter_class=raw,
        description=(
            "Write a reduced-precision copy of an FP32 bundle. INT8: static quantization\n"
            "with ONNX Runtime (QDQ, per-channel weights), calibrated on clips of the cache's\n"
            "training videos. FP16: weights and arithmetic in half precision (for GPUs).\n"
            "Only the visual encoder changes; inputs and outputs stay float32, so the server\n"
            "runs the variant as is: deploy it by pointing gd-serve --model at its folder.\n"
            "Both bundles are evaluated on the test videos; the variant is refused (exit 1,\n"
            "nothing written) if it loses more than --max-map-loss points of mAP@0.5."
        ),
        epilog=(
            "examples:\n"
            "  gd-export quantize --bundle models/pku --out models/pku-int8\n"
            "  gd-export quantize --bundle models/pku --out models/pku-int8-trt --target tensorrt\n"
            "  gd-export quantize --bundle models/pku --out models/pku-fp16 --precision fp16"
        ),
    )
    q.add_argument("--bundle", required=True, type=Path, help="the FP32 bundle")
    q.add_argument("--out", required=True, type=Path, help="folder of the new bundle")
    q.add_argument("--precision", choices=("int8", "fp16"), default="int8", help="default int8")
    q.add_argument(
        "--target",
        choices=("cpu", "tensorrt"),
        default="cpu",
        help="INT8 for ONNX Runtime on CPUs (uint8 activations, fastest there) or for "
        "TensorRT (symmetric int8, what gd-export tensorrt --int8 needs); default cpu",
    )
    q.add_argument("--cache", type=Path, help="gd-prep cache (default: the one the bundle names)")
    q.add_argument(
        "--calibration-clips",
        type=int,
        default=256,
        metavar="N",
        help="training clips to calibrate INT8 ranges on (default 256)",
    )
    q.add_argument(
        "--max-map-loss",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="largest allowed drop of mAP@0.5, in points: hundredths of mAP (default 1.0)",
    )
    q.add_argument("--force", action="store_true", help="keep the variant even if it loses more")
    q.add_argument(
        "--timing-seconds",
        type=float,
        default=1.0,
        metavar="S",
        help="time each encoder and batch size for S seconds (default 1)",
    )
    _common(q, overwrite=True)
    q.set_defaults(run=run_quantize)

    t = sub.add_parser(
        "tensorrt",
        help="TensorRT engines for this GPU (needs TensorRT + CUDA)",
        formatter_class=raw,
        description=(
            "Build TensorRT plans of both encoders into <bundle>/engines/<gpu>-trt<version>/,\n"
            "with optimization profiles for batch 1..--max-batch (and window lengths 1..T_w),\n"
            "a timing cache that speeds up the next build, and a parity check against ONNX\n"
            "Runtime. Run it on the machine that will serve (a plan is tied to its GPU model\n"
            "and TensorRT version); gd-serve --device auto picks the plans up. Without\n"
            "TensorRT or a CUDA GPU it stops with exit status 2. See docs/jetson.md."
        ),
        epilog=(
            "examples:\n"
            "  gd-export tensorrt --bundle models/pku --fp16 --max-batch 16\n"
            "  gd-export quantize --bundle models/pku --out models/pku-int8 --target tensorrt\n"
            "  gd-export tensorrt --bundle models/pku-int8 --int8"
        ),
    )
    t.add_argument("--bundle", required=True, type=Path, help="bundle folder")
    t.add_argument("--fp16", action="store_true", help="half-precision visual encoder")
    t.add_argument(
        "--int8",
        action="store_true",
        help="INT8 visual encoder (from an INT8 --target tensorrt bundle)",
    )
    t.add_argument(
        "--max-batch", type=int, default=32, metavar="B", help="largest batch (default 32)"
    )
    t.add_argument("--cache", type=Path, help="gd-prep cache for parity clips")
    t.add_argument("--parity-random", action="store_true", help="check parity on random clips")
    t.add_argument("--parity-clips", type=int, default=PARITY_CLIPS, metavar="N", help="default 32")
    t.set_defaults(run=run_tensorrt)
    return p


def _common(p: argparse.ArgumentParser, overwrite: bool = False) -> None:
    p.add_argument(
        "--threads", type=int, default=0, metavar="N", help="ONNX Runtime threads (0 = all cores)"
    )
    if overwrite:
        p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
