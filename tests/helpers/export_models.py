"""The export tests' tiny checkpoints, and one shared `gd-export onnx` bundle (needs torch)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
from pathlib import Path

import torch

from export.cli import main
from tests.export import CLASSES, SPEC, make_cache, random_videos
from training.checkpoint import Architecture, Checkpoint, build_network, save_checkpoint

ARCH = Architecture("depth", clip_len=4, width=4, num_classes=2, hidden_size=8)


def make_checkpoint(
    path: Path, task: str = "detection", provenance: dict | None = None, causal: bool = False
) -> Path:
    torch.manual_seed(0)
    arch = (
        dataclasses.replace(ARCH, causal=causal)
        if task == "detection"
        else Architecture("depth", 4, 4, 2)
    )
    net = build_network(task, arch)
    ckpt = Checkpoint(
        task=task, architecture=arch, clip=SPEC,
        classes=CLASSES if task == "detection" else CLASSES[1:], model=net.state_dict(),
        provenance=provenance or {"seed": 0}, metrics={"val_map": 0.25}, state={},
    )  # fmt: skip
    save_checkpoint(path, ckpt)
    return path


@functools.cache
def exported(root: Path) -> tuple[Path, Path, Path]:
    """(checkpoint, cache, bundle): the bundle written by the `gd-export onnx` command line's
    main, once per test session. In the test process, not one of its own: a new process adds
    torch's import and the exporter's first use (about 9 CPU s) to an export of 6."""
    ckpt = make_checkpoint(root / "model.pt")
    cache = make_cache(root / "cache", random_videos())
    bundle = root / "bundle"
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["onnx", "--checkpoint", str(ckpt), "--cache", str(cache), "--out",
                     str(bundle), "--name", "tiny", "--threads", "1"])  # fmt: skip
    assert code == 0, err.getvalue()
    return ckpt, cache, bundle
