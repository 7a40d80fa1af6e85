"""Baselines: each loss against arithmetic done here by hand, stop-gradient to teachers, and
the calling convention they share with the graph distillation layer."""

import math

import pytest
import torch
from torch import nn

from training.baselines import CrossModalDistillation, KnowledgeDistillation, MultiTask
from training.distillation import DistillationError, DistillationLoss, GraphDistillation

# Three modalities, one example: 2-d logits and 2-d representations.
LOGITS = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
REPRS = [[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]]


def example() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(LOGITS).unsqueeze(1), torch.tensor(REPRS).unsqueeze(1)


@pytest.mark.slow
def test_knowledge_distillation_by_hand():
    def soft_cross_entropy_minus_entropy(teacher, student, t):
        z_t = sum(math.exp(v / t) for v in teacher)
        z_s = sum(math.exp(v / t) for v in student)
        p = [math.exp(v / t) / z_t for v in teacher]
        cross_entropy = -sum(pi * (v / t - math.log(z_s)) for pi, v in zip(p, student, strict=True))
        entropy = -sum(pi * math.log(pi) for pi in p)
        return t * t * (cross_entropy - entropy)

    out = KnowledgeDistillation(3, temperature=2.0, weight=0.5)(*example())
    expected = [
        0.5 * sum(soft_cross_entropy_minus_entropy(LOGITS[j], LOGITS[k], 2.0) for j in teachers) / 2
        for k, teachers in [(0, (1, 2)), (1, (0, 2)), (2, (0, 1))]
    ]
    torch.testing.assert_close(out.imitation, torch.tensor(expected))


def test_cross_modal_distillation_by_hand():
    # Student 0:  from 1: logits ((1-0)² + (0-1)²)/2 = 1,  reprs ((1-2)² + 0)/2 = 0.5
    #             from 2: logits (0 + (0-1)²)/2 = 0.5,     reprs ((1+1)² + 0)/2 = 2
    out = CrossModalDistillation(3, students=[0], lambda_logit=2.0, lambda_repr=3.0)(*example())
    expected = ((2 * 1 + 3 * 0.5) + (2 * 0.5 + 3 * 2)) / 2
    assert out.imitation.item() == pytest.approx(expected)


def test_multi_task_uses_one_decoder_per_pair():
    baseline = MultiTask(3, repr_dim=2, students=[0])
    with torch.no_grad():
        for decoder in baseline.decoders.values():
            decoder.weight.copy_(torch.eye(2))
            decoder.bias.zero_()
        baseline.decoders["0_2"].weight.copy_(-torch.eye(2))  # -[1, 0] = [-1, 0]: exact
    # from 1: ((1-2)² + 0)/2 = 0.5; from 2: 0; averaged over the two teachers.
    assert baseline(*example()).imitation.item() == pytest.approx(0.25)
    assert set(baseline.decoders) == {"0_1", "0_2"}


class Modality(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 5)

    def forward(self, x):
        out = self.net(x)
        return out[:, :2], out[:, 2:]


def has_grad(module: nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize(
    "make",
    [
        lambda: MultiTask(3, repr_dim=3),
        lambda: KnowledgeDistillation(3),
        lambda: CrossModalDistillation(3),
    ],
)
def test_a_students_loss_never_reaches_its_teachers(make):
    torch.manual_seed(0)
    baseline = make()
    networks = [Modality() for _ in range(3)]
    for k in range(3):
        for module in [*networks, baseline]:
            module.zero_grad(set_to_none=True)
        outputs = [net(torch.randn(6, 4)) for net in networks]
        out = baseline([o[0] for o in outputs], [o[1] for o in outputs])
        out.imitation[k].backward()
        assert has_grad(networks[k])
        assert not any(has_grad(networks[j]) for j in set(range(3)) - {k})
    if isinstance(baseline, MultiTask):
        assert has_grad(baseline)


@pytest.mark.parametrize(
    "make",
    [
        lambda: GraphDistillation(3, num_classes=4, repr_dim=6, students=[0, 2]),
        lambda: MultiTask(3, repr_dim=6, students=[0, 2]),
        lambda: KnowledgeDistillation(3, students=[0, 2]),
        lambda: CrossModalDistillation(3, students=[0, 2]),
    ],
)
def test_every_distiller_has_the_same_calling_convention(make):
    torch.manual_seed(0)
    distiller = make()
    logits, reprs = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 6)  # detection: [M, B, T_w, .]
    out = distiller(logits, reprs)
    assert isinstance(out, DistillationLoss)
    assert out.imitation.shape == out.regularizer.shape == (2,)
    assert out.weights.shape == (2, 3, 10)
    torch.testing.assert_close(out.total, (out.imitation + out.regularizer).sum())
    with pytest.raises(DistillationError, match="3 modalities"):
        distiller(logits[:2], reprs[:2])


def test_knowledge_distillation_needs_a_positive_temperature():
    with pytest.raises(DistillationError, match="temperature must be > 0"):
        KnowledgeDistillation(3, temperature=0)


def test_baselines_average_over_teachers():
    out = KnowledgeDistillation(4, students=[1])(torch.randn(4, 3, 5), torch.randn(4, 3, 2))
    torch.testing.assert_close(out.weights[0, :, 0], torch.tensor([1 / 3, 0, 1 / 3, 1 / 3]))
    assert out.regularizer.item() == 0
