"""Performers: body size, handedness, pace, motion size and clothing, fixed per subject id."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.skeleton import Body

DEFAULT_DIFFICULTY = 0.5  # the benchmark's default setting of the difficulty knob (0..1)
REST_STYLES = ("hang", "front", "hips", "behind")  # where the hands rest while idle

Color = tuple[float, float, float]


@dataclass(frozen=True)
class Subject:
    id: int
    body: Body
    left_handed: bool
    speed: float  # duration multiplier of actions (> 1: slower)
    amp: float  # motion size multiplier
    rate: float  # repetition frequency multiplier (waving, brushing, ...)
    sway: float  # idle sway amplitude (units of body height)
    rest_style: str
    shirt: Color
    pants: Color
    skin: Color
    hair: Color
    shoes: Color
    long_sleeves: bool


def _hsv(h: float, s: float, v: float) -> Color:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return tuple(float(x) for x in v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1))


SKIN_TONES = ((0.96, 0.80, 0.69), (0.87, 0.67, 0.52), (0.68, 0.47, 0.33), (0.42, 0.27, 0.18))
HAIR_COLORS = ((0.08, 0.06, 0.05), (0.3, 0.18, 0.1), (0.75, 0.6, 0.35), (0.6, 0.6, 0.6))


def subject_profile(subject: int, difficulty: float = DEFAULT_DIFFICULTY) -> Subject:
    """The performer with id `subject` (>= 1); `difficulty` in [0, 1] widens how people differ.

    The random draws depend on the id only, so a subject is the same person at every
    difficulty, just more or less unusual.
    """
    if subject < 1:
        raise ValueError(f"subject id must be >= 1, got {subject}")
    rng = np.random.default_rng([0x5B7EC7, subject])
    z = rng.standard_normal(9)
    spread = 0.5 + difficulty
    body = Body(
        height=float(np.clip(1.70 + 0.08 * spread * z[0], 1.45, 1.98)),
        girth=float(np.clip(1.0 + 0.12 * spread * z[1], 0.8, 1.35)),
        arm=float(1.0 + 0.025 * spread * z[2]),
        leg=float(1.0 + 0.025 * spread * z[3]),
        torso=float(1.0 + 0.03 * spread * z[4]),
    )
    u = rng.random(12)
    return Subject(
        id=subject,
        body=body,
        left_handed=bool(u[0] < 0.12),
        speed=float(np.exp(0.15 * spread * z[5])),
        amp=float(np.clip(1.0 + 0.1 * spread * z[6], 0.75, 1.3)),
        rate=float(np.exp(0.12 * spread * z[7])),
        sway=float(0.004 + 0.006 * u[1]),
        rest_style=REST_STYLES[int(u[2] * len(REST_STYLES))],
        shirt=_hsv(u[3], 0.2 + 0.7 * u[4], 0.2 + 0.75 * u[5]),
        pants=_hsv(u[6], 0.1 + 0.6 * u[7], 0.1 + 0.45 * u[8]),
        skin=SKIN_TONES[int(u[9] * len(SKIN_TONES))],
        hair=HAIR_COLORS[int(u[10] * len(HAIR_COLORS))],
        shoes=(0.1, 0.1, 0.1) if z[8] < 0.5 else (0.85, 0.85, 0.85),
        long_sleeves=bool(u[11] < 0.5),
    )
