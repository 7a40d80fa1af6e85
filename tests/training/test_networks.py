"""Networks: shapes, the GRU encoders against GRU equations written out here, causality, ONNX."""

import io

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers.numerics import reorder_tol
from training.networks import (
    Classifier,
    Detector,
    GRUEncoder,
    NetworkConfigError,
    ResNet18,
    SequenceEncoder,
    build_encoder,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def gru_layer(gru: nn.GRU, layer: int, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """One GRU layer (batch first) by the equations in torch.nn.GRU's documentation."""
    suffix = f"l{layer}" + ("_reverse" if reverse else "")
    w_ih, w_hh = getattr(gru, f"weight_ih_{suffix}"), getattr(gru, f"weight_hh_{suffix}")
    b_ih, b_hh = getattr(gru, f"bias_ih_{suffix}"), getattr(gru, f"bias_hh_{suffix}")
    steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
    h = x.new_zeros(x.shape[0], gru.hidden_size)
    outputs = {}
    for t in steps:
        i_r, i_z, i_n = (x[:, t] @ w_ih.T + b_ih).chunk(3, dim=1)
        h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = (1 - z) * n + z * h
        outputs[t] = h
    return torch.stack([outputs[t] for t in range(x.shape[1])], dim=1)


@pytest.mark.parametrize(
    ("in_channels", "width", "height", "img_width"),
    [(10, 8, 32, 32), (20, 4, 40, 56), (3, 16, 33, 47), (1, 2, 32, 32)],
)
def test_resnet_output_is_8_width_for_any_input(in_channels, width, height, img_width):
    encoder = ResNet18(in_channels, width)
    out = encoder(torch.randn(2, in_channels, height, img_width))
    assert encoder.out_dim == 8 * width
    assert out.shape == (2, 8 * width)
    assert out.dtype == torch.float32


def test_resnet_at_width_64_is_resnet18_without_fc():
    # torchvision's resnet18 has 11,689,512 parameters, 513,000 of them in its 512 -> 1000 FC.
    encoder = ResNet18(3, 64)
    assert sum(p.numel() for p in encoder.parameters()) == 11_689_512 - 513_000
    blocks = [m for m in encoder.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 8


def test_resnet_downsamples_by_32_before_pooling():
    encoder = ResNet18(10, 4)
    shapes = []
    encoder.layer4.register_forward_hook(lambda module, inputs, output: shapes.append(output.shape))
    encoder(torch.randn(1, 10, 64, 96))
    assert shapes == [(1, 32, 2, 3)]


def test_gru_encoder_is_mean_over_time_of_top_layer():
    encoder = GRUEncoder(input_dim=5, hidden_size=6, num_layers=3).eval()
    x = torch.randn(2, 4, 5)
    expected = x
    for layer in range(3):
        expected = gru_layer(encoder.gru, layer, expected)
    torch.testing.assert_close(encoder(x), expected.mean(dim=1))
    assert encoder.out_dim == 6


def test_classifier_returns_logits_of_its_representation():
    model = Classifier(ResNet18(10, 4), num_classes=7)
    logits, representation = model(torch.randn(3, 10, 32, 32))
    assert logits.shape == (3, 7) and representation.shape == (3, 32)
    torch.testing.assert_close(logits, model.fc(representation))


def test_bidirectional_sequence_encoder_sums_the_two_directions():
    seq = SequenceEncoder(in_dim=5, num_actions=3, hidden_size=4)
    x = torch.randn(2, 6, 5)
    logits, representation = seq(x)
    expected = gru_layer(seq.gru, 0, x) + gru_layer(seq.gru, 0, x, reverse=True)
    torch.testing.assert_close(representation, expected)
    torch.testing.assert_close(logits, representation @ seq.fc.weight.T + seq.fc.bias)
    assert logits.shape == (2, 6, 4)  # L + 1 with background


def test_causal_sequence_encoder_is_one_forward_gru():
    seq = SequenceEncoder(in_dim=5, num_actions=3, hidden_size=4, causal=True)
    x = torch.randn(2, 6, 5)
    _, representation = seq(x)
    torch.testing.assert_close(representation, gru_layer(seq.gru, 0, x))


@pytest.mark.parametrize("causal", [True, False])
def test_only_the_causal_encoder_ignores_later_clips(causal):
    seq = SequenceEncoder(in_dim=5, num_actions=3, hidden_size=4, causal=causal)
    x = torch.randn(1, 8, 5)
    changed = x.clone()
    changed[:, 5:] = torch.randn(1, 3, 5)
    before, after = seq(x)[0], seq(changed)[0]
    assert torch.equal(before[:, :5], after[:, :5]) == causal
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_detector_encodes_each_clip_then_the_window():
    detector = Detector(ResNet18(10, 4), SequenceEncoder(32, num_actions=5, hidden_size=8)).eval()
    windows = torch.randn(2, 3, 10, 32, 32)
    logits, representation = detector(windows)
    assert logits.shape == (2, 3, 6) and representation.shape == (2, 3, 8)
    features = torch.stack([detector.encoder(windows[:, t]) for t in range(3)], dim=1)
    expected_logits, _ = detector.sequence(features)
    torch.testing.assert_close(logits, expected_logits)


def test_detector_runs_a_gru_encoder_on_vector_clips():
    detector = Detector(GRUEncoder(7, 16), SequenceEncoder(16, num_actions=2, hidden_size=8))
    logits, _ = detector(torch.randn(2, 3, 10, 7))
    assert logits.shape == (2, 3, 3)


def test_build_encoder_stacks_frames_as_channels():
    assert build_encoder("depth", clip_len=10, width=4).conv1.in_channels == 10
    assert build_encoder("flow", clip_len=10, width=4).conv1.in_channels == 20
    assert build_encoder("rgb", clip_len=10, width=4).conv1.in_channels == 30
    skeleton = build_encoder("jjd", clip_len=10, width=4, vector_dim=253)
    assert isinstance(skeleton, GRUEncoder) and skeleton.out_dim == 32
    with pytest.raises(NetworkConfigError, match="vector_dim"):
        build_encoder("dpeth", clip_len=10)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ResNet18(0),
        lambda: ResNet18(10, width=0),
        lambda: GRUEncoder(0),
        lambda: SequenceEncoder(8, num_actions=0),
        lambda: Classifier(ResNet18(1, 2), num_classes=0),
    ],
)
def test_bad_sizes_raise(make):
    with pytest.raises(NetworkConfigError, match="must be >= 1"):
        make()


# torch.onnx's TorchScript-based exporter (needs only onnx, deprecated; quick), also in the
# one-thread pass (`numerics`). The export step's own exporter (dynamo, seconds an export) is
# not run here: the visual encoder and both sequence encoders (the causal one in the
# `random_parity` export) go through it, with dynamic batch and time, and are compared with
# torch in tests/export/test_onnx.py ("onnx equals torch for any batch and window length").
TORCHSCRIPT_WARNS = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _export_and_run(module: nn.Module, example: torch.Tensor, other_batch: torch.Tensor):
    """Export with a dynamic batch axis, check the model, run it at another batch size."""
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (torch.onnx needs it)")
    ort = pytest.importorskip("onnxruntime")
    buffer = io.BytesIO()
    dynamic = {"x": {0: "batch"}}
    torch.onnx.export(
        module.eval(), (example,), buffer, input_names=["x"], dynamo=False, dynamic_axes=dynamic
    )
    onnx.checker.check_model(onnx.load_from_string(buffer.getvalue()))
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": other_batch.numpy()})


@pytest.mark.slow
@pytest.mark.numerics
@TORCHSCRIPT_WARNS
def test_depth_encoder_exports_to_onnx_with_dynamic_batch():
    encoder = ResNet18(10, 4)
    x = torch.randn(3, 10, 32, 32)
    (out,) = _export_and_run(encoder, torch.randn(2, 10, 32, 32), x)
    want = encoder(x).detach().numpy()
    # ONNX Runtime's kernels sum in another order than torch's: 17 convolutions and a pooling
    # chained, the largest summing 10 x 7 x 7 = 490 terms (conv1).
    tol = reorder_tol(10 * 7 * 7, np.abs(want).max(), layers=18)
    np.testing.assert_allclose(out, want, rtol=0, atol=tol)


@pytest.mark.slow
@pytest.mark.numerics
@TORCHSCRIPT_WARNS
@pytest.mark.parametrize("causal", [False, True])
def test_sequence_encoder_exports_to_onnx_with_dynamic_batch(causal):
    seq = SequenceEncoder(32, num_actions=3, hidden_size=8, causal=causal)
    x = torch.randn(3, 10, 32)
    logits, _ = _export_and_run(seq, torch.randn(2, 10, 32), x)
    want = seq(x)[0].detach().numpy()
    # Another summation order: 10 GRU steps chained, each summing 32 inputs and 8 hidden
    # values per gate, and the linear layer after them.
    tol = reorder_tol(32 + 8, np.abs(want).max(), layers=10 + 1)
    np.testing.assert_allclose(logits, want, rtol=0, atol=tol)
