"""Baselines that use privileged modalities (paper Sec. 5.1, Table 3a).

Each is a `Distiller`: same inputs and `DistillationLoss` output as `GraphDistillation`, so
the trainer swaps them. They were made for two modalities; as in the paper, a student's
pairwise losses are averaged over its teachers. Teachers always enter with stop-gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from training.distillation import (
    DistillationError,
    DistillationLoss,
    Distiller,
    Metric,
    Outputs,
    distance,
)


class MultiTask(Distiller):
    """Multi-task learning (Caruana): a linear map per (student, teacher) pair reconstructs
    the teacher's representation from the student's; loss = mean squared error.

    The paper reconstructs raw pixels; representations keep one definition for image and
    vector modalities and cost a D x D map per pair.
    """

    def __init__(
        self,
        num_modalities: int,
        repr_dim: int,
        students: Sequence[int] | None = None,
        weight: float = 1.0,
    ) -> None:
        super().__init__(num_modalities, students)
        self.weight = weight
        self.decoders = nn.ModuleDict(
            {
                f"{k}_{j}": nn.Linear(repr_dim, repr_dim)
                for k in self.students
                for j in range(num_modalities)
                if j != k
            }
        )

    def _reconstruction_error(self, reprs: Tensor, k: int, j: int) -> Tensor:
        prediction = self.decoders[f"{k}_{j}"](reprs[k])
        return (prediction - reprs[j].detach()).pow(2).mean(dim=-1)

    def forward(self, logits: Outputs, reprs: Outputs) -> DistillationLoss:
        _, reprs = self._flatten(logits, reprs)
        unused = reprs.new_zeros(reprs.shape[1])  # a student is not its own teacher
        rows = [
            torch.stack(
                [
                    self._reconstruction_error(reprs, k, j) if j != k else unused
                    for j in range(self.num_modalities)
                ]
            )
            for k in self.students
        ]
        return self.average_over_teachers(self.weight * torch.stack(rows))


class KnowledgeDistillation(Distiller):
    """Hinton et al.: the student's softmax at temperature T imitates the teacher's, times T^2
    so gradients keep their scale as T changes.

    Computed as KL(teacher ‖ student), which is the soft-target cross-entropy minus the
    teacher's entropy: the same gradients, but 0 when the student matches its teacher.
    """

    def __init__(
        self,
        num_modalities: int,
        students: Sequence[int] | None = None,
        temperature: float = 8.0,
        weight: float = 1.0,
    ) -> None:
        super().__init__(num_modalities, students)
        if temperature <= 0:
            raise DistillationError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.weight = weight

    def forward(self, logits: Outputs, reprs: Outputs) -> DistillationLoss:
        logits, _ = self._flatten(logits, reprs)
        student, teacher = self._student_and_teachers(logits)
        kl = distance(student, teacher, Metric.KL, self.temperature)
        return self.average_over_teachers(self.weight * kl)


class CrossModalDistillation(Distiller):
    """Gupta et al.: mean squared error between the student's and the teacher's
    representations and logits (matching logits is the high-temperature limit of Hinton's
    soft-logit loss, so no temperature)."""

    def __init__(
        self,
        num_modalities: int,
        students: Sequence[int] | None = None,
        lambda_logit: float = 1.0,
        lambda_repr: float = 1.0,
    ) -> None:
        super().__init__(num_modalities, students)
        self.lambda_logit = lambda_logit
        self.lambda_repr = lambda_repr

    def forward(self, logits: Outputs, reprs: Outputs) -> DistillationLoss:
        logits, reprs = self._flatten(logits, reprs)
        logit_s, logit_t = self._student_and_teachers(logits)
        repr_s, repr_t = self._student_and_teachers(reprs)
        d_logit = (logit_s - logit_t).pow(2).mean(dim=-1)
        d_repr = (repr_s - repr_t).pow(2).mean(dim=-1)
        return self.average_over_teachers(self.lambda_logit * d_logit + self.lambda_repr * d_repr)
