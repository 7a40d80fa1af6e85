"""Checkpoints: what `gd-train` saves and `gd-export` reads.

A checkpoint is one `torch.save` dict, written atomically:

```
format            "gd-checkpoint", version 1
task              "classification" | "detection"
architecture      {modality, clip_len, width, vector_dim, num_classes, hidden_size, causal}
                  enough to rebuild the deployable network with `build_network`
clip              the ClipSpec dict the network was trained with (mean/std from the cache)
classes           class names; for detection index 0 = "background"
model             state_dict of the deployable network: a Classifier (classification) or a
                  Detector (detection) of the target modality
provenance        config, dataset, command, git commit, seed, time
metrics           measured results
state             anything else the trainer needs to resume (optimizers, other modalities'
                  networks, epoch, RNG states); export ignores it
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.clip import ClipSpec
from core.files import atomic_output
from training.networks import Classifier, Detector, SequenceEncoder, build_encoder

FORMAT = "gd-checkpoint"
VERSION = 1
TASKS = ("classification", "detection")


class CheckpointError(ValueError):
    """A checkpoint file is missing, of another format or inconsistent."""


@dataclass(frozen=True)
class Architecture:
    """How to rebuild the deployable network."""

    modality: str
    clip_len: int
    width: int
    num_classes: int  # L, action classes (detection adds background)
    vector_dim: int | None = None  # skeleton features' size, for GRU encoders
    hidden_size: int = 512  # sequence encoder GRU (detection)
    causal: bool = False  # sequence encoder direction (detection)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def build_network(task: str, arch: Architecture) -> nn.Module:
    """A fresh Classifier or Detector with this architecture."""
    encoder = build_encoder(arch.modality, arch.clip_len, arch.width, arch.vector_dim)
    if task == "classification":
        return Classifier(encoder, arch.num_classes)
    if task == "detection":
        sequence = SequenceEncoder(encoder.out_dim, arch.num_classes, arch.hidden_size, arch.causal)
        return Detector(encoder, sequence)
    raise CheckpointError(f"task must be one of {TASKS}, got {task!r}")


@dataclass
class Checkpoint:
    task: str
    architecture: Architecture
    clip: ClipSpec
    classes: list[str]
    model: dict[str, torch.Tensor]
    provenance: dict[str, Any]
    metrics: dict[str, Any]
    state: dict[str, Any]

    def network(self) -> nn.Module:
        """The deployable network with its trained weights, in eval mode."""
        net = build_network(self.task, self.architecture)
        net.load_state_dict(self.model)
        return net.eval()


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    """Write atomically: a run killed while saving keeps its previous checkpoint."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "task": ckpt.task,
        "architecture": ckpt.architecture.to_dict(),
        "clip": ckpt.clip.to_dict(),
        "classes": list(ckpt.classes),
        "model": ckpt.model,
        "provenance": ckpt.provenance,
        "metrics": ckpt.metrics,
        "state": ckpt.state,
    }
    with atomic_output(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        # Our own files; weights_only=False because `state` holds optimizer and RNG states.
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a gd-train checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')}, want {VERSION}"
        )
    if payload.get("task") not in TASKS:
        raise CheckpointError(f"{path}: unknown task {payload.get('task')!r}")
    return Checkpoint(
        task=payload["task"],
        architecture=Architecture(**payload["architecture"]),
        clip=ClipSpec.from_dict(payload["clip"]),
        classes=list(payload["classes"]),
        model=payload["model"],
        provenance=payload.get("provenance", {}),
        metrics=payload.get("metrics", {}),
        state=payload.get("state", {}),
    )
