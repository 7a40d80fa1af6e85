"""The 25-joint Kinect v2 skeleton: joint order, body proportions, pose controls and kinematics.

A pose is driven by *controls*, a dict of per-frame arrays (see `CHANNELS`). Limbs are solved by
two-bone inverse kinematics towards wrist and ankle targets, which makes actions easy to write
("the hand goes to the mouth") and keeps bone lengths exact whatever the body size.

Coordinates: a body frame with x to the person's left, y up, z forward, origin on the floor
under the pelvis; controls are in units of body height (a 1.0 m tall person), joints come out
in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

JOINTS = (
    "SpineBase",
    "SpineMid",
    "Neck",
    "Head",
    "ShoulderLeft",
    "ElbowLeft",
    "WristLeft",
    "HandLeft",
    "ShoulderRight",
    "ElbowRight",
    "WristRight",
    "HandRight",
    "HipLeft",
    "KneeLeft",
    "AnkleLeft",
    "FootLeft",
    "HipRight",
    "KneeRight",
    "AnkleRight",
    "FootRight",
    "SpineShoulder",
    "HandTipLeft",
    "ThumbLeft",
    "HandTipRight",
    "ThumbRight",
)
J = {name: i for i, name in enumerate(JOINTS)}
NUM_JOINTS = len(JOINTS)

# Kinect v2 bone tree (parent of each joint; the root is its own parent).
PARENTS = (0, 0, 20, 2, 20, 4, 5, 6, 20, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18, 1, 7, 6, 11, 10)

# Control channels and their widths. Vectors are (x, y, z); angles are radians.
CHANNELS = {
    "root": 3,  # pelvis offset from its standing rest position (body frame)
    "yaw": 1,  # turn of the whole body about the vertical (positive: towards its left)
    "spine": 3,  # (pitch forward, roll to the left, twist to the left)
    "head": 3,  # (pitch down, roll to the left, yaw to the left)
    "wrist_l": 3,  # wrist targets in the torso frame (origin SpineShoulder)
    "wrist_r": 3,
    "elbow_l": 3,  # elbow pole directions in the torso frame
    "elbow_r": 3,
    "hand_l": 3,  # bias added to the forearm direction to aim the hand (torso frame)
    "hand_r": 3,
    "ankle_l": 3,  # ankle targets in the body frame
    "ankle_r": 3,
    "tilt": 2,  # whole-body rotation about `pivot`: (pitch forward, roll to the left)
    "pivot": 3,
}
_SIDED = [("wrist_l", "wrist_r"), ("elbow_l", "elbow_r"), ("hand_l", "hand_r")]
_SIDED += [("ankle_l", "ankle_r")]
_VECTORS = ("root", "pivot", *(name for pair in _SIDED for name in pair))

Controls = dict[str, np.ndarray]

# Standing rest pose of the right side (torso frame for arms, body frame for legs); the left
# side is its mirror image.
REST_WRIST_R = (-0.125, -0.31, 0.03)
REST_ELBOW_R = (-0.45, -0.2, -1.0)
REST_ANKLE_R = (-0.075, 0.04, 0.0)


@dataclass(frozen=True)
class Body:
    """Size and proportions of one person."""

    height: float = 1.70  # metres
    girth: float = 1.0  # scale of body-volume radii
    arm: float = 1.0  # limb and torso length scales (relative to height)
    leg: float = 1.0
    torso: float = 1.0

    @property
    def thigh(self) -> float:
        return 0.245 * self.leg

    @property
    def shank(self) -> float:
        return 0.245 * self.leg

    @property
    def hip_y(self) -> float:
        """Hip joint height when standing straight (unit height)."""
        return ANKLE_Y + self.thigh + self.shank

    @property
    def pelvis_y(self) -> float:
        return self.hip_y + 0.03


ANKLE_Y = 0.04


def rest(n: int) -> Controls:
    """Standing rest controls for `n` frames."""
    c = {name: np.zeros((n, width)) for name, width in CHANNELS.items()}
    c["yaw"] = np.zeros(n)
    for name, value in (
        ("wrist_r", REST_WRIST_R),
        ("elbow_r", REST_ELBOW_R),
        ("ankle_r", REST_ANKLE_R),
    ):
        c[name][:] = value
        c[name.replace("_r", "_l")][:] = mirror_vector(value)
    c["pivot"][:] = (0.0, 0.0, 0.05)
    return c


def mirror_vector(v) -> np.ndarray:
    v = np.array(v, dtype=float)
    v[..., 0] *= -1
    return v


def mirror(c: Controls) -> None:
    """Mirror controls in place about the body's sagittal plane (left <-> right)."""
    for left, right in _SIDED:
        if left in c:
            c[left][:], c[right][:] = c[right].copy(), c[left].copy()
    for name in _VECTORS:
        if name in c:
            c[name][..., 0] *= -1
    for name, components in (("spine", (1, 2)), ("head", (1, 2)), ("tilt", (1,))):
        if name in c:
            c[name][:, components] *= -1
    if "yaw" in c:
        c["yaw"] *= -1


def _rot_x(a: np.ndarray) -> np.ndarray:
    c, s, o, i = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([i, o, o, o, c, -s, o, s, c], -1).reshape(*a.shape, 3, 3)


def _rot_y(a: np.ndarray) -> np.ndarray:
    c, s, o, i = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([c, o, s, o, i, o, -s, o, c], -1).reshape(*a.shape, 3, 3)


def _rot_z(a: np.ndarray) -> np.ndarray:
    c, s, o, i = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([c, -s, o, s, c, o, o, o, i], -1).reshape(*a.shape, 3, 3)


def rotation(pitch: np.ndarray, roll: np.ndarray, twist: np.ndarray) -> np.ndarray:
    """[T, 3, 3]: pitch forward (about x), roll to the left (about z), twist left (about y)."""
    return _rot_x(pitch) @ _rot_z(-roll) @ _rot_y(twist)


def _apply(r: np.ndarray, v) -> np.ndarray:
    return np.einsum("tij,tj->ti", r, np.broadcast_to(v, (r.shape[0], 3)))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def two_bone(root, target, pole, l1: float, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Elbow/knee and wrist/ankle positions reaching from `root` towards `target` ([T, 3]).

    The middle joint bends towards `pole`; unreachable targets are approached as far as the
    limb allows.
    """
    d = target - root
    dist = np.linalg.norm(d, axis=-1, keepdims=True)
    u = d / np.maximum(dist, 1e-9)
    reach = np.clip(dist, abs(l1 - l2) + 1e-4, l1 + l2 - 1e-6)
    v = pole - np.sum(pole * u, -1, keepdims=True) * u
    # A pole along the limb gives no bending plane: fall back to any perpendicular.
    fallback = np.cross(u, [0.0, 0.0, 1.0]) + np.cross(u, [1.0, 0.0, 0.0]) * 0.1
    v = np.where(np.linalg.norm(v, axis=-1, keepdims=True) < 1e-6, fallback, v)
    v = _unit(v)
    cos_a = np.clip((l1 * l1 + reach * reach - l2 * l2) / (2 * l1 * reach), -1.0, 1.0)
    mid = root + l1 * (cos_a * u + np.sqrt(1 - cos_a * cos_a) * v)
    return mid, root + reach * u


def pose(c: Controls, body: Body) -> np.ndarray:
    """Joint positions [T, 25, 3] in metres in the body frame."""
    n = len(c["root"])
    out = np.zeros((n, NUM_JOINTS, 3))
    sp = c["spine"]
    r_full = rotation(sp[:, 0], sp[:, 1], sp[:, 2])
    r_half = rotation(sp[:, 0] / 2, sp[:, 1] / 2, sp[:, 2] / 2)
    hd = c["head"]
    r_head = r_full @ rotation(hd[:, 0], hd[:, 1], hd[:, 2])

    pelvis = np.array([0.0, body.pelvis_y, 0.0]) + c["root"]
    spine_mid = pelvis + _apply(r_half, (0.0, 0.135 * body.torso, 0.0))
    spine_sh = spine_mid + _apply(r_full, (0.0, 0.13 * body.torso, 0.0))
    neck = spine_sh + _apply(r_full, (0.0, 0.045, 0.0))
    out[:, J["SpineBase"]] = pelvis
    out[:, J["SpineMid"]] = spine_mid
    out[:, J["SpineShoulder"]] = spine_sh
    out[:, J["Neck"]] = neck
    out[:, J["Head"]] = neck + _apply(r_head, (0.0, 0.065, 0.012))

    upper, fore = 0.17 * body.arm, 0.145 * body.arm
    for side, sign in (("Left", 1.0), ("Right", -1.0)):
        s = side[0].lower()
        shoulder = spine_sh + _apply(r_full, (sign * 0.105, -0.015, 0.0))
        target = spine_sh + _apply(r_full, c[f"wrist_{s}"])
        pole = _apply(r_full, c[f"elbow_{s}"])
        elbow, wrist = two_bone(shoulder, target, pole, upper, fore)
        aim = _unit(_unit(wrist - elbow) + _apply(r_full, c[f"hand_{s}"]))
        hand = wrist + 0.045 * aim
        thumb_side = _unit(np.cross(aim, pole)) * sign
        out[:, J[f"Shoulder{side}"]] = shoulder
        out[:, J[f"Elbow{side}"]] = elbow
        out[:, J[f"Wrist{side}"]] = wrist
        out[:, J[f"Hand{side}"]] = hand
        out[:, J[f"HandTip{side}"]] = hand + 0.04 * aim
        out[:, J[f"Thumb{side}"]] = wrist + 0.03 * aim + 0.025 * thumb_side

        hip = pelvis + np.array([sign * 0.075, -0.03, 0.0])
        knee_pole = np.array([0.1 * sign, 0.0, 1.0])
        knee, ankle = two_bone(hip, c[f"ankle_{s}"], knee_pole, body.thigh, body.shank)
        out[:, J[f"Hip{side}"]] = hip
        out[:, J[f"Knee{side}"]] = knee
        out[:, J[f"Ankle{side}"]] = ankle
        out[:, J[f"Foot{side}"]] = ankle + np.array([0.0, -0.025, 0.075])

    tilt = rotation(c["tilt"][:, 0], c["tilt"][:, 1], np.zeros(n))
    pivot = c["pivot"][:, None, :]
    out = np.einsum("tij,tkj->tki", tilt, out - pivot) + pivot
    out[..., 1] = np.maximum(out[..., 1], 0.02)  # nothing sinks into the floor
    out = np.einsum("tij,tkj->tki", _rot_y(c["yaw"]), out)
    return out * body.height
