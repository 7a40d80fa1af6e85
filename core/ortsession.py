"""ONNX Runtime sessions: the one set of session options the server and `gd-export` share.

`core` may import onnxruntime (the import rules forbid only torch and the other packages of
ours), but only here and only when a session is made, so `core` stays importable without it:
the training image has onnxruntime, the server image has no torch, and both read these same
options.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CPU_PROVIDER = "CPUExecutionProvider"


def session_options(threads: int = 0, spinning: bool = True) -> Any:
    """`onnxruntime.SessionOptions`: `threads` intra-op threads (0 = OMP_NUM_THREADS, else one per
    core), one inter-op thread (the encoders are single chains), every graph optimization,
    warnings silenced. `spinning=False` stops idle worker threads from busy-waiting, which on a
    few cores steals time from whatever runs beside them (the server's event loop, a
    benchmark's other runner)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # OMP_NUM_THREADS as torch reads it: CI's one-thread pass sets it for both
    options.intra_op_num_threads = threads or int(os.environ.get("OMP_NUM_THREADS") or 0)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT warns of every unused initializer
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def ort_session(
    path: str | Path,
    providers: Sequence[str] = (CPU_PROVIDER,),
    threads: int = 0,
    spinning: bool = True,
) -> Any:
    """An `onnxruntime.InferenceSession` of the model at `path` with `session_options`."""
    import onnxruntime as ort

    options = session_options(threads, spinning)
    return ort.InferenceSession(str(path), options, providers=list(providers))
