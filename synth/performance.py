"""A performance: actions, posture transitions and idle motion on a timeline, as world joints.

The timeline places each scripted action after a pause, inserting what a real performer would
do in between: standing up before an action that needs standing, getting up after a fall,
the odd unlabelled fidget. Only scripted actions (and labelled transitions) become segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from synth.actions import CATALOGUE, FIDGETS, REST_POSES, Action, Perf, ease, seated
from synth.skeleton import Controls, mirror, mirror_vector, pose, rest
from synth.subjects import Subject

SEAT_HEIGHT = 0.46  # metres
POSTURE_RAMP = (0.15, 0.85)  # phases of sit down / stand up over which the pelvis moves
_BY_NAME = {a.name: a for a in CATALOGUE}


@dataclass
class Step:
    action: Action
    start: int
    phase: np.ndarray
    perf: Perf
    label: int | None  # 1-based class id; None: unlabelled motion


@dataclass
class Performance:
    joints: np.ndarray  # [T, B, 25, 3] world, metres, exact (no sensor noise)
    segments: list[tuple[int, int, int]]  # (label, start, end inclusive)
    people: list[Subject]  # B performers, actor first
    chair: tuple[float, float, float]  # seat centre x, z and facing yaw, behind the actor
    sits: bool  # whether the actor sits at some point (the chair must be there)
    fps: float


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, hz: tuple[float, float], n=3):
    """A smooth random signal with unit-ish amplitude: a few random sinusoids."""
    f, ph = rng.uniform(*hz, n), rng.uniform(0, 2 * np.pi, n)
    return np.sin(2 * np.pi * f[:, None] * t + ph[:, None]).sum(0) / np.sqrt(n)


def _base(n: int, person: Subject, sit: np.ndarray, k: Perf, rng: np.random.Generator):
    """Rest pose in the person's style, blended into sitting by `sit` [T], plus idle motion."""
    c = rest(n)
    wrist, elbow = REST_POSES[person.rest_style]
    c["wrist_r"][:], c["elbow_r"][:] = wrist, elbow
    c["wrist_l"][:], c["elbow_l"][:] = mirror_vector(wrist), mirror_vector(elbow)
    for channel, value in seated(k).items():
        c[channel] += sit[:, None] * (np.asarray(value) - c[channel])
    t = np.arange(n) / k.fps
    standing = 1.0 - 0.7 * sit
    c["root"][:, 0] += person.sway * standing * _smooth_noise(rng, t, (0.1, 0.4))
    c["root"][:, 2] += person.sway * standing * _smooth_noise(rng, t, (0.1, 0.4))
    breathing = 0.012 * np.sin(2 * np.pi * 0.25 * t)
    c["spine"][:, 0] += breathing + 0.02 * _smooth_noise(rng, t, (0.05, 0.2))
    c["head"][:, 0] += 0.06 * _smooth_noise(rng, t, (0.05, 0.3))
    c["head"][:, 2] += 0.1 * _smooth_noise(rng, t, (0.05, 0.3))
    c["yaw"] += 0.04 * _smooth_noise(rng, t, (0.02, 0.1))
    for side in "lr":
        for axis in range(3):
            c[f"wrist_{side}"][:, axis] += 0.01 * _smooth_noise(rng, t, (0.1, 0.5))
    return c


def _view(c: Controls, start: int, n: int) -> Controls:
    return {name: v[start : start + n] for name, v in c.items()}


def _to_world(joints: np.ndarray, position: np.ndarray, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return joints @ rot.T + position


class Timeline:
    """Steps placed one after another on the frame axis of one performance."""

    def __init__(self, subject: Subject, rng: np.random.Generator, fps: float, partner: float):
        self.subject, self.rng, self.fps = subject, rng, fps
        body = subject.body
        self.seat_dy = (SEAT_HEIGHT / body.height + 0.06) - body.pelvis_y
        self.partner = partner / body.height
        self.steps: list[Step] = []
        self.cursor = 0

    def frames(self, span: tuple[float, float]) -> int:
        return round(self.rng.uniform(*span) * self.fps)

    def perf(self) -> Perf:
        """A fresh performance of the subject: their style, varied a little each time."""
        rng, subject = self.rng, self.subject
        amp, rate = subject.amp * rng.uniform(0.9, 1.1), subject.rate * rng.uniform(0.9, 1.1)
        seed = int(rng.integers(2**31))
        return Perf(self.fps, amp, rate, seed, seat_dy=self.seat_dy, partner=self.partner)

    def act(self, action: Action, label: int | None, phase=None, perf: Perf | None = None) -> Perf:
        if phase is None:
            seconds = action.seconds * self.subject.speed * self.rng.uniform(0.85, 1.15)
            phase = np.linspace(0.0, 1.0, max(8, round(seconds * self.fps)))
        perf = perf or self.perf()
        self.steps.append(Step(action, self.cursor, phase, perf, label))
        self.cursor += len(phase)
        return perf

    def wait(self, span: tuple[float, float], fidgets: float = 0.0) -> None:
        """A pause; a long one holds an unlabelled fidget with chance `fidgets`."""
        gap = self.frames(span)
        if gap > 1.5 * self.fps and self.rng.random() < fidgets:
            self.cursor += gap // 3
            self.act(FIDGETS[self.rng.integers(len(FIDGETS))], None)
            gap -= gap // 3
        self.cursor += gap


def _plan(timeline: Timeline, script, posture: str, pause, fidgets, labels) -> None:
    """Schedule the script with the transitions it needs (see `perform`)."""
    for i, (action, label) in enumerate(script):
        if i:
            timeline.wait(pause, fidgets)
        for needed, name in (("stand", "stand up"), ("sit", "sit down")):
            if action.start == needed and posture != needed:
                timeline.act(_BY_NAME[name], labels.get(name))
                timeline.wait(pause, fidgets)
                posture = needed
        perf = timeline.act(action, label)
        if action.end == "lie":  # lie still, then get up: the fall played backwards
            lie, rise = timeline.frames((1.0, 2.5)), timeline.frames((2.0, 3.0))
            phase = np.concatenate([np.ones(lie), np.linspace(1.0, 0.0, rise)])
            timeline.act(action, None, phase, perf)
            posture = "stand"
        elif action.end:
            posture = action.end


def _sitting(steps: list[Step], n: int, start_posture: str) -> np.ndarray:
    """[T] in 0..1: how far the actor has sat down, following the sit/stand steps."""
    sit = np.full(n, 1.0 if start_posture == "sit" else 0.0)
    for s in steps:
        if s.action.name in ("sit down", "stand up"):
            w = ease((s.phase - POSTURE_RAMP[0]) / (POSTURE_RAMP[1] - POSTURE_RAMP[0]))
            up = s.action.name == "stand up"
            sit[s.start : s.start + len(w)] = 1.0 - w if up else w
            sit[s.start + len(w) :] = 0.0 if up else 1.0
    return sit


def _act_out(steps: list[Step], actor: Controls, other: Controls | None, mirrored: bool) -> None:
    """Apply each step's action to the controls, mirrored for a left-handed actor."""
    for s in steps:
        views = [_view(actor, s.start, len(s.phase))]
        if s.action.two_person:
            if other is None:
                raise ValueError(f"'{s.action.name}' needs a partner, but none was given")
            views.append(_view(other, s.start, len(s.phase)))
        for v in views if mirrored else ():
            mirror(v)
        s.action.fn(*views, s.phase, s.perf)
        for v in views if mirrored else ():
            mirror(v)


def perform(
    script: Sequence[tuple[Action, int | None]],
    subject: Subject,
    rng: np.random.Generator,
    *,
    partner: Subject | None = None,
    fps: float = 30.0,
    lead: tuple[float, float] = (0.3, 0.8),
    pause: tuple[float, float] = (0.8, 2.5),
    start_posture: str = "stand",
    facing: float = 0.0,
    fidgets: float = 0.0,
    transition_labels: dict[str, int] | None = None,
) -> Performance:
    """Act out `script` (action, label or None) in order, with pauses of `pause` seconds.

    `facing` is the actor's heading in the world (radians, 0 = +z); a partner stands facing the
    actor. `fidgets` is the chance that a pause holds an unlabelled fidget. Transitions the
    script did not ask for (sit down, stand up) carry `transition_labels[name]` if given.
    """
    distance = rng.uniform(0.85, 1.0)  # metres between the two pelvises
    timeline = Timeline(subject, rng, fps, distance)
    timeline.cursor = timeline.frames(lead)
    _plan(timeline, script, start_posture, pause, fidgets, transition_labels or {})
    n = timeline.cursor + timeline.frames(lead)
    steps = timeline.steps

    sit = _sitting(steps, n, start_posture)
    idle = timeline.perf()
    actor = _base(n, subject, sit, idle, rng)
    other = _base(n, partner, np.zeros(n), idle, rng) if partner else None
    _act_out(steps, actor, other, subject.left_handed)

    forward = np.array([np.sin(facing), 0.0, np.cos(facing)])
    offset = distance / 2 if partner else 0.0
    joints = [_to_world(pose(actor, subject.body), -offset * forward, facing)]
    if partner:
        joints.append(_to_world(pose(other, partner.body), offset * forward, facing + np.pi))
    seat = -(offset + 0.13 * subject.body.height + 0.03) * forward
    return Performance(
        joints=np.stack(joints, 1),
        segments=[
            (s.label, s.start, s.start + len(s.phase) - 1) for s in steps if s.label is not None
        ],
        people=[subject, partner] if partner else [subject],
        chair=(float(seat[0]), float(seat[2]), facing),
        sits=bool(sit.max() > 0),
        fps=fps,
    )
