"""Rendering people as z-buffered capsules, and the depth, colour and skeleton sensor models.

Each bone is a tapered capsule. A capsule is rasterized in its own small pixel box: for a pixel,
the nearest point on the projected axis gives the depth of the axis there, and the capsule's
surface bulges towards the camera by `r * sqrt(1 - d^2 / r_px^2)`. All capsules of a chunk of
frames are computed in one padded array, then merged with a scatter-min (the z-buffer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.scene import Intrinsics, upsample
from synth.skeleton import J

SHIRT, PANTS, SKIN, SHOES, HEAD, SLEEVE = range(6)  # capsule materials

# (from, to, radius at from, radius at to (metres for a 1.70 m person), material); an end is a
# joint name or a (joint, joint, t) blend between two joints.
CAPSULES = (
    (("SpineBase", "SpineMid", 0.5), "SpineShoulder", 0.11, 0.12, SHIRT),
    ("HipLeft", "HipRight", 0.095, 0.095, PANTS),
    ("SpineMid", ("SpineShoulder", "ShoulderLeft", 0.7), 0.075, 0.07, SHIRT),
    ("SpineMid", ("SpineShoulder", "ShoulderRight", 0.7), 0.075, 0.07, SHIRT),
    ("SpineShoulder", "Neck", 0.055, 0.05, SKIN),
    (("Neck", "Head", 1.15), ("Neck", "Head", 1.15), 0.1, 0.1, HEAD),
    ("ShoulderLeft", "ElbowLeft", 0.05, 0.042, SHIRT),
    ("ShoulderRight", "ElbowRight", 0.05, 0.042, SHIRT),
    ("ElbowLeft", "WristLeft", 0.04, 0.032, SLEEVE),
    ("ElbowRight", "WristRight", 0.04, 0.032, SLEEVE),
    ("WristLeft", "HandTipLeft", 0.034, 0.025, SKIN),
    ("WristRight", "HandTipRight", 0.034, 0.025, SKIN),
    ("HipLeft", "KneeLeft", 0.078, 0.057, PANTS),
    ("HipRight", "KneeRight", 0.078, 0.057, PANTS),
    ("KneeLeft", "AnkleLeft", 0.052, 0.04, PANTS),
    ("KneeRight", "AnkleRight", 0.052, 0.04, PANTS),
    ("AnkleLeft", "FootLeft", 0.042, 0.036, SHOES),
    ("AnkleRight", "FootRight", 0.042, 0.036, SHOES),
)
NUM_CAPSULES = len(CAPSULES)


def _end_weights(end) -> np.ndarray:
    w = np.zeros(25)
    if isinstance(end, str):
        w[J[end]] = 1.0
    else:
        a, b, t = end
        w[J[a]] += 1.0 - t
        w[J[b]] += t
    return w


# [2 * NUM_CAPSULES, 25]: capsule ends as linear combinations of joints.
END_WEIGHTS = np.stack([_end_weights(c[i]) for c in CAPSULES for i in (0, 1)])
MATERIALS = np.array([c[4] for c in CAPSULES])


def capsule_ends(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joints [T, B, 25, 3] -> capsule ends a, b [T, B * NUM_CAPSULES, 3]."""
    ends = np.einsum("ej,tbjc->tbec", END_WEIGHTS, joints)
    t = len(joints)
    return ends[:, :, 0::2].reshape(t, -1, 3), ends[:, :, 1::2].reshape(t, -1, 3)


def capsule_radii(height: float, girth: float) -> tuple[np.ndarray, np.ndarray]:
    """Radii (metres) of one person's capsules; the head and hands keep their size with girth."""
    scale = np.where(np.isin(MATERIALS, (HEAD, SKIN)), 1.0, girth) * height / 1.70
    return np.array([c[2] for c in CAPSULES]) * scale, np.array([c[3] for c in CAPSULES]) * scale


@dataclass
class Raster:
    z: np.ndarray  # [T, H, W] float32 depth of the nearest capsule surface, inf where none
    capsule: np.ndarray  # [T, H, W] int16 index of that capsule, -1 where none
    facing: np.ndarray  # [T, H, W] float32 in [0, 1]: 1 where the surface faces the camera
    across: np.ndarray  # [T, H, W] float32 in [-1, 1]: offset from the capsule axis, image-down


def rasterize(a: np.ndarray, b: np.ndarray, ra, rb, intr: Intrinsics) -> Raster:
    """Z-buffer capsules with camera-space ends a, b [T, N, 3] and radii ra, rb ([N] or [T, N])."""
    n_t, n = a.shape[:2]
    h, w = intr.height, intr.width
    z = np.full(n_t * h * w, np.inf, dtype=np.float32)
    capsule = np.full(n_t * h * w, -1, dtype=np.int16)
    facing = np.zeros(n_t * h * w, dtype=np.float32)
    across = np.zeros(n_t * h * w, dtype=np.float32)
    out = Raster(*(x.reshape(n_t, h, w) for x in (z, capsule, facing, across)))

    a, b = a.astype(np.float32), b.astype(np.float32)
    ra = np.broadcast_to(np.asarray(ra, dtype=np.float32), (n_t, n))
    rb = np.broadcast_to(np.asarray(rb, dtype=np.float32), (n_t, n))
    za, zb = np.maximum(a[..., 2], 0.05), np.maximum(b[..., 2], 0.05)
    visible = (a[..., 2] > 0.3) & (b[..., 2] > 0.3)
    ua, va = intr.cx + intr.fx * a[..., 0] / za, intr.cy - intr.fy * a[..., 1] / za
    ub, vb = intr.cx + intr.fx * b[..., 0] / zb, intr.cy - intr.fy * b[..., 1] / zb
    pa, pb = intr.fx * ra / za, intr.fx * rb / zb  # radii in pixels (x pixels)
    # Capsules are round in "x pixels": rows are scaled by fx / fy (1 for square pixels).
    sy = np.float32(intr.fx / intr.fy)
    ya, yb = pa / sy, pb / sy  # radii in rows

    x0 = np.floor(np.maximum(np.minimum(ua - pa, ub - pb), 0)).astype(np.int32)
    x1 = np.ceil(np.minimum(np.maximum(ua + pa, ub + pb), w - 1)).astype(np.int32)
    y0 = np.floor(np.maximum(np.minimum(va - ya, vb - yb), 0)).astype(np.int32)
    y1 = np.ceil(np.minimum(np.maximum(va + ya, vb + yb), h - 1)).astype(np.int32)
    visible &= (x1 >= x0) & (y1 >= y0)
    if not visible.any():
        return out
    bw, bh = (x1 - x0 + 1)[visible].max(), (y1 - y0 + 1)[visible].max()

    e = (..., None, None)  # per-capsule values against the pixel grid [T, N, bh, bw]
    gx = (x0[e] + np.arange(bw, dtype=np.int32)).astype(np.float32)
    gy = (y0[e] + np.arange(bh, dtype=np.int32)[:, None]).astype(np.float32)
    gys, vas, vbs = gy * sy, va * sy, vb * sy  # rows in x pixels
    dx, dy = (ub - ua)[e], (vbs - vas)[e]
    length2 = np.maximum(dx * dx + dy * dy, 1e-6)
    t = np.clip(((gx - ua[e]) * dx + (gys - vas[e]) * dy) / length2, 0.0, 1.0)
    ex, ey = gx - (ua[e] + t * dx), gys - (vas[e] + t * dy)
    d2 = ex * ex + ey * ey
    rp = pa[e] + t * (pb - pa)[e]
    inside = (d2 < rp * rp) & (gx <= x1[e]) & (gy <= y1[e]) & visible[e]

    ti, ni, _, _ = np.nonzero(inside)
    t_in, rp_in = t[inside], rp[inside]
    bulge = np.sqrt(np.maximum(1.0 - d2[inside] / (rp_in * rp_in), 0.0))
    radius = ra[ti, ni] + t_in * (rb - ra)[ti, ni]
    # float32 like the buffer, so that the winner test below is exact
    depth = (za[ti, ni] + t_in * (zb - za)[ti, ni] - radius * bulge).astype(np.float32)
    pix = (ti * h + np.broadcast_to(gy, inside.shape)[inside].astype(np.int64)) * w
    pix += np.broadcast_to(gx, inside.shape)[inside].astype(np.int64)

    np.minimum.at(z, pix, depth)
    won = depth <= z[pix]
    capsule[pix[won]] = ni[won]
    facing[pix[won]] = bulge[won]
    across[pix[won]] = (ey[inside] / rp_in)[won]
    return out


# --- sensor models -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sensor:
    """Noise of a Kinect-like depth camera and skeleton tracker."""

    noise_at_1m: float  # depth noise std (metres) at 1 m; it grows with z^2
    edge_dropout: float  # chance that a pixel on a depth discontinuity reads 0
    speckle: float  # chance of an isolated invalid pixel
    blobs: float  # chance that a coarse cell of the image has holes
    dark_dropout: float  # chance of no return on infrared-dark surfaces
    joint_jitter: float  # skeleton jitter std (metres) for torso joints; limbs get more
    min_depth: float = 0.5
    max_depth: float = 4.5

    @classmethod
    def for_difficulty(cls, difficulty: float) -> Sensor:
        d = float(difficulty)
        return cls(
            noise_at_1m=0.0015 * (1.0 + 4.0 * d),
            edge_dropout=0.25 + 0.5 * d,
            speckle=0.002 + 0.02 * d,
            blobs=0.01 + 0.05 * d,
            dark_dropout=0.9,
            joint_jitter=0.004 + 0.008 * d,
        )


def depth_frames(
    z: np.ndarray, dark: np.ndarray, sensor: Sensor, rng: np.random.Generator
) -> np.ndarray:
    """Clean depth [T, H, W] (metres, inf = nothing) -> uint16 millimetres, 0 = invalid."""
    n_t, h, w = z.shape
    zf = np.where(np.isfinite(z), z, 20.0).astype(np.float32)
    # Mixed pixels on depth discontinuities are unreliable: drop some ("flying pixels").
    threshold = 0.04 + 0.03 * zf
    edge = np.zeros(z.shape, dtype=bool)
    jump_x = np.abs(np.diff(zf, axis=2)) > threshold[:, :, 1:]
    jump_y = np.abs(np.diff(zf, axis=1)) > threshold[:, 1:, :]
    edge[:, :, 1:] |= jump_x
    edge[:, :, :-1] |= jump_x
    edge[:, 1:, :] |= jump_y
    edge[:, :-1, :] |= jump_y
    u = rng.random(z.shape, dtype=np.float32)
    # Ragged round holes where a coarse random field, smoothly upsampled, is low.
    field = upsample(rng.random((n_t, h // 8 + 2, w // 8 + 2), dtype=np.float32), h, w)
    blob = (field < sensor.blobs) & (u < 0.7)
    drop = (edge & (u < sensor.edge_dropout)) | (u < sensor.speckle) | blob
    drop |= dark & (u < sensor.dark_dropout)
    noise = rng.standard_normal(z.shape, dtype=np.float32) * (sensor.noise_at_1m * zf * zf)
    measured = zf + noise
    valid = (measured >= sensor.min_depth) & (measured <= sensor.max_depth) & ~drop
    return np.where(valid, np.rint(measured * 1000.0), 0).astype(np.uint16)


# Joint jitter multipliers: trunk steady, limbs more, hands and feet most (Kinect v2 behaviour).
JITTER_SCALE = np.ones(25)
JITTER_SCALE[[J[n] for n in ("ElbowLeft", "ElbowRight", "KneeLeft", "KneeRight")]] = 1.5
for _name in ("Wrist", "Hand", "HandTip", "Thumb"):
    JITTER_SCALE[[J[_name + "Left"], J[_name + "Right"]]] = 2.5
JITTER_SCALE[[J[n] for n in ("AnkleLeft", "AnkleRight", "FootLeft", "FootRight")]] = 2.0


def jitter_joints(
    joints: np.ndarray, occluded: np.ndarray, sensor: Sensor, rng: np.random.Generator
) -> np.ndarray:
    """Tracker-like joint errors [T, B, 25, 3]: temporally correlated noise, larger when occluded.

    Occluded joints are "inferred" by a tracker: a slowly varying offset of a few centimetres.
    """
    n_t = len(joints)
    sigma = sensor.joint_jitter * JITTER_SCALE[:, None]
    white = rng.standard_normal((n_t, *joints.shape[1:]))
    slow = rng.standard_normal((n_t, *joints.shape[1:]))
    fast, inferred = np.empty_like(white), np.empty_like(slow)
    fast[0], inferred[0] = white[0], slow[0]
    for i in range(1, n_t):  # AR(1): short memory for jitter, long memory for inferred joints
        fast[i] = 0.5 * fast[i - 1] + 0.866 * white[i]
        inferred[i] = 0.95 * inferred[i - 1] + 0.312 * slow[i]
    return joints + sigma * fast + 0.04 * inferred * occluded[..., None]


def rgb_frames(
    background: np.ndarray,
    raster: Raster,
    colors: np.ndarray,
    hair: np.ndarray,
    gain: np.ndarray,
    noise: np.ndarray,
) -> np.ndarray:
    """Compose people over the background: uint8 [T, Hc, Wc, 3].

    `background` [Hc, Wc, 3] and `colors`, `hair` [N, 3] per capsule are in 0..1; `gain` [T] is
    the global light; `noise` [T, Hc, Wc, 3] is sensor noise in 0..255 units.
    """
    out = background[None] * (255.0 * gain.astype(np.float32))[:, None, None, None] + noise
    t, y, x = np.nonzero(raster.capsule >= 0)
    cap = raster.capsule[t, y, x]
    is_hair = (MATERIALS[cap % NUM_CAPSULES] == HEAD) & (raster.across[t, y, x] < -0.25)
    body = np.where(is_hair[:, None], hair[cap], colors[cap])
    shade = (0.45 + 0.55 * raster.facing[t, y, x]) * (255.0 * gain[t])
    out[t, y, x] = body * shade[:, None] + noise[t, y, x]
    return np.clip(out, 0, 255, out=out).astype(np.uint8)
