"""Tolerances for comparing floating-point results, derived from the arithmetic.

Two computations of the same float32 sum (threads, SIMD width, another library's kernels) add
the terms in another order. The rounding errors then add like a random walk: the results differ
by about sqrt(N) * eps relative to the sum's magnitude, for N terms. The factor 4 leaves room for
the few operations that carry the sum on, and keeps the bound far below what a wrong result
(a missing term, a wrong weight) moves.
"""

import numpy as np

F32_EPS = float(np.finfo(np.float32).eps)


def reorder_tol(n_terms: int, magnitude: float = 1.0, layers: int = 1) -> float:
    """How far `layers` chained float32 reductions of `n_terms` terms each can move when their
    terms are added in another order, for results of about `magnitude` (first order: each layer
    adds its own sqrt(N) * eps relative error)."""
    return 4 * layers * n_terms**0.5 * F32_EPS * max(1.0, magnitude)
