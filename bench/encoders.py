"""Visual-encoder speed: PyTorch eager vs ONNX Runtime FP32 vs ONNX Runtime INT8, same run.

The visual encoder is the whole cost of serving (one pass per clip; the sequence encoder runs
a 1-layer GRU over 10 feature vectors). Measured at the compact CPU size (T_c 10, 112x112) for
ResNet-18 widths 32 (the CPU default) and 16, batch 1 (a single stream's latency) and 8 (the
server's micro-batch across streams): median time per clip and clips per second, and each
runtime's speed-up over PyTorch eager. The runtimes are timed in turns, call by call
(`export.evaluate.seconds_per_clip`), so a busy machine slows all of them alike. Weights are
random (speed does not depend on them); INT8 is the `--target cpu` quantization of
`gd-export quantize`, calibrated on random depth.

Run: .venv/bin/python bench/encoders.py [--widths 32 16] [--seconds 2] [--threads 0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from core.clip import ClipSpec, DepthPreprocessor
from export.evaluate import seconds_per_clip
from export.onnx import export_encoders, ort_runner, torch_runners
from export.quantize import quantize_int8
from training.checkpoint import Architecture, build_network

BATCHES = (1, 8)


def depth_clips(spec: ClipSpec, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    depth = rng.integers(0, 5000, size=(n, spec.clip_len, spec.height, spec.width))
    return DepthPreprocessor(spec, spec.height, spec.width)(depth.astype(np.uint16))


def runtimes(width: int, spec: ClipSpec, folder: Path, threads: int) -> dict:
    """name -> `clips -> features` for the three runtimes, one network."""
    torch.manual_seed(0)
    arch = Architecture("depth", spec.clip_len, width, num_classes=51)
    net = build_network("detection", arch).eval()
    paths = export_encoders(net, spec, folder)
    int8 = folder / "visual_encoder_int8.onnx"
    quantize_int8(paths["visual_encoder"], int8, depth_clips(spec, 64, seed=1), target="cpu")
    return {
        "torch eager": torch_runners(net)[0],
        "ORT fp32": ort_runner(paths["visual_encoder"], threads, spinning=False),
        "ORT int8": ort_runner(int8, threads, spinning=False),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=int, nargs="+", default=[32, 16])
    p.add_argument("--seconds", type=float, default=2.0, help="timing per runtime and batch")
    p.add_argument("--threads", type=int, default=0, help="0 = all cores")
    args = p.parse_args()
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    spec = ClipSpec()  # T_c 10, 112x112
    clips = depth_clips(spec, 32)
    print(
        f"visual encoder, {spec.clip_len}x{spec.height}x{spec.width} clips, {threads} threads, "
        f"torch {torch.__version__}: median ms per clip (clips/s), speed-up vs torch eager"
    )
    header = f"{'width':>5} {'batch':>5} | " + " | ".join(
        f"{n:>22}" for n in ("torch eager", "ORT fp32", "ORT int8")
    )
    print(header)
    print("-" * len(header))
    for width in args.widths:
        with tempfile.TemporaryDirectory() as tmp:
            runs = runtimes(width, spec, Path(tmp), args.threads)
            for batch in BATCHES:
                per_clip = seconds_per_clip(runs, clips, batch, args.seconds)
                ms = {name: 1e3 * t for name, t in per_clip.items()}
                base = ms["torch eager"]
                cells = [f"{v:6.2f} ({1e3 / v:5.0f}/s) x{base / v:4.2f}" for v in ms.values()]
                print(f"{width:>5} {batch:>5} | " + " | ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
