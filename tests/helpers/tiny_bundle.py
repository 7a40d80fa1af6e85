"""A tiny model bundle built with `onnx.helper` (no torch), and depth scenes it understands.

Visual encoder: the fraction `n` of a clip's pixels that are near (valid and closer than
`NEAR_UNIT` of the depth range) -> features `[n, 1, 0, ...]`. Sequence encoder: per position,
logits `[0, 40n - 2, 80n - 14]` -> softmax. So an empty room is background (activity 0.12), a
small near object (n ~ 0.15) is class 1 "small", a large one (n ~ 0.5) class 2 "large".

`mixing="cummean"` makes the sequence encoder average the features of positions 0..t before
the linear layer: its last output then depends on the whole window, which lets tests check
which clips a window holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from core.bundle import FileRef, ModelBundle, sha256_file, write_bundle_json
from core.clip import ClipSpec
from tests.helpers.numerics import F32_EPS

TINY_SPEC = ClipSpec(
    source_fps=30,
    downsample=3,
    clip_len=4,
    clip_step=4,
    window=4,
    window_step=2,
    height=32,
    width=32,
    depth_min_mm=500,
    depth_max_mm=4500,
)
CLASSES = ("background", "small", "large")
FEATURES = 8
NEAR_UNIT = 0.5  # 2250 mm at depth_max_mm 4500
WALL_MM, OBJECT_MM = 4000, 1000
# logits = n * W_N + W_1 (the feature layout is [n, 1, 0, ...])
W_N = np.array([0.0, 40.0, 80.0], np.float32)
W_1 = np.array([0.0, -2.0, -14.0], np.float32)
# How far the model's float32 probabilities may be from `reference_probs` (float64): the near
# fraction n is exact to half an ulp (a mean of 0/1 values: the count is exact in float32, one
# division rounds), the window's mean of n adds a few roundings of values <= 1, and the logits
# n * W_N + W_1 scale n's error by |W_N| <= 80 and round once at a magnitude <= 80. Softmax moves
# a probability by at most half the largest logit error, and its exp, sum and division add a few
# eps on values <= 1. In all about 2 * 80 eps; twice that for margin (3.8e-5): a wrong feature or
# weight moves a probability by orders of magnitude more.
PROB_TOL = 4 * float(np.abs(W_N).max()) * F32_EPS


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def _model(nodes, inputs, outputs) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def visual_encoder(spec: ClipSpec, batch: int | str = "batch") -> onnx.ModelProto:
    w = np.zeros((1, FEATURES), np.float32)
    w[0, 0] = 1.0
    b = np.zeros(FEATURES, np.float32)
    b[1] = 1.0
    nodes = [
        _const("zero", np.array(0.0, np.float32)),
        _const("near", np.array(NEAR_UNIT, np.float32)),
        _const("w", w),
        _const("b", b),
        helper.make_node("Greater", ["clip", "zero"], ["valid"]),
        helper.make_node("Less", ["clip", "near"], ["close"]),
        helper.make_node("And", ["valid", "close"], ["is_near"]),
        helper.make_node("Cast", ["is_near"], ["near_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["near_f"], ["n"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["n", "shape"], ["n2"]),
        helper.make_node("MatMul", ["n2", "w"], ["wn"]),
        helper.make_node("Add", ["wn", "b"], ["features"]),
    ]
    nodes.insert(0, _const("shape", np.array([-1, 1], np.int64)))
    shape = [batch, spec.clip_len, spec.height, spec.width]
    x = helper.make_tensor_value_info("clip", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, FEATURES])
    return _model(nodes, [x], [y])


def sequence_encoder(
    mixing: str = "none", softmax: bool = True, n_classes: int = len(CLASSES)
) -> onnx.ModelProto:
    w = np.zeros((FEATURES, n_classes), np.float32)
    w[1, len(CLASSES) :] = -50.0  # extra classes: never likely
    w[0, : len(CLASSES)], w[1, : len(CLASSES)] = W_N, W_1
    nodes = [_const("w", w)]
    src = "features"
    if mixing == "cummean":
        nodes += [
            _const("axis", np.array(1, np.int64)),
            _const("one", np.array(1.0, np.float32)),
            _const("zero", np.array(0.0, np.float32)),
            helper.make_node("Mul", ["features", "zero"], ["zeros"]),
            helper.make_node("Add", ["zeros", "one"], ["ones"]),
            helper.make_node("CumSum", ["ones", "axis"], ["count"]),
            helper.make_node("CumSum", ["features", "axis"], ["total"]),
            helper.make_node("Div", ["total", "count"], ["mixed"]),
        ]
        src = "mixed"
    elif mixing != "none":
        raise ValueError(f"unknown mixing {mixing!r}")
    nodes.append(helper.make_node("MatMul", [src, "w"], ["logits"]))
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
        out = "probs"
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "time", FEATURES])
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", "time", n_classes])
    return _model(nodes, [x], [y])


def reference_probs(n: np.ndarray) -> np.ndarray:
    """What the tiny model gives for near fractions `n` (numpy, independent of ONNX)."""
    logits = np.asarray(n, np.float64)[..., None] * W_N + W_1
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def make_bundle(
    root: Path,
    spec: ClipSpec = TINY_SPEC,
    mixing: str = "none",
    softmax: bool = True,
    visual: onnx.ModelProto | None = None,
    name: str = "tiny",
    extra_classes: int = 0,
) -> ModelBundle:
    """Write a complete bundle to `root` and return its description. `extra_classes` adds
    classes the model never predicts (for big events)."""
    classes = CLASSES + tuple(f"extra-{i}" for i in range(extra_classes))
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(visual or visual_encoder(spec), root / "visual_encoder.onnx")
    onnx.save(sequence_encoder(mixing, softmax, len(classes)), root / "sequence_encoder.onnx")
    bundle = ModelBundle(
        root=root,
        name=name,
        version="0.0.1",
        classes=classes,
        clip=spec,
        feature_dim=FEATURES,
        activity_threshold=0.4,
        causal=True,
        files={
            k: FileRef(f"{k}.onnx", sha256_file(root / f"{k}.onnx"))
            for k in ("visual_encoder", "sequence_encoder")
        },
        training={"note": "hand-made test model"},
    )
    write_bundle_json(bundle)
    return bundle


def scene(
    n_frames: int,
    height: int = 48,
    width: int = 64,
    actions: tuple[tuple[int, int, float], ...] = (),
    seed: int = 0,
) -> np.ndarray:
    """uint16 depth frames of a wall with noise and holes; during each action
    `(first_frame, end_frame_exclusive, area_fraction)` a near square covers that fraction."""
    rng = np.random.default_rng(seed)
    frames = (WALL_MM + rng.integers(-20, 21, (n_frames, height, width))).astype(np.uint16)
    frames[rng.random(frames.shape) < 0.02] = 0  # holes
    for first, end, area in actions:
        side_h = max(1, round(height * np.sqrt(area)))
        side_w = max(1, round(width * np.sqrt(area)))
        frames[first:end, :side_h, :side_w] = OBJECT_MM
    return frames
