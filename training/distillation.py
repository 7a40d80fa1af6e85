"""Graph distillation (paper Sec. 3.2, Eq. 3-10) as a loss layer, and its curriculum.

Every modality m of an example gives logits φl_m and a representation φr_m. A student k
imitates its teachers j != k through messages weighted by a distillation graph:

    m_{k<-j} = λ1 d(φl_k, sg φl_j) + λ2 d(φr_k, sg φr_j)        d = 1 - cos (or L2, L1, KL)
    z_m      = [W_l φl_m ‖ W_r φr_m]
    G_{jk}   = softmax over teachers j != k of α (W_e [z_k ‖ z_j] + b)
    c_{kj}   = softmax over teachers j != k of acc_j / 0.25        (prior, validation accuracy)
    loss_k   = mean_batch Σ_j (G_{jk} + c_{kj}) m_{k<-j}
               + gd_reg Σ_j (mean_batch G_{jk} - c_{kj})^2             (learned graph only)

The trainer adds each student's cross-entropy. sg (stop-gradient) applies to every teacher
quantity, in the messages and in the edges, so a student's loss never trains a teacher.
All distillers (this layer and `training.baselines`) take the same inputs and return a
`DistillationLoss`, so the trainer can swap them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Per-modality outputs: one tensor [M, *batch, F] or a sequence of M tensors [*batch, F].
Outputs = Tensor | Sequence[Tensor]


class DistillationError(ValueError):
    """Bad configuration of, or bad input to, a distiller."""


class GraphKind(StrEnum):
    EMPTY = "empty"  # no imitation
    UNIFORM = "uniform"  # every teacher weighs 1 / (M - 1)
    PRIOR = "prior"  # weights c from validation accuracies
    LEARNED = "learned"  # example-specific G plus the prior c, with the regularizer


class Metric(StrEnum):
    COSINE = "cosine"  # 1 - cos (the paper)
    L2 = "l2"  # squared Euclidean distance (the released code's "l2")
    L1 = "l1"
    KL = "kl"  # T^2 KL(softmax(teacher / T) ‖ softmax(student / T))


def _require_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise DistillationError(f"{name} must be > 0, got {value}")


def _choice(enum: type[StrEnum], value: str, what: str) -> StrEnum:
    try:
        return enum(value)
    except ValueError:
        options = ", ".join(e.value for e in enum)
        raise DistillationError(f"unknown {what} {value!r}; choose one of {options}") from None


@dataclass
class DistillationLoss:
    """What a distiller returns; S = number of students, M = modalities, N = examples."""

    total: Tensor  # scalar: sum over students of imitation + regularizer (add the CE yourself)
    imitation: Tensor  # [S] mean over examples of the weighted messages of each student
    regularizer: Tensor  # [S] graph regularizer (0 unless the graph is learned)
    weights: Tensor  # [S, M, N] weight of teacher j's message to student s (0 for j = s)


class Distiller(nn.Module):
    """Common ground of the imitation losses: which modalities are students, input checks.

    `students=None` makes every modality a student of the others (joint training, the paper);
    `students=[k]` distils into modality k alone from teachers whose networks the trainer
    keeps frozen (the released code).

    Input: logits [M, *batch, L] and representations [M, *batch, D] (a tensor, or a sequence of
    M tensors). Leading batch dimensions are flattened, so detection's [M, B, T_w, ...] is
    distilled per clip, as the released code does.
    """

    def __init__(self, num_modalities: int, students: Sequence[int] | None = None) -> None:
        super().__init__()
        if num_modalities < 2:
            raise DistillationError(f"distillation needs >= 2 modalities, got {num_modalities}")
        students = tuple(range(num_modalities)) if students is None else tuple(students)
        if not students or len(set(students)) != len(students):
            raise DistillationError(f"students must be distinct and non-empty, got {students}")
        if not all(0 <= k < num_modalities for k in students):
            raise DistillationError(f"students {students} out of range 0..{num_modalities - 1}")
        self.num_modalities = num_modalities
        self.students = students
        mask = torch.ones(len(students), num_modalities)
        mask[torch.arange(len(students)), torch.tensor(students)] = 0
        # [S, M, 1]: 1 where modality j is a teacher of student s.
        self.register_buffer("teacher_mask", mask[..., None], persistent=False)

    def _flatten(self, logits: Outputs, reprs: Outputs) -> tuple[Tensor, Tensor]:
        logits = logits if isinstance(logits, Tensor) else torch.stack(list(logits))
        reprs = reprs if isinstance(reprs, Tensor) else torch.stack(list(reprs))
        if logits.dim() < 3 or reprs.dim() < 3:
            raise DistillationError(
                f"want logits [M, *batch, L] and representations [M, *batch, D], "
                f"got {tuple(logits.shape)} and {tuple(reprs.shape)}"
            )
        if logits.shape[0] != self.num_modalities or reprs.shape[0] != self.num_modalities:
            raise DistillationError(
                f"configured for {self.num_modalities} modalities, got logits of "
                f"{logits.shape[0]} and representations of {reprs.shape[0]}"
            )
        if logits.shape[1:-1] != reprs.shape[1:-1]:
            raise DistillationError(
                f"logits {tuple(logits.shape)} and representations {tuple(reprs.shape)} "
                "differ in their batch dimensions"
            )
        m = self.num_modalities
        return logits.reshape(m, -1, logits.shape[-1]), reprs.reshape(m, -1, reprs.shape[-1])

    def _student_and_teachers(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """[M, N, F] -> students [S, 1, N, F] and stop-gradient teachers [1, M, N, F]."""
        return x[list(self.students)].unsqueeze(1), x.detach().unsqueeze(0)

    def _loss(
        self, messages: Tensor, weights: Tensor, regularizer: Tensor | None = None
    ) -> DistillationLoss:
        """messages [S, M, N] and weights broadcastable to them -> DistillationLoss."""
        weights = (weights * self.teacher_mask).expand_as(messages)
        imitation = (weights * messages).sum(dim=1).mean(dim=1)
        if regularizer is None:
            regularizer = torch.zeros_like(imitation)
        return DistillationLoss((imitation + regularizer).sum(), imitation, regularizer, weights)

    def average_over_teachers(self, messages: Tensor) -> DistillationLoss:
        """Pairwise losses [S, M, N] averaged over each student's M - 1 teachers."""
        return self._loss(messages, self.teacher_mask / (self.num_modalities - 1))


def distance(student: Tensor, teacher: Tensor, metric: Metric, temperature: float) -> Tensor:
    """Per-example distance over the last dimension (the caller applies stop-gradient)."""
    if metric is Metric.COSINE:
        return 1 - F.cosine_similarity(student, teacher, dim=-1)
    if metric is Metric.L2:
        return (student - teacher).pow(2).sum(dim=-1)
    if metric is Metric.L1:
        return (student - teacher).abs().sum(dim=-1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    return kl * temperature**2


class GraphDistillation(Distiller):
    """The graph distillation layer (see the module docstring for the equations).

    `graph` (settable, e.g. from `Curriculum.graph_kind(epoch)`) picks empty / uniform /
    prior / learned. `set_prior(accuracies)` sets the prior from validation accuracies of
    all M modalities; before it is called the prior is uniform. Defaults are the paper's
    (λ1 = 10, λ2 = 5, α = 10) and the released code's (gd_size 32, gd_reg 10, T = 8 for KL).
    """

    def __init__(
        self,
        num_modalities: int,
        num_classes: int,
        repr_dim: int,
        students: Sequence[int] | None = None,
        graph: GraphKind | str = GraphKind.LEARNED,
        metric: Metric | str = Metric.COSINE,
        lambda_logit: float = 10.0,
        lambda_repr: float = 5.0,
        alpha: float = 10.0,
        gd_size: int = 32,
        gd_reg: float = 10.0,
        prior_temperature: float = 0.25,
        temperature: float = 8.0,
    ) -> None:
        super().__init__(num_modalities, students)
        _require_positive(
            num_classes=num_classes,
            repr_dim=repr_dim,
            gd_size=gd_size,
            alpha=alpha,
            prior_temperature=prior_temperature,
            temperature=temperature,
        )
        self.graph = graph
        self.metric = _choice(Metric, metric, "metric")
        self.lambda_logit = lambda_logit
        self.lambda_repr = lambda_repr
        self.alpha = alpha
        self.gd_reg = gd_reg
        self.prior_temperature = prior_temperature
        self.temperature = temperature
        self.edge_logit = nn.Linear(num_classes, gd_size)  # W_l
        self.edge_repr = nn.Linear(repr_dim, gd_size)  # W_r
        self.edge = nn.Linear(4 * gd_size, 1)  # W_e, b on [z_k ‖ z_j]
        # Validation accuracy of every modality; all equal (a uniform prior) until set.
        self.register_buffer("accuracy", torch.zeros(num_modalities))

    @property
    def graph(self) -> GraphKind:
        return self._graph

    @graph.setter
    def graph(self, kind: GraphKind | str) -> None:
        self._graph = _choice(GraphKind, kind, "graph kind")

    def set_prior(self, accuracies: Sequence[float]) -> None:
        """Validation accuracies (any consistent scale, e.g. 0..1) of all M modalities."""
        acc = torch.as_tensor(accuracies, dtype=torch.float32).flatten()
        if acc.numel() != self.num_modalities or not torch.isfinite(acc).all():
            raise DistillationError(
                f"set_prior wants {self.num_modalities} finite accuracies, got {list(accuracies)}"
            )
        self.accuracy.copy_(acc)

    def prior(self) -> Tensor:
        """c: [S, M], per student a softmax at `prior_temperature` over its teachers'
        accuracies (0 for the student itself)."""
        scores = (self.accuracy / self.prior_temperature).expand(len(self.students), -1)
        return scores.masked_fill(self.teacher_mask[..., 0] == 0, -math.inf).softmax(dim=1)

    def messages(self, logits: Outputs, reprs: Outputs) -> Tensor:
        """m_{k<-j}: [S, M, N] (the entry of a student's own modality is meaningless)."""
        logits, reprs = self._flatten(logits, reprs)
        d_logit = distance(*self._student_and_teachers(logits), self.metric, self.temperature)
        d_repr = distance(*self._student_and_teachers(reprs), self.metric, self.temperature)
        return self.lambda_logit * d_logit + self.lambda_repr * d_repr

    def _embed(self, logits: Tensor, reprs: Tensor) -> Tensor:
        return torch.cat([self.edge_logit(logits), self.edge_repr(reprs)], dim=-1)

    def edges(self, logits: Outputs, reprs: Outputs) -> Tensor:
        """Learned graph G: [S, M, N], for each student and example a softmax of α e_{k<-j}
        over its teachers (0 for the student itself). Teachers enter with stop-gradient."""
        logits, reprs = self._flatten(logits, reprs)
        students = list(self.students)
        z_student = self._embed(logits[students], reprs[students]).unsqueeze(1)
        z_teacher = self._embed(logits.detach(), reprs.detach()).unsqueeze(0)
        size = (len(self.students), self.num_modalities, -1, -1)
        pairs = torch.cat([z_student.expand(size), z_teacher.expand(size)], dim=-1)
        scores = self.alpha * self.edge(pairs).squeeze(-1)
        return scores.masked_fill(self.teacher_mask == 0, -math.inf).softmax(dim=1)

    def forward(self, logits: Outputs, reprs: Outputs) -> DistillationLoss:
        logits, reprs = self._flatten(logits, reprs)
        if self.graph is GraphKind.EMPTY:
            zeros = logits.new_zeros(len(self.students), self.num_modalities, logits.shape[1])
            return self._loss(zeros, zeros)
        messages = self.messages(logits, reprs)
        if self.graph is GraphKind.UNIFORM:
            return self.average_over_teachers(messages)
        prior = self.prior().unsqueeze(-1)
        if self.graph is GraphKind.PRIOR:
            return self._loss(messages, prior)
        graph = self.edges(logits, reprs)
        regularizer = self.gd_reg * (graph.mean(dim=-1) - prior.squeeze(-1)).pow(2).sum(dim=1)
        return self._loss(messages, graph + prior, regularizer)

    def extra_repr(self) -> str:
        return (
            f"students={self.students}, graph={self.graph.value}, metric={self.metric.value}, "
            f"lambda=({self.lambda_logit}, {self.lambda_repr}), alpha={self.alpha}, "
            f"gd_reg={self.gd_reg}"
        )


@dataclass(frozen=True)
class Curriculum:
    """Which graph to use at each (0-based) epoch: uniform for `uniform_epochs`, then the
    prior alone for `prior_epochs` (only when `final` is learned), then `final`.

    The paper: `Curriculum(uniform_epochs=200)`. At an epoch where `needs_prior(epoch)`, the
    trainer measures validation accuracies and calls `GraphDistillation.set_prior` first.
    """

    uniform_epochs: int = 0
    prior_epochs: int = 0
    final: GraphKind = GraphKind.LEARNED

    def __post_init__(self) -> None:
        if self.uniform_epochs < 0 or self.prior_epochs < 0:
            raise DistillationError(
                f"curriculum epochs must be >= 0, got uniform_epochs={self.uniform_epochs}, "
                f"prior_epochs={self.prior_epochs}"
            )
        object.__setattr__(self, "final", _choice(GraphKind, self.final, "graph kind"))

    def graph_kind(self, epoch: int) -> GraphKind:
        if epoch < 0:
            raise DistillationError(f"epoch must be >= 0, got {epoch}")
        if epoch < self.uniform_epochs:
            return GraphKind.UNIFORM
        prior_end = self.uniform_epochs + self.prior_epochs
        if self.final is GraphKind.LEARNED and epoch < prior_end:
            return GraphKind.PRIOR
        return self.final

    def needs_prior(self, epoch: int) -> bool:
        """True at the first epoch whose graph uses the prior."""
        uses = {GraphKind.PRIOR, GraphKind.LEARNED}
        before = self.graph_kind(epoch - 1) if epoch > 0 else None
        return self.graph_kind(epoch) in uses and before not in uses
