"""The bundles the repository ships: intact, and naming nothing of the machine that built them."""

from pathlib import Path

import onnx
import pytest

from core.bundle import absolute_paths, load_bundle
from export.onnx import STACK_TRACE, strip_stack_traces, verify_bundle

SHIPPED = [
    Path(__file__).parents[2] / "models" / name
    for name in ("default", "default-int8", "default-fullframe")
]


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_bundle_verifies_and_holds_no_machine_paths(folder):
    verify_bundle(folder)  # every file present with its recorded sha256, encoders load
    bundle = load_bundle(folder)
    assert absolute_paths(bundle.training) == []
    for ref in bundle.files.values():
        text = (folder / ref.path).read_bytes().decode("latin-1")
        assert "/work/" not in text and "/home/" not in text and "/tmp/" not in text, ref.path


def test_stack_traces_are_stripped_and_nothing_else():
    node = onnx.helper.make_node("Relu", ["x"], ["y"], name="relu")
    onnx.helper.set_metadata_props(node, {STACK_TRACE: 'File "/home/me/x.py"', "namespace": "a"})
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    model = strip_stack_traces(onnx.helper.make_model(graph))
    assert {p.key: p.value for p in model.graph.node[0].metadata_props} == {"namespace": "a"}
