"""Per-pixel references for depth preprocessing: tests of core, training, the server and the
clients compare the code's vectorized reductions with these loops, never with core.clip itself."""

import numpy as np

from core.clip import ClipSpec


def reference_millimetres(frame: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """Per-pixel loops: each output pixel is the minimum valid depth (within the spec's range,
    ends included) of its block (or the nearest pixel when upscaling), 0 if none is valid.
    Other tests compare the code's reductions with this one."""
    h, w = frame.shape
    out = np.zeros((spec.height, spec.width), np.uint16)

    def span(i, n_in, n_out):
        if n_out <= n_in:
            return range(i * n_in // n_out, (i + 1) * n_in // n_out)
        return [min(int((i + 0.5) * n_in / n_out), n_in - 1)]

    for y in range(spec.height):
        for x in range(spec.width):
            vals = [
                int(frame[r, c])
                for r in span(y, h, spec.height)
                for c in span(x, w, spec.width)
                if spec.depth_min_mm <= frame[r, c] <= spec.depth_max_mm
            ]
            out[y, x] = min(vals) if vals else 0
    return out


def reference_preprocess(frame: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """The reference's millimetres scaled to [0, 1] (0 = invalid) and normalized."""
    unit = reference_millimetres(frame, spec) / spec.depth_max_mm
    return ((unit - spec.mean) / spec.std).astype(np.float32)
