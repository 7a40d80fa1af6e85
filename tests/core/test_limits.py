"""The shared limits: one frame-rate rule for hello, uploads, sources and clip specs."""

import math

import pytest

from core.clip import ClipSpec, ClipSpecError
from core.limits import MAX_FPS, fps_message, valid_fps


@pytest.mark.parametrize("fps", [1e-3, 30, MAX_FPS])
def test_valid_fps(fps):
    assert valid_fps(fps)


@pytest.mark.parametrize("fps", [0, -1, MAX_FPS + 0.001, math.inf, math.nan])
def test_invalid_fps(fps):
    assert not valid_fps(fps)


def test_clip_spec_uses_the_same_rule_and_words():
    with pytest.raises(ClipSpecError, match=r"source_fps must be in \(0, 1000\], got 1001"):
        ClipSpec(source_fps=1001)
    assert fps_message(0) == "fps must be in (0, 1000], got 0"
