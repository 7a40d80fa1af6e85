"""The training loss of one step (paper Eq. 1; design.md §5): each student's cross-entropy
plus the distiller's imitation (and, for the learned graph, its regularizer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from training import distributed
from training.distillation import GraphDistillation, GraphKind
from training.stages import Stage


def compute_loss(stage: Stage, batch: dict) -> tuple[Tensor, dict[str, float]]:
    """Σ_k CE_k over the students + the distiller's total, on the global batch (each rank's
    outputs gathered, see `training.distributed`)."""
    logits, reprs = [], []
    for m in stage.modalities:
        with torch.set_grad_enabled(m in stage.trained and torch.is_grad_enabled()):
            lg, rp = stage.nets[m](batch["inputs"][m])
        logits.append(distributed.gather(lg))
        reprs.append(distributed.gather(rp))
    labels = distributed.gather(batch["label"]).reshape(-1)
    logs: dict[str, float] = {}
    loss = torch.zeros((), device=labels.device)
    for m, lg in zip(stage.modalities, logits, strict=True):
        if m in stage.trained:
            ce = F.cross_entropy(lg.reshape(len(labels), -1), labels, weight=stage.class_weights)
            logs[f"ce/{m}"] = ce.item()
            loss = loss + ce
    if stage.distiller is not None:
        out = stage.distiller(logits, reprs)
        students = [stage.modalities[k] for k in stage.distiller.students]
        for m, im, reg in zip(
            students, out.imitation.tolist(), out.regularizer.tolist(), strict=True
        ):
            logs[f"imitation/{m}"] = im
            if (
                isinstance(stage.distiller, GraphDistillation)
                and stage.distiller.graph is GraphKind.LEARNED
            ):
                logs[f"regularizer/{m}"] = reg
        loss = loss + out.total
    logs["loss"] = loss.item()
    return loss, logs
