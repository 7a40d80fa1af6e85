"""Graph distillation: every loss against arithmetic done here by hand on 2-d vectors, graph
normalization, prior, regularizer, graph kinds, stop-gradient to teachers, curriculum."""

import math

import pytest
import torch
from torch import nn

from training.distillation import (
    Curriculum,
    DistillationError,
    GraphDistillation,
    GraphKind,
)

R2 = math.sqrt(2)

# Three modalities, one example, 2-d logits and 2-d representations, chosen so every cosine
# is obvious: cos([1,0],[0,1]) = 0, cos([1,0],[1,1]) = cos([0,1],[1,1]) = 1/√2,
# cos([1,0],[2,0]) = 1, cos([1,0],[-1,0]) = cos([2,0],[-1,0]) = -1.
LOGITS = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
REPRS = [[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]]
# Cosine messages m_{k<-j} with λ1 = 10, λ2 = 5, as [student][teacher]:
#   0<-1: 10·(1-0) + 5·(1-1) = 10          0<-2: 10·(1-1/√2) + 5·(1+1) = 20 - 10/√2
#   1<-0: 10·(1-0) + 5·(1-1) = 10          1<-2: 10·(1-1/√2) + 5·(1+1) = 20 - 10/√2
#   2<-0: 10·(1-1/√2) + 5·2  = 20 - 10/√2  2<-1: 10·(1-1/√2) + 5·2     = 20 - 10/√2
COSINE = {(0, 1): 10.0, (0, 2): 20 - 10 / R2, (1, 0): 10.0, (1, 2): 20 - 10 / R2}
COSINE |= {(2, 0): 20 - 10 / R2, (2, 1): 20 - 10 / R2}


def example(n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """[M=3, n, 2] logits and representations: the example above, repeated n times."""
    return torch.tensor([LOGITS] * n).transpose(0, 1), torch.tensor([REPRS] * n).transpose(0, 1)


def layer(**kwargs) -> GraphDistillation:
    return GraphDistillation(num_modalities=3, num_classes=2, repr_dim=2, **kwargs)


def softmax2(a: float, b: float) -> tuple[float, float]:
    return math.exp(a) / (math.exp(a) + math.exp(b)), math.exp(b) / (math.exp(a) + math.exp(b))


def layer_with_edges_from_teacher_first_logit(**kwargs) -> GraphDistillation:
    """gd_size = 1: z = [φl[0], 0], e_{k<-j} = [z_k ‖ z_j]·[0, 0, 1, 0] + 0.5 = φl_j[0] + 0.5."""
    gd = layer(gd_size=1, **kwargs)
    with torch.no_grad():
        gd.edge_logit.weight.copy_(torch.tensor([[1.0, 0.0]]))
        gd.edge_logit.bias.zero_()
        gd.edge_repr.weight.zero_()
        gd.edge_repr.bias.zero_()
        gd.edge.weight.copy_(torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
        gd.edge.bias.fill_(0.5)
    return gd


def test_cosine_messages_by_hand():
    messages = layer().messages(*example())
    for (k, j), expected in COSINE.items():
        assert messages[k, j, 0].item() == pytest.approx(expected, rel=1e-6)


def test_l2_and_l1_messages_by_hand():
    # 0<-1: logits (1-0)² + (0-1)² = 2, reprs (1-2)² = 1 -> 10·2 + 5·1 = 25
    # 0<-2: logits 0 + (0-1)² = 1,      reprs (1+1)² = 4 -> 10·1 + 5·4 = 30
    l2 = layer(metric="l2").messages(*example())
    assert l2[0, 1, 0].item() == pytest.approx(25.0)
    assert l2[0, 2, 0].item() == pytest.approx(30.0)
    # L1: 0<-1: logits 1 + 1 = 2, reprs 1 -> 25;  0<-2: logits 1, reprs 2 -> 10 + 10 = 20
    l1 = layer(metric="l1").messages(*example())
    assert l1[0, 1, 0].item() == pytest.approx(25.0)
    assert l1[0, 2, 0].item() == pytest.approx(20.0)


def test_kl_message_by_hand():
    def kl(teacher, student, t):  # t² Σ p log(p / q), p = softmax(teacher / t)
        p = softmax2(teacher[0] / t, teacher[1] / t)
        q = softmax2(student[0] / t, student[1] / t)
        return t * t * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))

    messages = layer(metric="kl", temperature=2.0).messages(*example())
    expected = 10 * kl(LOGITS[1], LOGITS[0], 2.0) + 5 * kl(REPRS[1], REPRS[0], 2.0)
    assert messages[0, 1, 0].item() == pytest.approx(expected, rel=1e-5)


def test_uniform_graph_averages_messages_over_teachers():
    out = layer(graph="uniform")(*example())
    expected = [(COSINE[0, 1] + COSINE[0, 2]) / 2, (COSINE[1, 0] + COSINE[1, 2]) / 2]
    expected.append((COSINE[2, 0] + COSINE[2, 1]) / 2)
    torch.testing.assert_close(out.imitation, torch.tensor(expected))
    assert out.regularizer.abs().sum() == 0
    assert out.total.item() == pytest.approx(sum(expected), rel=1e-6)


def test_uniform_weights_are_one_over_m_minus_1():
    gd = GraphDistillation(4, 3, 5, graph="uniform")
    weights = gd(torch.randn(4, 6, 3), torch.randn(4, 6, 5)).weights
    expected = (1 - torch.eye(4)).unsqueeze(-1).expand(4, 4, 6) / 3
    torch.testing.assert_close(weights, expected)


def test_empty_graph_has_no_imitation():
    logits, reprs = example(2)
    logits.requires_grad_(True)
    out = layer(graph="empty")(logits, reprs)
    assert out.total.item() == 0 and not out.total.requires_grad
    assert out.imitation.abs().sum() == 0 and out.weights.abs().sum() == 0


def test_prior_is_a_tempered_softmax_over_each_students_teachers():
    gd = layer()
    torch.testing.assert_close(gd.prior(), (1 - torch.eye(3)) / 2)  # uniform until set
    gd.set_prior([0.9, 0.5, 0.75])  # / 0.25 -> 3.6, 2, 3
    expected = torch.tensor(
        [
            [0.0, *softmax2(2.0, 3.0)],
            [softmax2(3.6, 3.0)[0], 0.0, softmax2(3.6, 3.0)[1]],
            [*softmax2(3.6, 2.0), 0.0],
        ]
    )
    torch.testing.assert_close(gd.prior(), expected)


def test_prior_graph_weights_messages_by_the_prior():
    gd = layer(graph="prior")
    gd.set_prior([0.9, 0.5, 0.75])
    c1, c2 = softmax2(2.0, 3.0)
    out = gd(*example())
    assert out.imitation[0].item() == pytest.approx(c1 * COSINE[0, 1] + c2 * COSINE[0, 2])
    assert out.regularizer.abs().sum() == 0


def test_learned_edges_by_hand():
    gd = layer_with_edges_from_teacher_first_logit(alpha=2.0)
    edges = gd.edges(*example())[..., 0]
    # e_{k<-j} = φl_j[0] + 0.5: teacher 0 -> 1.5, teacher 1 -> 0.5, teacher 2 -> 1.5;
    # softmax over each student's two teachers of α e (the 0.5 cancels).
    expected = torch.tensor(
        [
            [0.0, *softmax2(0.0, 2.0)],
            [softmax2(2.0, 2.0)[0], 0.0, softmax2(2.0, 2.0)[1]],
            [*softmax2(2.0, 0.0), 0.0],
        ]
    )
    torch.testing.assert_close(edges, expected)


def test_learned_graph_loss_and_regularizer_by_hand():
    gd = layer_with_edges_from_teacher_first_logit(alpha=2.0)
    gd.set_prior([0.9, 0.75, 0.5])  # student 0: c = softmax(3, 2)
    out = gd(*example())
    g1, g2 = softmax2(0.0, 2.0)
    c1, c2 = softmax2(3.0, 2.0)
    imitation = (g1 + c1) * COSINE[0, 1] + (g2 + c2) * COSINE[0, 2]
    regularizer = 10 * ((g1 - c1) ** 2 + (g2 - c2) ** 2)
    assert out.imitation[0].item() == pytest.approx(imitation, rel=1e-6)
    assert out.regularizer[0].item() == pytest.approx(regularizer, rel=1e-6)
    torch.testing.assert_close(out.total, (out.imitation + out.regularizer).sum())


def test_regularizer_uses_the_batch_mean_of_the_graph():
    gd = layer_with_edges_from_teacher_first_logit(alpha=2.0, students=[0], gd_reg=3.0)
    gd.set_prior([0.9, 0.75, 0.5])
    logits, reprs = example(2)
    logits[1, 1] = torch.tensor([3.0, 0.0])  # example B: e = (3.5, 1.5) from teachers 1, 2
    out = gd(logits, reprs)
    a1, a2 = softmax2(0.0, 2.0)  # example A: e = (0.5, 1.5)
    b1, b2 = softmax2(6.0, 2.0)
    c1, c2 = softmax2(3.0, 2.0)
    expected = 3.0 * (((a1 + b1) / 2 - c1) ** 2 + ((a2 + b2) / 2 - c2) ** 2)
    assert out.regularizer.shape == (1,)
    assert out.regularizer.item() == pytest.approx(expected, rel=1e-6)


def test_learned_graph_sums_to_one_over_each_students_teachers():
    torch.manual_seed(0)
    gd = GraphDistillation(4, 3, 5)
    edges = gd.edges(torch.randn(4, 7, 3), torch.randn(4, 7, 5))
    assert edges.shape == (4, 4, 7)
    torch.testing.assert_close(edges.sum(dim=1), torch.ones(4, 7))
    assert (edges >= 0).all()
    assert edges[torch.arange(4), torch.arange(4)].abs().sum() == 0
    assert edges[0, 1].std() > 0  # example-specific


def test_detection_batches_are_distilled_per_clip():
    torch.manual_seed(0)
    gd = GraphDistillation(3, 4, 6)
    logits, reprs = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 6)
    windowed = gd(logits, reprs)
    flat = gd(logits.reshape(3, 10, 4), reprs.reshape(3, 10, 6))
    torch.testing.assert_close(windowed.total, flat.total)
    assert windowed.weights.shape == (3, 3, 10)
    listed = gd(list(logits), list(reprs))
    torch.testing.assert_close(listed.total, flat.total)


class Modality(nn.Module):
    """A stand-in network: 4 inputs -> 2 logits and a 3-d representation."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 5)

    def forward(self, x):
        out = self.net(x)
        return out[:, :2], out[:, 2:]


def run_modalities(networks, n=6):
    inputs = [torch.randn(n, 4, requires_grad=True) for _ in networks]
    outputs = [net(x) for net, x in zip(networks, inputs, strict=True)]
    return inputs, [o[0] for o in outputs], [o[1] for o in outputs]


def has_grad(module_or_tensor) -> bool:
    tensors = (
        list(module_or_tensor.parameters())
        if isinstance(module_or_tensor, nn.Module)
        else [module_or_tensor]
    )
    return any(t.grad is not None and t.grad.abs().sum() > 0 for t in tensors)


@pytest.mark.parametrize(
    ("graph", "metric"),
    [
        ("learned", "cosine"),
        ("learned", "l2"),
        ("learned", "l1"),
        ("learned", "kl"),
        ("uniform", "cosine"),
        ("prior", "cosine"),
    ],
)
def test_joint_mode_student_loss_never_reaches_its_teachers(graph, metric):
    torch.manual_seed(0)
    networks = [Modality() for _ in range(3)]
    gd = GraphDistillation(3, 2, 3, graph=graph, metric=metric)
    gd.set_prior([0.9, 0.5, 0.7])
    for k in range(3):
        for module in [*networks, gd]:
            module.zero_grad(set_to_none=True)
        inputs, logits, reprs = run_modalities(networks)
        out = gd(torch.stack(logits), torch.stack(reprs))
        (out.imitation[k] + out.regularizer[k]).backward()
        assert has_grad(networks[k]) and has_grad(inputs[k])
        for j in set(range(3)) - {k}:
            assert not has_grad(networks[j]), f"student {k} moved teacher {j}"
            assert not has_grad(inputs[j])
        if graph == "learned":
            assert has_grad(gd.edge) and has_grad(gd.edge_logit) and has_grad(gd.edge_repr)


def test_frozen_mode_trains_one_student_and_the_edges_only():
    torch.manual_seed(0)
    networks = [Modality() for _ in range(3)]
    gd = GraphDistillation(3, 2, 3, students=[1])
    inputs, logits, reprs = run_modalities(networks)
    out = gd(logits, reprs)
    assert out.imitation.shape == (1,) and out.weights.shape == (1, 3, 6)
    out.total.backward()
    assert has_grad(networks[1]) and has_grad(gd.edge)
    assert not has_grad(networks[0]) and not has_grad(networks[2])
    assert not has_grad(inputs[0]) and not has_grad(inputs[2])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: GraphDistillation(1, 2, 2), "2 modalities"),
        (lambda: GraphDistillation(3, 2, 2, students=[3]), "out of range"),
        (lambda: GraphDistillation(3, 2, 2, students=[0, 0]), "distinct"),
        (lambda: GraphDistillation(3, 2, 2, metric="cos"), "unknown metric 'cos'"),
        (lambda: GraphDistillation(3, 2, 2, graph="full"), "unknown graph kind 'full'"),
        (lambda: GraphDistillation(3, 2, 2, alpha=0), "alpha must be > 0"),
    ],
)
def test_bad_configuration_raises(make, match):
    with pytest.raises(DistillationError, match=match):
        make()


def test_bad_input_raises():
    gd = layer()
    with pytest.raises(DistillationError, match="3 modalities"):
        gd(torch.randn(2, 4, 2), torch.randn(2, 4, 2))
    with pytest.raises(DistillationError, match="batch dimensions"):
        gd(torch.randn(3, 4, 2), torch.randn(3, 5, 2))
    with pytest.raises(DistillationError, match="3 finite accuracies"):
        gd.set_prior([0.5, 0.5])
    with pytest.raises(DistillationError, match="unknown graph kind"):
        gd.graph = "dense"
    assert issubclass(DistillationError, ValueError)


def test_prior_is_saved_with_the_layer():
    gd = layer()
    gd.set_prior([0.1, 0.2, 0.3])
    restored = layer()
    restored.load_state_dict(gd.state_dict())
    torch.testing.assert_close(restored.prior(), gd.prior())


def test_curriculum_uniform_then_prior_then_learned():
    curriculum = Curriculum(uniform_epochs=2, prior_epochs=1)
    kinds = [curriculum.graph_kind(e) for e in range(5)]
    assert kinds == ["uniform", "uniform", "prior", "learned", "learned"]
    assert [curriculum.needs_prior(e) for e in range(5)] == [False, False, True, False, False]


def test_curriculum_of_the_paper_and_constant_graphs():
    paper = Curriculum(uniform_epochs=200)
    assert paper.graph_kind(199) is GraphKind.UNIFORM
    assert paper.graph_kind(200) is GraphKind.LEARNED and paper.needs_prior(200)
    assert Curriculum().needs_prior(0) and Curriculum().graph_kind(0) is GraphKind.LEARNED
    empty = Curriculum(final="empty")
    assert {empty.graph_kind(e) for e in range(3)} == {GraphKind.EMPTY}
    assert not any(empty.needs_prior(e) for e in range(3))
    prior = Curriculum(uniform_epochs=1, prior_epochs=5, final="prior")
    assert [prior.graph_kind(e) for e in range(3)] == ["uniform", "prior", "prior"]


def test_curriculum_rejects_bad_values():
    with pytest.raises(DistillationError, match="uniform_epochs=-1"):
        Curriculum(uniform_epochs=-1)
    with pytest.raises(DistillationError, match="unknown graph kind"):
        Curriculum(final="dense")
    with pytest.raises(DistillationError, match="epoch must be >= 0"):
        Curriculum().graph_kind(-1)
