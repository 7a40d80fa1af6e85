"""Validation accuracy of a stage's networks while it trains: for the per-epoch metrics,
for the curriculum's prior and for a finished stage's figures."""

from __future__ import annotations

import torch

from training import data as D
from training.evaluate import classification_accuracies, clip_accuracy, detect
from training.stages import Stage


def validate(
    stage: Stage, device: torch.device, samples: list[int] | None = None
) -> dict[str, float]:
    """Accuracy of every modality of the stage on `samples` (default: the validation split):
    classification over 5 uniform clips, detection per grid clip of the offline scores."""
    samples = stage.val if samples is None else samples
    if not samples:
        return {}
    if stage.task == "classification":
        clips = D.ClassificationClips(
            stage.cache, samples, stage.modalities, stage.spec, train=False
        )
        return classification_accuracies(
            {m: stage.nets[m] for m in stage.modalities}, clips, device
        )
    out = {}
    for m in stage.modalities:
        _, probs = detect(stage.nets[m], stage.cache, samples, m, stage.spec, device, 0.5)
        out[m] = clip_accuracy(stage.cache, probs, stage.spec)
    return out
