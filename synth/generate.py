"""Entry points: NTU-like classification samples, PKU-like detection videos, class sets, workers.

Class sets are tuples of indices into `ACTIONS`; a class id (NTU's Aaaa, PKU-MMD's label) is
1 + the position within the chosen set. The source set (classification, NTU-like) and the
target set (detection, PKU-like) overlap only in part, as NTU RGB+D and PKU-MMD do.

Determinism: the performance depends on the arguments except `camera`, so the three views of
one (seed, subject, action, setup, replication) film the same motion; camera jitter, lighting
and sensor noise also depend on `camera`.

`classification_shot` and `detection_shot` stop before filming: the `Shot` they return films
the recording (`classification_sample`, `detection_video`) and gives, cheaply, the empty-room
reference its camera would capture (`Shot.reference`, for the person-centric crop).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from synth.actions import CATALOGUE
from synth.performance import SEAT_HEIGHT, Performance, perform
from synth.recording import Recording, record
from synth.render import Sensor
from synth.scene import Camera, Room, chair, empty_room_mm, make_camera, make_room
from synth.subjects import DEFAULT_DIFFICULTY, Subject, subject_profile

ACTIONS: tuple[str, ...] = tuple(a.name for a in CATALOGUE)

# Target-only classes (never seen in the source), and classes both sets share.
TARGET_ONLY = ("hopping", "rub two hands", "salute", "touch neck", "handshaking")
SHARED = (
    "drink water",
    "brush teeth",
    "pick up",
    "sit down",
    "stand up",
    "hand waving",
    "phone call",
    "pointing to something",
    "wipe face",
    "cross hands in front",
    "staggering",
    "falling down",
    "touch head",
    "touch chest",
    "push other person",
)
SOURCE_CLASSES: tuple[int, ...] = tuple(i for i, a in enumerate(ACTIONS) if a not in TARGET_ONLY)
TARGET_CLASSES: tuple[int, ...] = tuple(
    i for i, a in enumerate(ACTIONS) if a in SHARED or a in TARGET_ONLY
)

DEPTH_SIZE = (96, 128)  # (H, W)
COLOR_SIZE = (120, 160)
NUM_SUBJECTS = 40  # partners are drawn from this pool


class SynthError(ValueError):
    """A bad argument to the generator."""


def class_names(classes: Sequence[int]) -> list[str]:
    """Names of a class set, in class-id order (id = 1 + position)."""
    _check_classes(classes)
    return [ACTIONS[i] for i in classes]


def _check_classes(classes: Sequence[int]) -> None:
    if not classes:
        raise SynthError("the class set is empty")
    for i in classes:
        if not isinstance(i, (int, np.integer)) or not 0 <= i < len(ACTIONS):
            last = len(ACTIONS) - 1
            raise SynthError(f"class set entries are indices into ACTIONS (0..{last}), got {i!r}")
    if len(set(classes)) != len(classes):
        raise SynthError("the class set has duplicates")


def _check_common(subject: int, camera: int, difficulty: float, size, color_size) -> None:
    if subject < 1:
        raise SynthError(f"subject must be >= 1, got {subject}")
    if camera not in (1, 2, 3):
        raise SynthError(f"camera must be 1, 2 or 3, got {camera}")
    if not 0.0 <= difficulty <= 1.0:
        raise SynthError(f"difficulty must be in [0, 1], got {difficulty}")
    for name, (h, w) in (("size", size), ("color_size", color_size)):
        if h < 16 or w < 16:
            raise SynthError(f"{name} must be at least 16x16, got {h}x{w}")


def _partner(subject: int, rng: np.random.Generator, difficulty: float) -> Subject:
    other = int(rng.integers(1, NUM_SUBJECTS))
    return subject_profile(other + (other >= subject), difficulty)


@dataclass(frozen=True)
class Shot:
    """One sample before filming: a performance, the room it plays in and the camera that
    films it. `film()` renders the recording; `reference()` is the same camera's view of the
    empty room (one ray cast, no people rendered)."""

    performance: Performance
    room: Room
    camera: Camera
    rng: np.random.Generator  # the render's randomness, after the camera's jitter was drawn
    difficulty: float
    view: int  # camera 1..3
    setup: int
    replication: int = 1

    def film(self) -> Recording:
        """The recording; the same every call (the render draws from a copy of `rng`)."""
        return record(
            self.performance, self.room, self.camera, copy.deepcopy(self.rng), self.difficulty,
            view=self.view, setup=self.setup, replication=self.replication,
        )  # fmt: skip

    def reference(self) -> np.ndarray:
        """uint16 [H, W] mm (0 = no reading): the camera's empty-room reference, noise-free,
        in the sensor's valid range, at the depth frames' size."""
        sensor = Sensor.for_difficulty(self.difficulty)
        return empty_room_mm(self.room, self.camera, (sensor.min_depth, sensor.max_depth))


def _shot(
    perf: Performance,
    setup: int,
    camera: int,
    difficulty: float,
    size: tuple[int, int],
    color_size: tuple[int, int],
    render_seed: list[int],
    replication: int = 1,
    depth_fov: tuple[float, float] | None = None,
) -> Shot:
    rng = np.random.default_rng(render_seed)
    room = make_room(setup, difficulty)
    if perf.sits or len(perf.people) == 1:  # a chair behind single performers, used or not
        x, z, yaw = perf.chair
        room = room.with_boxes(chair(x, z, yaw, SEAT_HEIGHT, (0.35, 0.25, 0.2)))
    cam = make_camera(camera, setup, rng, difficulty, size, color_size, room, depth_fov)
    return Shot(perf, room, cam, rng, difficulty, camera, setup, replication)


def classification_shot(
    action: int,
    subject: int,
    camera: int,
    replication: int = 1,
    setup: int = 1,
    seed: int = 0,
    size: tuple[int, int] = DEPTH_SIZE,
    color_size: tuple[int, int] = COLOR_SIZE,
    difficulty: float = DEFAULT_DIFFICULTY,
    classes: Sequence[int] = SOURCE_CLASSES,
    fps: float = 30.0,
    depth_fov: tuple[float, float] | None = None,
) -> Shot:
    """One action (class id `action`, 1-based within `classes`), about 2-4 s, NTU-style.

    Replication 1 faces camera 2, replication 2 faces camera 3 (as in NTU RGB+D); two-person
    actions stand side-on to camera 1. `depth_fov`: a camera profile's (horizontal, vertical)
    field of view (`synth.cameras`); None keeps square pixels at the Kinect v2's horizontal one.
    """
    _check_classes(classes)
    _check_common(subject, camera, difficulty, size, color_size)
    if not 1 <= action <= len(classes):
        raise SynthError(f"action must be a class id in 1..{len(classes)}, got {action}")
    if replication not in (1, 2):
        raise SynthError(f"replication must be 1 or 2, got {replication}")
    if setup < 1:
        raise SynthError(f"setup must be >= 1, got {setup}")
    index = int(classes[action - 1])
    act = CATALOGUE[index]
    key = [seed, 0xC1A55, setup, subject, index, replication]
    rng = np.random.default_rng(key)
    person = subject_profile(subject, difficulty)
    partner = _partner(subject, rng, difficulty) if act.two_person else None
    jitter = np.radians(rng.uniform(-1, 1) * 10 * (0.5 + difficulty))
    facing = (np.pi / 2 if act.two_person else np.pi / 4) * (1 if replication == 1 else -1)
    if act.start == "any":
        posture = "sit" if rng.random() < 0.3 else "stand"
    else:
        posture = "sit" if act.start == "sit" else "stand"
    perf = perform(
        [(act, action)],
        person,
        rng,
        partner=partner,
        fps=fps,
        lead=(0.2, 0.6),
        start_posture=posture,
        facing=facing + jitter,
    )
    return _shot(
        perf, setup, camera, difficulty, size, color_size, [*key, camera], replication, depth_fov
    )


def classification_sample(*args: Any, **kwargs: Any) -> Recording:
    """`classification_shot(...)` (same arguments), filmed."""
    return classification_shot(*args, **kwargs).film()


def detection_shot(
    seed: int,
    subject: int,
    camera: int,
    n_actions: int = 20,
    classes: Sequence[int] = TARGET_CLASSES,
    size: tuple[int, int] = DEPTH_SIZE,
    color_size: tuple[int, int] = COLOR_SIZE,
    difficulty: float = DEFAULT_DIFFICULTY,
    setup: int | None = None,
    interactions: bool | None = None,
    fps: float = 30.0,
    depth_fov: tuple[float, float] | None = None,
) -> Shot:
    """A long PKU-MMD-style video: `n_actions` actions from `classes` with pauses between.

    Pauses hold idle motion, unlabelled fidgets and unlabelled transitions (getting up after
    a fall; sitting down or standing up when those are not classes). `interactions`: whether a
    second person is present for two-person classes (None: drawn, one video in four).
    `depth_fov` as in `classification_sample`.
    """
    _check_classes(classes)
    _check_common(subject, camera, difficulty, size, color_size)
    if not 1 <= n_actions <= 200:
        raise SynthError(f"n_actions must be in 1..200, got {n_actions}")
    rng = np.random.default_rng([seed, 0xDE7EC7, subject])
    setup = int(rng.integers(1, 18)) if setup is None else setup
    if setup < 1:
        raise SynthError(f"setup must be >= 1, got {setup}")
    pairs = [i for i in classes if CATALOGUE[i].two_person]
    if interactions is None:  # one video in four, or every video if the set has only pairs
        interactions = bool(pairs) and (len(pairs) == len(classes) or rng.random() < 0.25)
    pool = [i for i in classes if interactions or not CATALOGUE[i].two_person]
    if not pool:
        raise SynthError("no single-person class in the set and interactions are off")
    drawn = np.concatenate([rng.permutation(pool) for _ in range(n_actions // len(pool) + 1)])
    label = {int(i): n + 1 for n, i in enumerate(classes)}
    script = [(CATALOGUE[i], label[int(i)]) for i in drawn[:n_actions]]
    transitions = {
        name: label[ACTIONS.index(name)]
        for name in ("sit down", "stand up")
        if ACTIONS.index(name) in label
    }
    person = subject_profile(subject, difficulty)
    partner = _partner(subject, rng, difficulty) if interactions else None
    spread = 0.5 + difficulty
    facing = (np.pi / 2 * rng.choice([-1, 1])) if partner else 0.0
    perf = perform(
        script,
        person,
        rng,
        partner=partner,
        fps=fps,
        lead=(1.0, 2.0),
        pause=(0.8, 2.5),
        facing=facing + rng.uniform(-0.3, 0.3) * spread,
        fidgets=0.2 + 0.4 * difficulty,
        transition_labels=transitions,
    )
    render_seed = [seed, 0xF11, subject, camera]
    return _shot(perf, setup, camera, difficulty, size, color_size, render_seed, 1, depth_fov)


def detection_video(*args: Any, **kwargs: Any) -> Recording:
    """`detection_shot(...)` (same arguments), filmed."""
    return detection_shot(*args, **kwargs).film()


# --- running many jobs -------------------------------------------------------------------------


def _init_worker() -> None:
    try:  # jobs that write videos use OpenCV: one thread each, the processes share the cores
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def _call(job: tuple[Callable, dict]):
    fn, kwargs = job
    return fn(**kwargs)


def generate_many(
    fn: Callable,
    jobs: Iterable[dict],
    workers: int = 1,
    desc: str | None = None,
    progress: bool = True,
) -> Iterator:
    """Yield `fn(**job)` for each job, in order, computed by `workers` processes.

    `fn` must be a module-level function. Keep its result small (e.g. let it write the files
    and return a path): results travel between processes, and at most 2 x workers are held.
    """
    jobs = list(jobs)
    with tqdm(total=len(jobs), desc=desc, disable=not progress, unit="job") as bar:
        if workers <= 1:
            for job in jobs:
                yield fn(**job)
                bar.update()
            return
        with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
            pending: deque[Future] = deque()
            for job in jobs:
                pending.append(pool.submit(_call, (fn, job)))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
                    bar.update()
            while pending:
                yield pending.popleft().result()
                bar.update()
