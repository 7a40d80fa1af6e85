"""Person-centric crop: each clip cropped to the union box of what stands in front of the room.

A depth camera on a wall sees a static room. With a reference depth of the empty room (one
capture at installation), the pixels clearly nearer than the reference are the people; a clip
cropped to the box of those pixels over its frames (padded, at the model's aspect ratio) shows
the person at the same scale wherever they stand. Used identically by gd-prep (training) and
the server (stream and upload), so the encoder sees the same crops in both.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from core.clip import ClipSpec, DepthPreprocessor, Region

# Foreground: nearer than the room by more than NEAR_MM and than NEAR_FRACTION of the room's
# depth. Depth noise grows with z^2 (docs/synth.md: sigma 1.5 mm at 1 m, times 1.4 at the
# default model's difficulty 0.1: 19 mm at 3 m, 43 mm at 4.5 m), so a fixed margin is
# either too tight far away or too loose near: 100 mm is 5 sigma at 3 m, 4 % of 4.5 m
# (180 mm) 4 sigma at the range's far end. A body is thicker than either (a torso ~200 mm),
# so a person a step in front of a wall clears them.
NEAR_MM = 100
NEAR_FRACTION = 0.04
# A pixel counts when it is foreground in this share of the clip's frames (at least 2): noise
# spikes and flying pixels at depth edges come and go, a person stands in a pixel for much of
# a 1 s clip. 0.4 (4 of 10 frames), not 2 frames: at gd-synth's difficulty 0.5 the sensor's
# noise made 2-frame pixels all over the room and the box the whole frame (docs/results.md,
# "The person-centric crop in the default model").
MIN_SHARE = 0.4
# Rows and columns with fewer foreground pixels do not widen the box (one stray pixel would
# stretch it to the frame's edge).
MIN_PIXELS = 2
# The box grows by this share of its size on each side: the silhouette's edge pixels drop out
# (depth discontinuities read 0 often), and a hand reaching out between frames stays inside.
PAD = 0.10
# The box is at least this share of the frame's shorter side (its height, at least; its width
# follows the model's aspect ratio): a tiny box (a hand at the frame's edge, noise) is shown
# at most 1 / MIN_SIDE = 4 times larger than in the whole frame.
MIN_SIDE = 0.25


def foreground(frames: np.ndarray, reference: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """bool[T, H, W]: valid pixels of `frames` (uint16 [T, H, W] mm) nearer than `reference`
    (uint16 [H, W] mm, the frames' size) by the margin. Where the reference has no measurement
    (0: the room lies beyond the valid range), the reference is the range's far end."""
    if reference.shape != frames.shape[-2:]:
        (h, w), (fh, fw) = reference.shape, frames.shape[-2:]
        raise ValueError(f"reference {h}x{w} is not the frames' size {fh}x{fw}")
    depth = frames.astype(np.int32)
    ref = np.where(reference > 0, reference.astype(np.int32), spec.depth_max_mm)
    valid = (depth >= spec.depth_min_mm) & (depth <= spec.depth_max_mm)
    margin = np.maximum(NEAR_MM, NEAR_FRACTION * ref)
    return valid & (ref - depth > margin)


def clip_box(frames: np.ndarray, reference: np.ndarray, spec: ClipSpec) -> Region | None:
    """The crop of one clip in frame pixels ((r0, r1), (c0, c1)), or None without foreground.

    The union of the clip's foreground, padded by PAD, grown to the model's aspect ratio (and
    to MIN_SIDE) around its centre, moved inside the frame and cut to it. A pixel counts when
    it is foreground in MIN_SHARE of the clip's frames, at least 2 (a one-frame tail: 1).
    """
    need = min(len(frames), max(2, math.ceil(MIN_SHARE * len(frames))))
    count = foreground(frames, reference, spec).sum(axis=0) >= need
    rows = np.flatnonzero(count.sum(axis=1) >= MIN_PIXELS)
    cols = np.flatnonzero(count.sum(axis=0) >= MIN_PIXELS)
    if rows.size == 0 or cols.size == 0:
        return None
    h_in, w_in = count.shape
    h, w = (rows[-1] + 1 - rows[0]) * (1 + 2 * PAD), (cols[-1] + 1 - cols[0]) * (1 + 2 * PAD)
    h = max(h, w * spec.height / spec.width, MIN_SIDE * min(h_in, w_in))
    w = h * spec.width / spec.height
    centre = ((rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2)
    return _place(centre[0], h, h_in), _place(centre[1], w, w_in)


def _place(centre: float, size: float, total: int) -> tuple[int, int]:
    """A span of `size` around `centre`, moved inside [0, total) and cut to it."""
    n = min(total, max(1, round(size)))
    start = min(max(0, round(centre - n / 2)), total - n)
    return start, start + n


def crop_clip_mm(frames: np.ndarray, reference: np.ndarray | None, spec: ClipSpec) -> np.ndarray:
    """uint16[T, H, W] mm of one clip -> uint16[T, height, width] mm (0 invalid): the clip
    cropped to its person box and reduced as `DepthPreprocessor.to_millimetres` reduces (the
    box letterboxed where the frame cut it); without a reference or foreground, the whole frame
    with the spec's own fit."""
    frames = np.asarray(frames)
    box = None if reference is None else clip_box(frames, reference, spec)
    if box is None:
        return DepthPreprocessor(spec, *frames.shape[1:]).to_millimetres(frames)
    (r0, r1), (c0, c1) = box
    boxed = dataclasses.replace(spec, fit="pad")
    return DepthPreprocessor(boxed, r1 - r0, c1 - c0).to_millimetres(frames[:, r0:r1, c0:c1])


def crop_clips(frames: np.ndarray, reference: np.ndarray | None, spec: ClipSpec) -> np.ndarray:
    """Kept frames of a video on the clip grid -> the same frames reduced, each clip
    `[c * clip_len, (c + 1) * clip_len)` with its own box (a shorter tail is one more clip).
    Needs clip_step == clip_len, so that each kept frame belongs to one clip."""
    if spec.clip_step != spec.clip_len:
        raise ValueError("the person-centric crop needs clip_step == clip_len")
    n = spec.clip_len
    parts = [crop_clip_mm(frames[i : i + n], reference, spec) for i in range(0, len(frames), n)]
    return np.concatenate(parts) if parts else np.zeros((0, spec.height, spec.width), np.uint16)
