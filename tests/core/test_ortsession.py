"""The ONNX Runtime session options shared by the server and gd-export, on a real session."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from core.ortsession import CPU_PROVIDER, ort_session, session_options


def test_session_options():
    options = session_options(threads=2, spinning=False)
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.log_severity_level == 3
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # ORT's default
        session_options().get_session_config_entry("session.intra_op.allow_spinning")


def test_ort_session_runs_a_model(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    session = ort_session(path, threads=1, spinning=False)
    assert session.get_providers() == [CPU_PROVIDER]
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], np.maximum(x, 0))
