"""Parametric actions: each one edits pose controls over its frames as a function of phase.

Actions are written for a right-handed performer (the right side is -x); a left-handed one is
the mirror image (`skeleton.mirror`). An action moves channels away from whatever base pose it
starts in (standing, seated, a rest style) and back, so the same drink works standing or sitting.
Posture changes (sit down, stand up) are blended by the timeline (`posture_weight`); an action
here only adds the motion on top of that blend. Two-person actions also drive the partner, who
stands facing the actor `Perf.partner` away.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from synth.skeleton import ANKLE_Y, REST_ELBOW_R, REST_WRIST_R, Controls


@dataclass(frozen=True)
class Perf:
    """How one performance goes (all lengths in units of body height)."""

    fps: float = 30.0
    amp: float = 1.0  # size of the motion
    rate: float = 1.0  # repetition frequency multiplier
    seed: int = 0  # the performance's own random constants (directions, variants)
    seat_dy: float = -0.23  # pelvis drop when seated
    partner: float = 0.55  # pelvis-to-pelvis distance to the partner

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


@dataclass(frozen=True)
class Action:
    name: str
    seconds: float  # typical duration at speed 1
    fn: Callable
    start: str = "any"  # posture needed: "stand", "sit" or "any"
    end: str | None = None  # posture afterwards ("sit", "stand", "lie"), None: unchanged
    two_person: bool = False


# --- keyframe helpers ----------------------------------------------------------------------


def ease(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def track(p: np.ndarray, keys: Sequence[tuple[float, object]], shape=()) -> np.ndarray:
    """Smooth piecewise interpolation of keyframes `(phase, value)`, held before and after."""
    times = np.array([t for t, _ in keys], dtype=float)
    values = np.array([np.broadcast_to(np.asarray(v, dtype=float), shape) for _, v in keys])
    if len(keys) == 1:
        return np.broadcast_to(values[0], (len(p), *shape)).copy()
    i = np.clip(np.searchsorted(times, p, side="right") - 1, 0, len(times) - 2)
    x = ease((p - times[i]) / np.maximum(times[i + 1] - times[i], 1e-9))
    x = x.reshape(-1, *([1] * len(shape)))
    return values[i] + x * (values[i + 1] - values[i])


def move(c: Controls, channel: str, p: np.ndarray, keys: Sequence[tuple[float, object]]) -> None:
    """Blend a vector channel towards keyframed targets; a `None` target means its base value."""
    filled = [v for _, v in keys]
    known = [v for v in filled if v is not None]
    for i, v in enumerate(filled):  # a None key borrows a neighbour's target (weight is 0 there)
        if v is None:
            filled[i] = next((u for u in filled[i:] if u is not None), known[-1])
    shape = c[channel].shape[1:]
    w = track(p, [(t, 0.0 if v is None else 1.0) for t, v in keys])[:, None]
    target = track(p, [(t, v) for (t, _), v in zip(keys, filled, strict=True)], shape)
    c[channel] += w * (target - c[channel])


def hold(c: Controls, channel: str, p: np.ndarray, target, a=0.08, b=0.3, d=0.72, e=0.92) -> None:
    """Go to `target` between phases a..b, stay until d, return to base by e."""
    move(c, channel, p, [(a, None), (b, target), (d, target), (e, None)])


def add(c: Controls, channel: str, p: np.ndarray, keys: Sequence[tuple[float, object]]) -> None:
    """Add keyframed offsets (angles, pelvis shifts) to a channel."""
    c[channel] += track(p, keys, c[channel].shape[1:])


def env(p: np.ndarray, a=0.08, b=0.3, d=0.72, e=0.92) -> np.ndarray:
    return track(p, [(a, 0.0), (b, 1.0), (d, 1.0), (e, 0.0)])


def osc(p: np.ndarray, k: Perf, hz: float, phase: float = 0.0) -> np.ndarray:
    """A sinusoid at `hz` (scaled by the performer's rate) over the action's real duration."""
    seconds = len(p) / k.fps
    return np.sin(2 * np.pi * (hz * k.rate * seconds * p + phase))


def both(c: Controls, p: np.ndarray, channel: str, right, **when) -> None:
    """`hold` a right-side target and its mirror image on the left."""
    hold(c, f"{channel}_r", p, right, **when)
    hold(c, f"{channel}_l", p, (-right[0], *right[1:]), **when)


# Idle hand positions (right wrist target, right elbow pole); the left side mirrors them.
REST_POSES = {
    "hang": (REST_WRIST_R, REST_ELBOW_R),
    "front": ((-0.03, -0.3, 0.12), (-1.0, -0.5, 0.0)),
    "hips": ((-0.16, -0.24, -0.01), (-1.0, 0.0, -0.3)),
    "behind": ((-0.05, -0.3, -0.1), (-0.5, -0.5, -1.0)),
}


def seated(k: Perf) -> dict[str, tuple]:
    """Base pose of a person sitting on a chair behind them."""
    return {
        "root": (0.0, k.seat_dy, -0.13),
        "ankle_r": (-0.09, ANKLE_Y, 0.16),
        "ankle_l": (0.09, ANKLE_Y, 0.16),
        "wrist_r": (-0.11, -0.29, 0.15),
        "wrist_l": (0.11, -0.29, 0.15),
    }


def step_feet(c: Controls, p: np.ndarray, path: np.ndarray, steps: int) -> None:
    """Feet follow a pelvis path `[T, 2]` (x, z) in alternating steps."""
    for side, offset in (("l", 0.0), ("r", 0.5)):
        plants = (np.arange(-1, steps + 2) + offset) / steps
        i = np.clip(np.searchsorted(plants, p, side="right") - 1, 0, len(plants) - 2)
        start = np.maximum(plants[i], 0.0)  # the first step starts at the action's start
        s = ease(2 * (p - start) / (plants[i + 1] - plants[i]))  # swing, then stand
        at = [np.interp(np.clip(plants, 0, 1), p, path[:, j]) for j in range(2)]
        for j, axis in ((0, 0), (1, 2)):
            c[f"ankle_{side}"][:, axis] += at[j][i] + s * (at[j][i + 1] - at[j][i])
        c[f"ankle_{side}"][:, 1] += 0.05 * np.sin(np.pi * s)


# --- single-person actions -----------------------------------------------------------------

MOUTH = (-0.035, 0.025, 0.125)  # wrist target that puts the hand at the mouth
EAR = (-0.085, 0.06, 0.03)
FOREHEAD = (-0.06, 0.1, 0.09)
CHEST = (-0.05, -0.1, 0.12)
NAPE = (-0.05, 0.05, -0.07)
LOWER_BACK = (-0.08, -0.26, -0.1)
ELBOW_DOWN = (-0.4, -1.0, 0.0)
ELBOW_OUT = (-1.0, -0.2, 0.0)


def drink(c, p, k):
    cup = (-0.09, -0.15, 0.2)
    keys = [(0.08, None), (0.25, cup), (0.4, MOUTH), (0.68, MOUTH), (0.82, cup), (0.95, None)]
    move(c, "wrist_r", p, keys)
    hold(c, "elbow_r", p, ELBOW_DOWN, 0.1, 0.35, 0.75, 0.95)
    back = (-0.3 * k.amp, 0, 0)  # head tilts back to empty the cup
    add(c, "head", p, [(0.4, 0), (0.5, back), (0.62, back), (0.7, 0)])


def eat(c, p, k):
    bowl = np.array((-0.05, -0.2, 0.24))
    hold(c, "wrist_l", p, (0.05, -0.2, 0.22), 0.03, 0.15)
    hold(c, "wrist_r", p, bowl, 0.05, 0.2, 0.85, 0.97)
    lift = env(p, 0.2, 0.25, 0.8, 0.85) * (0.5 - 0.5 * osc(p, k, 0.8, 0.25))
    c["wrist_r"] += lift[:, None] * (np.array(MOUTH) - bowl) * min(k.amp, 1.0)
    add(c, "head", p, [(0.1, 0), (0.2, (0.25, 0, 0)), (0.85, (0.25, 0, 0)), (0.95, 0)])


def brush_teeth(c, p, k):
    hold(c, "wrist_r", p, (-0.045, 0.03, 0.12), 0.08, 0.25, 0.8, 0.95)
    hold(c, "hand_r", p, (1.2, 0.3, 0.0), 0.08, 0.25, 0.8, 0.95)
    hold(c, "elbow_r", p, ELBOW_DOWN)
    e = env(p, 0.22, 0.3, 0.75, 0.82)
    c["wrist_r"][:, 0] += 0.025 * k.amp * e * osc(p, k, 3.0)
    c["wrist_r"][:, 1] += 0.008 * k.amp * e * osc(p, k, 6.0)


def brush_hair(c, p, k):
    hold(c, "wrist_r", p, (-0.1, 0.17, 0.0))
    hold(c, "elbow_r", p, (-1.0, 0.6, 0.0))
    hold(c, "hand_r", p, (1.0, 0.5, 0.0))
    e = env(p, 0.25, 0.32, 0.7, 0.76)
    c["wrist_r"][:, 2] += 0.06 * k.amp * e * osc(p, k, 1.3)
    c["wrist_r"][:, 1] += 0.02 * k.amp * e * np.abs(osc(p, k, 1.3))
    add(c, "head", p, [(0.2, 0), (0.3, (0, 0.12, 0)), (0.72, (0, 0.12, 0)), (0.85, 0)])


def pick_up(c, p, k):
    keys = [(0.05, 0), (0.42, 1.15 * k.amp), (0.55, 1.15 * k.amp), (0.9, 0)]
    add(c, "spine", p, [(t, (v, 0, 0)) for t, v in keys])
    add(c, "root", p, [(0.05, 0), (0.42, (0, -0.1, -0.05)), (0.55, (0, -0.1, -0.05)), (0.9, 0)])
    add(c, "head", p, [(0.05, 0), (0.42, (0.3, 0, 0)), (0.55, (0.3, 0, 0)), (0.9, 0)])
    hold(c, "wrist_r", p, (-0.07, -0.5, 0.1), 0.1, 0.42, 0.55, 0.9)
    hold(c, "wrist_l", p, (0.13, -0.4, 0.05), 0.1, 0.42, 0.55, 0.9)


def throw(c, p, k):
    wind, release = (-0.17, 0.12, -0.12), (-0.05, 0.06, 0.33)
    keys = [(0.05, None), (0.35, wind), (0.5, release), (0.62, (-0.04, -0.1, 0.28)), (0.9, None)]
    move(c, "wrist_r", p, keys)
    hold(c, "elbow_r", p, (-1.0, 0.5, -0.3), 0.05, 0.3, 0.45, 0.6)
    twist = [(0.05, 0), (0.35, (0, 0, -0.35 * k.amp)), (0.5, (0.1, 0, 0.25 * k.amp)), (0.9, 0)]
    add(c, "spine", p, twist)
    hold(c, "ankle_l", p, (0.08, ANKLE_Y, 0.12), 0.3, 0.45, 0.75, 0.9)


def sit_down(c, p, k):
    # The pelvis drop itself is the timeline's posture blend; this is the lean and the hands.
    add(c, "spine", p, [(0.15, 0), (0.45, (0.5 * k.amp, 0, 0)), (0.85, 0)])
    move(c, "wrist_r", p, [(0.2, None), (0.45, (-0.12, -0.15, 0.2)), (0.8, None)])
    move(c, "wrist_l", p, [(0.2, None), (0.45, (0.12, -0.15, 0.2)), (0.8, None)])


def stand_up(c, p, k):
    add(c, "spine", p, [(0.1, 0), (0.4, (0.55 * k.amp, 0, 0)), (0.8, 0)])
    move(c, "wrist_r", p, [(0.1, None), (0.35, (-0.1, -0.3, 0.17)), (0.7, None)])
    move(c, "wrist_l", p, [(0.1, None), (0.35, (0.1, -0.3, 0.17)), (0.7, None)])


def clap(c, p, k):
    both(c, p, "wrist", (-0.05, -0.12, 0.22))
    both(c, p, "hand", (0.8, 0.6, 0.4))
    # Hands part and meet: the gap between wrists swings between 0.05 and about 0.17.
    gap = 0.025 + 0.06 * k.amp * (0.5 + 0.5 * osc(p, k, 2.5)) * env(p, 0.28, 0.32, 0.7, 0.74)
    c["wrist_r"][:, 0] -= env(p) * (gap - 0.05)
    c["wrist_l"][:, 0] += env(p) * (gap - 0.05)


def wave(c, p, k):
    hold(c, "wrist_r", p, (-0.21, 0.14, 0.08))
    hold(c, "elbow_r", p, (-1.0, -0.4, 0.0))
    hold(c, "hand_r", p, (0.0, 2.0, 0.0))
    c["wrist_r"][:, 0] += 0.06 * k.amp * env(p, 0.25, 0.32, 0.7, 0.78) * osc(p, k, 1.8)


def kick(c, p, k):
    up = (-0.06, 0.28 * k.amp, 0.32)
    keys = [(0.1, None), (0.3, (-0.08, 0.12, -0.15)), (0.45, up), (0.6, (-0.075, 0.1, 0.05))]
    move(c, "ankle_r", p, [*keys, (0.75, None)])
    add(c, "spine", p, [(0.3, 0), (0.45, (-0.2, 0, 0)), (0.7, 0)])
    both(c, p, "wrist", (-0.2, -0.22, 0.05), a=0.1, b=0.35, d=0.6, e=0.8)


def jump(c, p, k):
    height = track(p, [(0, 0), (0.25, -0.08), (0.4, -0.1), (0.5, 0.09 * k.amp), (0.6, 0.0)])
    height += track(p, [(0.6, 0), (0.68, -0.07), (0.85, 0)])
    c["root"][:, 1] += height
    for side in "lr":
        c[f"ankle_{side}"][:, 1] += np.maximum(height, 0.0)
    add(c, "spine", p, [(0, 0), (0.3, (0.3, 0, 0)), (0.45, 0), (0.68, (0.25, 0, 0)), (0.85, 0)])
    keys = [(0.1, None), (0.3, (-0.15, -0.3, -0.15)), (0.5, (-0.15, 0.3, 0.1)), (0.75, None)]
    move(c, "wrist_r", p, keys)
    move(c, "wrist_l", p, [(t, None if v is None else (-v[0], *v[1:])) for t, v in keys])


def hop(c, p, k):
    hold(c, "ankle_l", p, (0.075, 0.2, -0.12), 0.05, 0.2, 0.82, 0.95)
    both(c, p, "wrist", (-0.2, -0.2, 0.05), a=0.05, b=0.2, d=0.82, e=0.95)
    lift = 0.05 * k.amp * np.abs(osc(p, k, 1.2)) * env(p, 0.22, 0.25, 0.78, 0.8)
    c["root"][:, 1] += lift - 0.02 * env(p, 0.1, 0.2, 0.82, 0.92)
    c["ankle_r"][:, 1] += lift
    c["ankle_l"][:, 1] += lift


def phone_call(c, p, k):
    hold(c, "wrist_r", p, EAR, 0.05, 0.2, 0.85, 0.97)
    hold(c, "elbow_r", p, (-0.5, -1.0, 0.4), 0.05, 0.2, 0.85, 0.97)
    hold(c, "hand_r", p, (0.3, 2.0, 0.0), 0.05, 0.2, 0.85, 0.97)
    c["head"][:, 1] -= 0.12 * env(p, 0.1, 0.25, 0.8, 0.95)
    c["head"][:, 0] += 0.05 * env(p, 0.25, 0.3, 0.8, 0.85) * osc(p, k, 0.7)


def point(c, p, k):
    rng = k.rng()
    az, el = rng.uniform(-0.3, 0.8), rng.uniform(-0.15, 0.45)
    d = np.array([-np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])
    hold(c, "wrist_r", p, np.array((-0.105, -0.015, 0.0)) + 0.3 * d, b=0.28)
    hold(c, "hand_r", p, 2 * d, b=0.28)
    hold(c, "elbow_r", p, ELBOW_DOWN)
    look = (-0.3 * el, 0, -0.5 * az)
    add(c, "head", p, [(0.1, 0), (0.3, look), (0.72, look), (0.9, 0)])


def check_time(c, p, k):
    hold(c, "wrist_l", p, (0.03, -0.1, 0.2))
    hold(c, "elbow_l", p, (1.0, -0.5, -0.2))
    hold(c, "hand_l", p, (-1.0, 0.0, 0.3))
    hold(c, "wrist_r", p, (-0.03, -0.14, 0.17), 0.15, 0.4, 0.65, 0.85)
    add(c, "head", p, [(0.2, 0), (0.35, (0.4, 0, 0)), (0.7, (0.4, 0, 0)), (0.85, 0)])


def rub_hands(c, p, k):
    both(c, p, "wrist", (-0.035, -0.17, 0.2))
    both(c, p, "hand", (1.0, 0.8, 0.4))
    e = 0.02 * k.amp * env(p, 0.28, 0.32, 0.72, 0.76)
    for side, phase in (("r", 0.0), ("l", 0.5)):
        c[f"wrist_{side}"][:, 1] += e * osc(p, k, 2.5, phase)
        c[f"wrist_{side}"][:, 2] += e * osc(p, k, 2.5, phase + 0.25)


def bow(c, p, k):
    keys = [(0.1, 0), (0.4, 0.75 * k.amp), (0.6, 0.75 * k.amp), (0.9, 0)]
    add(c, "spine", p, [(t, (v, 0, 0)) for t, v in keys])
    add(c, "head", p, [(t, (0.25 * v, 0, 0)) for t, v in keys])
    add(c, "root", p, [(t, (0, 0, -0.04 * v)) for t, v in keys])


def reach_into_pocket(c, p, k):
    pocket = (-0.15, -0.36, 0.05)
    hold(c, "wrist_r", p, pocket, 0.1, 0.3, 0.7, 0.9)
    hold(c, "elbow_r", p, (-1.0, 0.0, -0.5), 0.1, 0.3, 0.7, 0.9)
    c["wrist_r"][:, 1] += 0.02 * env(p, 0.3, 0.35, 0.65, 0.7) * osc(p, k, 1.5)
    add(c, "head", p, [(0.1, 0), (0.3, (0.3, 0, 0.15)), (0.7, (0.3, 0, 0.15)), (0.9, 0)])
    add(c, "spine", p, [(0.1, 0), (0.3, (0.05, -0.12, 0)), (0.7, (0.05, -0.12, 0)), (0.9, 0)])


def wipe_face(c, p, k):
    both(c, p, "wrist", (-0.04, 0.04, 0.13))
    both(c, p, "hand", (0.4, 2.0, 0.0))
    both(c, p, "elbow", ELBOW_DOWN)
    add(c, "head", p, [(0.15, 0), (0.3, (0.15, 0, 0)), (0.72, (0.15, 0, 0)), (0.9, 0)])
    r = 0.025 * k.amp * env(p, 0.28, 0.33, 0.7, 0.75)
    for side, sign in (("r", 1.0), ("l", -1.0)):
        c[f"wrist_{side}"][:, 0] += sign * r * osc(p, k, 1.3, 0.25)
        c[f"wrist_{side}"][:, 1] += r * osc(p, k, 1.3)


def salute(c, p, k):
    hold(c, "wrist_r", p, (-0.08, 0.11, 0.1), 0.08, 0.25, 0.7, 0.9)
    hold(c, "elbow_r", p, (-1.0, 0.2, 0.0), 0.08, 0.25, 0.7, 0.9)
    hold(c, "hand_r", p, (1.5, 0.5, 0.0), 0.08, 0.25, 0.7, 0.9)


def cross_arms(c, p, k):
    hold(c, "wrist_r", p, (0.09, -0.13, 0.12))
    hold(c, "wrist_l", p, (-0.09, -0.1, 0.14))
    both(c, p, "elbow", (-0.6, -1.0, 0.0))
    both(c, p, "hand", (1.0, 0.0, 0.0))


def put_on_hat(c, p, k):
    on_head = (-0.1, 0.16, 0.02)
    keys = [(0.05, None), (0.25, (-0.1, -0.05, 0.22)), (0.45, (-0.11, 0.24, 0.07)), (0.6, on_head)]
    keys += [(0.75, on_head), (0.92, None)]
    move(c, "wrist_r", p, keys)
    move(c, "wrist_l", p, [(t, None if v is None else (-v[0], *v[1:])) for t, v in keys])
    both(c, p, "elbow", ELBOW_OUT, a=0.05, b=0.35, d=0.75, e=0.92)
    both(c, p, "hand", (1.0, 0.5, 0.0), a=0.05, b=0.35, d=0.75, e=0.92)


def cheer_up(c, p, k):
    both(c, p, "wrist", (-0.19, 0.33, 0.05), b=0.25)
    both(c, p, "hand", (0.0, 2.0, 0.0), b=0.25)
    shake = 0.025 * k.amp * env(p, 0.25, 0.3, 0.7, 0.75) * osc(p, k, 3.0)
    c["wrist_r"][:, 1] += shake
    c["wrist_l"][:, 1] += shake


def stagger(c, p, k):
    rng = k.rng()
    phase = rng.uniform(0, 1)
    e = env(p, 0.05, 0.2, 0.8, 0.95)
    # An irregular loop (out and back), so the performer ends where they started.
    sway = 0.07 * k.amp * osc(p, k, 0.9, phase) + 0.03 * osc(p, k, 2.1, 2 * phase)
    loop = ease((p - 0.05) / 0.9)
    side = rng.choice([-1.0, 1.0]) * 0.12 * np.sin(2 * np.pi * loop)
    path = np.stack([(sway + side) * e, 0.25 * k.amp * np.sin(np.pi * loop)], -1)
    c["root"][:, 0] += path[:, 0]
    c["root"][:, 2] += path[:, 1]
    c["root"][:, 1] -= 0.03 * e
    step_feet(c, p, path, steps=max(3, round(len(p) / k.fps * 1.6)))
    c["spine"][:, 1] += 0.2 * e * osc(p, k, 0.9, phase - 0.1)
    c["spine"][:, 0] += 0.15 * e
    c["yaw"] += 0.2 * e * osc(p, k, 0.5, phase)
    both(c, p, "wrist", (-0.24, -0.12, 0.08), a=0.05, b=0.25, d=0.8, e=0.95)


def fall(c, p, k):
    # Knees buckle, then the body topples about the feet; the timeline holds the end pose
    # and plays this backwards as an (unlabelled) getting-up.
    rng = k.rng()
    # Mostly sideways (and clear of a partner in front), a little forward or back.
    turn, roll = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.6), rng.uniform(-0.3, 0.3)
    add(c, "root", p, [(0.0, 0), (0.3, (0, -0.12, 0.02)), (0.5, (0, -0.2, 0.0))])
    add(c, "spine", p, [(0.1, 0), (0.35, (0.35, 0, 0)), (0.7, (0.1, 0, 0))])
    add(c, "tilt", p, [(0.3, 0), (0.75, (1.45, roll)), (0.85, (1.4, roll))])
    add(c, "yaw", p, [(0.15, 0.0), (0.6, turn)])
    add(c, "pivot", p, [(0.2, 0), (0.3, (0, 0, 0.07))])  # topple about the toes
    both(c, p, "wrist", (-0.15, -0.05, 0.25), a=0.25, b=0.5, d=1.0, e=1.01)
    add(c, "head", p, [(0.4, 0), (0.8, (-0.4, 0, 0))])


def touch_head(c, p, k):
    hold(c, "wrist_r", p, FOREHEAD)
    hold(c, "hand_r", p, (1.2, 1.0, 0.0))
    hold(c, "elbow_r", p, (-1.0, -0.3, 0.3))
    if k.rng().random() < 0.3:  # both hands
        hold(c, "wrist_l", p, (-FOREHEAD[0], *FOREHEAD[1:]), b=0.35)
        hold(c, "hand_l", p, (-1.2, 1.0, 0.0), b=0.35)
        hold(c, "elbow_l", p, (1.0, -0.3, 0.3), b=0.35)
    add(c, "head", p, [(0.1, 0), (0.3, (0.2, 0, 0)), (0.72, (0.2, 0, 0)), (0.9, 0)])
    c["head"][:, 1] += 0.08 * env(p) * osc(p, k, 0.6)


def touch_chest(c, p, k):
    hold(c, "wrist_r", p, CHEST)
    hold(c, "hand_r", p, (1.5, 0.4, 0.0))
    hunch = (0.3 * k.amp, 0, 0)
    add(c, "spine", p, [(0.1, 0), (0.3, hunch), (0.72, hunch), (0.9, 0)])
    add(c, "head", p, [(0.1, 0), (0.3, (0.2, 0, 0)), (0.72, (0.2, 0, 0)), (0.9, 0)])


def touch_back(c, p, k):
    hold(c, "wrist_r", p, LOWER_BACK)
    hold(c, "elbow_r", p, (-1.0, 0.0, -0.6))
    hold(c, "hand_r", p, (1.0, 0.0, 0.0))
    if k.rng().random() < 0.3:
        hold(c, "wrist_l", p, (-LOWER_BACK[0], *LOWER_BACK[1:]), b=0.35)
        hold(c, "elbow_l", p, (1.0, 0.0, -0.6), b=0.35)
    keys = [(0.1, 0), (0.3, (-0.15 * k.amp, 0.1, 0)), (0.72, (-0.15 * k.amp, 0.1, 0)), (0.9, 0)]
    add(c, "spine", p, keys)


def touch_neck(c, p, k):
    hold(c, "wrist_r", p, NAPE)
    hold(c, "elbow_r", p, (-0.5, 1.0, 0.5))
    hold(c, "hand_r", p, (1.0, 0.5, 0.0))
    add(c, "head", p, [(0.1, 0), (0.3, (0.25, 0, 0)), (0.72, (0.25, 0, 0)), (0.9, 0)])
    c["head"][:, 1] += 0.1 * env(p) * osc(p, k, 0.5)


# --- two-person actions: `c` is the actor, `o` the partner facing them ------------------------


def _step_in(c: Controls, p: np.ndarray, dz: float, a: float, b: float, d: float, e: float):
    """Step `dz` forward (negative: back) between phases a..b, and back again d..e."""
    keys = [(a, 0), (b, (0, 0, dz)), (d, (0, 0, dz)), (e, 0)]
    add(c, "root", p, keys)
    add(c, "ankle_l", p, keys)
    add(c, "ankle_r", p, [(min(t + 0.05, 1.0), v) for t, v in keys])  # one foot, then the other


def punch(c, o, p, k):
    cocked, hit = (-0.06, 0.0, 0.12), (-0.03, 0.05, 0.34)
    keys = [(0.1, None), (0.3, cocked), (0.42, hit), (0.52, cocked), (0.64, hit), (0.75, cocked)]
    move(c, "wrist_r", p, [*keys, (0.9, None)])
    hold(c, "wrist_l", p, (0.05, 0.0, 0.16), 0.1, 0.25, 0.8, 0.92)
    both(c, p, "elbow", ELBOW_DOWN, a=0.1, b=0.25, d=0.8, e=0.92)
    _step_in(c, p, 0.06, 0.15, 0.3, 0.8, 0.95)
    for t in (0.42, 0.64):  # the partner recoils at each hit
        add(o, "spine", p, [(t - 0.02, 0), (t + 0.04, (-0.2, 0.05, 0)), (t + 0.15, 0)])
        add(o, "head", p, [(t - 0.02, 0), (t + 0.03, (-0.3, 0, 0.2)), (t + 0.15, 0)])
    _step_in(o, p, -0.05, 0.42, 0.5, 0.8, 0.95)
    both(o, p, "wrist", (-0.05, 0.02, 0.15), a=0.3, b=0.42, d=0.8, e=0.95)


def kick_person(c, o, p, k):
    up = (-0.05, 0.22 * k.amp, 0.38)
    keys = [(0.15, None), (0.35, (-0.08, 0.1, -0.12)), (0.5, up), (0.65, (-0.075, 0.08, 0.05))]
    move(c, "ankle_r", p, [*keys, (0.8, None)])
    add(c, "spine", p, [(0.35, 0), (0.5, (-0.2, 0, 0)), (0.75, 0)])
    both(c, p, "wrist", (-0.2, -0.2, 0.08), a=0.15, b=0.35, d=0.65, e=0.85)
    add(o, "spine", p, [(0.48, 0), (0.58, (0.35, 0, 0)), (0.75, (0.3, 0, 0)), (0.92, 0)])
    both(o, p, "wrist", (-0.05, -0.2, 0.12), a=0.5, b=0.6, d=0.8, e=0.95)
    _step_in(o, p, -0.08, 0.5, 0.6, 0.85, 0.97)


def push(c, o, p, k):
    _step_in(c, p, 0.08, 0.2, 0.45, 0.75, 0.95)
    keys = [(0.15, None), (0.35, (-0.1, -0.08, 0.18)), (0.5, (-0.1, -0.06, 0.34))]
    keys += [(0.7, (-0.1, -0.06, 0.34)), (0.9, None)]
    move(c, "wrist_r", p, keys)
    move(c, "wrist_l", p, [(t, None if v is None else (-v[0], *v[1:])) for t, v in keys])
    both(c, p, "hand", (0.0, 1.5, 0.5), a=0.15, b=0.4, d=0.7, e=0.9)
    _step_in(o, p, -0.18 * k.amp, 0.45, 0.65, 0.8, 0.98)
    add(o, "spine", p, [(0.45, 0), (0.55, (-0.25, 0, 0)), (0.75, 0)])
    both(o, p, "wrist", (-0.2, -0.05, 0.1), a=0.45, b=0.55, d=0.7, e=0.9)


def hug(c, o, p, k):
    around = (0.06, -0.02, 0.3)
    for body, low in ((c, 0.0), (o, -0.08)):
        _step_in(body, p, 0.14, 0.1, 0.35, 0.8, 0.95)
        keys = [(0.1, None), (0.35, (-0.2, -0.02 + low, 0.25)), (0.5, (around[0], low, 0.3))]
        keys += [(0.8, (around[0], low, 0.3)), (0.95, None)]
        move(body, "wrist_r", p, keys)
        move(body, "wrist_l", p, [(t, None if v is None else (-v[0], *v[1:])) for t, v in keys])
        both(body, p, "elbow", (-1.0, 0.0, 0.0), a=0.1, b=0.35, d=0.8, e=0.95)
        add(body, "head", p, [(0.3, 0), (0.5, (0, 0, 0.3)), (0.8, (0, 0, 0.3)), (0.95, 0)])


def handshake(c, o, p, k):
    reach = (k.partner - 0.1) / 2 - 0.04
    shake = 0.025 * k.amp * env(p, 0.35, 0.4, 0.7, 0.75) * osc(p, k, 3.0)
    for body, x in ((c, -0.04), (o, 0.04)):
        _step_in(body, p, 0.05, 0.1, 0.3, 0.8, 0.95)
        hold(body, "wrist_r", p, (x, -0.2, reach), 0.1, 0.35, 0.75, 0.92)
        hold(body, "hand_r", p, (0.0, 0.0, 1.0), 0.1, 0.35, 0.75, 0.92)
        body["wrist_r"][:, 1] += shake


def give(c, o, p, k):
    reach = k.partner / 2 - 0.03
    near = (-0.05, -0.12, 0.15)
    out = (-0.03, -0.12, reach)
    move(c, "wrist_r", p, [(0.1, None), (0.3, near), (0.5, out), (0.65, out), (0.85, None)])
    keys = [(0.3, None), (0.5, (0.03, -0.12, reach)), (0.65, (0.03, -0.12, reach))]
    move(o, "wrist_r", p, [*keys, (0.85, (-0.05, -0.12, 0.15)), (0.98, None)])


# --- the catalogue ---------------------------------------------------------------------------

CATALOGUE: tuple[Action, ...] = (
    Action("drink water", 3.0, drink),
    Action("eat meal", 3.5, eat),
    Action("brush teeth", 3.5, brush_teeth),
    Action("brush hair", 3.0, brush_hair),
    Action("pick up", 2.8, pick_up, start="stand"),
    Action("throw", 2.2, throw, start="stand"),
    Action("sit down", 2.2, sit_down, start="stand", end="sit"),
    Action("stand up", 2.0, stand_up, start="sit", end="stand"),
    Action("clapping", 2.5, clap),
    Action("hand waving", 2.5, wave),
    Action("kicking something", 2.0, kick, start="stand"),
    Action("jump up", 2.0, jump, start="stand"),
    Action("hopping", 2.8, hop, start="stand"),
    Action("phone call", 3.5, phone_call),
    Action("pointing to something", 2.5, point),
    Action("check time", 2.5, check_time),
    Action("rub two hands", 2.8, rub_hands),
    Action("bow", 2.5, bow, start="stand"),
    Action("reach into pocket", 2.5, reach_into_pocket),
    Action("wipe face", 3.0, wipe_face),
    Action("salute", 2.2, salute),
    Action("cross hands in front", 2.8, cross_arms),
    Action("put on hat", 3.0, put_on_hat),
    Action("cheer up", 2.5, cheer_up),
    Action("staggering", 3.5, stagger, start="stand"),
    Action("falling down", 2.5, fall, start="stand", end="lie"),
    Action("touch head", 3.0, touch_head),
    Action("touch chest", 3.0, touch_chest),
    Action("touch back", 3.0, touch_back),
    Action("touch neck", 3.0, touch_neck),
    Action("punch other person", 2.5, punch, start="stand", two_person=True),
    Action("kick other person", 2.5, kick_person, start="stand", two_person=True),
    Action("push other person", 2.5, push, start="stand", two_person=True),
    Action("hugging", 3.2, hug, start="stand", two_person=True),
    Action("handshaking", 3.0, handshake, start="stand", two_person=True),
    Action("giving object", 3.0, give, start="stand", two_person=True),
)


# --- unlabelled fidgets between actions (background motion a detector must not fire on) -------


def look_around(c, p, k):
    turn = k.rng().uniform(-0.8, 0.8)
    add(c, "head", p, [(0.1, 0), (0.4, (0, 0, turn)), (0.7, (0, 0, turn)), (0.95, 0)])
    add(c, "spine", p, [(0.1, 0), (0.4, (0, 0, 0.3 * turn)), (0.7, (0, 0, 0.3 * turn)), (0.95, 0)])


def scratch(c, p, k):
    spots = [(-0.1, 0.12, 0.02), (0.1, -0.05, 0.06), (-0.05, -0.25, 0.1)]
    hold(c, "wrist_r", p, spots[k.rng().integers(len(spots))], 0.1, 0.35, 0.6, 0.9)


def shift_weight(c, p, k):
    dx = k.rng().choice([-1.0, 1.0]) * 0.03
    add(c, "root", p, [(0.1, 0), (0.5, (dx, -0.005, 0)), (0.9, 0)])


def adjust_clothes(c, p, k):
    both(c, p, "wrist", (-0.06, -0.22, 0.12), a=0.1, b=0.3, d=0.6, e=0.9)
    c["wrist_r"][:, 1] += 0.02 * env(p, 0.3, 0.35, 0.55, 0.6) * osc(p, k, 2.0)


FIDGETS: tuple[Action, ...] = (
    Action("look around", 2.0, look_around),
    Action("scratch", 1.5, scratch),
    Action("shift weight", 2.0, shift_weight),
    Action("adjust clothes", 1.8, adjust_clothes),
)
