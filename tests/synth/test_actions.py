import numpy as np
import pytest

from synth.actions import CATALOGUE, FIDGETS, Perf, track
from synth.skeleton import Body, pose, rest

BODY = Body()


def _run(action, n=90):
    """Controls of the actor (and partner) after the action, and the untouched base."""
    people = [rest(n) for _ in range(2 if action.two_person else 1)]
    base = [{k: v.copy() for k, v in c.items()} for c in people]
    action.fn(*people, np.linspace(0, 1, n), Perf(seed=3))
    return people, base


def test_track_hits_its_keys_and_holds_outside():
    p = np.array([0.0, 0.2, 0.5, 0.8, 1.0])
    out = track(p, [(0.2, 1.0), (0.8, 3.0)])
    np.testing.assert_allclose(out, [1.0, 1.0, 2.0, 3.0, 3.0])
    vec = track(p, [(0.2, (0, 0, 0)), (0.8, (1, 2, 3))], (3,))
    np.testing.assert_allclose(vec[2], (0.5, 1.0, 1.5))


@pytest.mark.parametrize("action", CATALOGUE + FIDGETS, ids=lambda a: a.name)
def test_action_moves_the_body_and_returns_to_its_base(action):
    people, base = _run(action)
    moved = max(
        np.abs(pose(c, BODY) - pose(b, BODY)).max() for c, b in zip(people, base, strict=True)
    )
    assert moved > 0.04, f"{action.name} barely moves ({moved:.3f} m)"
    for c, b in zip(people, base, strict=True):
        for frame in (0, -1):
            if frame == -1 and action.end is not None:
                continue  # posture changes end elsewhere (the timeline blends the posture)
            for channel in c:
                np.testing.assert_allclose(c[channel][frame], b[channel][frame], atol=1e-6)
        assert all(np.isfinite(v).all() for v in c.values())


def test_hand_actions_differ_where_the_hand_goes():
    """Drink, brush teeth and phone call bring the right hand to the head, to different spots."""
    ends = {}
    for name in ("drink water", "brush teeth", "phone call"):
        action = next(a for a in CATALOGUE if a.name == name)
        (c,), _ = _run(action)
        ends[name] = pose(c, BODY)[45, 11]  # HandRight mid-action
    head = pose(rest(1), BODY)[0, 3]
    for name, hand in ends.items():
        assert np.linalg.norm(hand - head) < 0.25, name
    assert np.linalg.norm(ends["phone call"] - ends["drink water"]) > 0.05
    # The phone is held at the side of the head, the cup in front of the mouth.
    assert ends["phone call"][0] < ends["drink water"][0]
