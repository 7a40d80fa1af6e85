"""The person-centric crop (core.foreground): the box of what stands in front of the room."""

import dataclasses

import numpy as np
import pytest

from core.clip import ClipSpec, ClipSpecError, DepthPreprocessor
from core.foreground import MIN_SIDE, PAD, clip_box, crop_clip_mm, crop_clips, foreground

SPEC = ClipSpec(height=16, width=16, clip_len=4, clip_step=4, window=2, window_step=1)
ROOM_MM = 3000


def clip_with_person(rows=(20, 40), cols=(50, 60), frames=4, depth=2000) -> np.ndarray:
    clip = np.full((frames, 120, 160), ROOM_MM, np.uint16)
    clip[:, rows[0] : rows[1], cols[0] : cols[1]] = depth
    return clip


def test_foreground_is_what_is_clearly_nearer_than_the_room():
    reference = np.full((120, 160), ROOM_MM, np.uint16)
    clip = clip_with_person()
    clip[0, 0, 0] = ROOM_MM - 100  # within the margin (max(100 mm, 4 % of 3 m = 120 mm))
    clip[0, 0, 1] = 0  # no measurement
    fg = foreground(clip, reference, SPEC)
    assert fg[:, 20:40, 50:60].all()
    assert fg.sum() == 4 * 20 * 10


def test_an_unmeasured_room_pixel_counts_as_the_far_end_of_the_range():
    reference = np.zeros((120, 160), np.uint16)
    clip = np.full((1, 120, 160), SPEC.depth_max_mm - 150, np.uint16)  # within 4 % of 4.5 m
    clip[0, 5, 5] = 1000
    assert np.flatnonzero(foreground(clip, reference, SPEC)) == [5 * 160 + 5]


def test_box_is_the_padded_union_at_the_models_aspect_ratio():
    reference = np.full((120, 160), ROOM_MM, np.uint16)
    clip = clip_with_person()
    clip[2:, 40:50, 70:80] = 2000  # a limb in two of the four frames widens the box
    (r0, r1), (c0, c1) = clip_box(clip, reference, SPEC)
    # union rows 20..50, cols 50..80 (30 x 30), padded by PAD a side: 36 x 36, same centre
    side = round(30 * (1 + 2 * PAD))
    assert (r1 - r0, c1 - c0) == (side, side)
    assert (r0 + r1, c0 + c1) == (70, 130)


def test_noise_in_a_single_frame_does_not_widen_the_box():
    reference = np.full((120, 160), ROOM_MM, np.uint16)
    clip = clip_with_person()
    clip[1, 100:102, 0:2] = 1000  # in one frame only
    with_noise = clip_box(clip, reference, SPEC)
    assert with_noise == clip_box(clip_with_person(), reference, SPEC)


def test_box_moves_inside_the_frame_and_is_cut_to_it():
    reference = np.full((120, 160), ROOM_MM, np.uint16)
    clip = clip_with_person(rows=(0, 118), cols=(0, 20))  # taller than the frame once padded
    (r0, r1), (c0, c1) = clip_box(clip, reference, SPEC)
    assert (r0, r1) == (0, 120) and c0 == 0 and c1 - c0 == round(118 * (1 + 2 * PAD))


def test_crop_letterboxes_a_cut_box_and_falls_back_to_the_whole_frame():
    reference = np.full((120, 160), ROOM_MM, np.uint16)
    empty = np.full((4, 120, 160), ROOM_MM, np.uint16)
    whole = DepthPreprocessor(SPEC, 120, 160).to_millimetres(empty)
    np.testing.assert_array_equal(crop_clip_mm(empty, reference, SPEC), whole)
    np.testing.assert_array_equal(crop_clip_mm(empty, None, SPEC), whole)
    person = crop_clip_mm(clip_with_person(), reference, SPEC)
    assert person.shape == (4, 16, 16)
    # padded 24 x 12, grown to the model's square and to MIN_SIDE (30 px): rows 15..45, cols
    # 40..70 in 30/16-pixel blocks; the person (rows 20..40, cols 50..60) is output rows 3..13
    # and columns 5..10 (blocks it touches: the nearest surface wins), the room the rest
    assert clip_box(clip_with_person(), reference, SPEC) == ((15, 45), (40, 70))
    expected = np.full((16, 16), ROOM_MM, np.uint16)
    expected[3:14, 5:11] = 2000
    np.testing.assert_array_equal(person, np.broadcast_to(expected, person.shape))


def test_crop_clips_gives_each_grid_clip_its_own_box():
    reference = np.full((120, 160), ROOM_MM, np.uint16)
    video = np.concatenate([clip_with_person(), clip_with_person(cols=(100, 110), frames=3)])
    out = crop_clips(video, reference, SPEC)
    np.testing.assert_array_equal(out[:4], crop_clip_mm(video[:4], reference, SPEC))
    np.testing.assert_array_equal(out[4:], crop_clip_mm(video[4:], reference, SPEC))


def test_the_crop_needs_disjoint_clips():
    with pytest.raises(ClipSpecError, match="clip_step == clip_len"):
        ClipSpec(clip_len=4, clip_step=2, window=2, window_step=1, person_crop=True)
    with pytest.raises(ValueError, match="clip_step == clip_len"):
        crop_clips(np.zeros((8, 4, 4), np.uint16), None, ClipSpec(clip_len=4, clip_step=2))


def test_a_box_at_the_bottom_right_corner_moves_inside_and_keeps_its_size():
    reference = np.full((120, 160), ROOM_MM, np.uint16)
    clip = clip_with_person(rows=(80, 120), cols=(120, 160))  # 40 x 40 in the corner
    side = round(40 * (1 + 2 * PAD))  # padded beyond the frame, then moved back inside
    assert clip_box(clip, reference, SPEC) == ((120 - side, 120), (160 - side, 160))


def test_without_reference_or_foreground_a_clip_is_the_whole_frame_in_the_specs_fit():
    spec = dataclasses.replace(SPEC, fit="crop")  # not the crop's own letterbox ("pad")
    reference = np.full((120, 160), ROOM_MM, np.uint16)
    person = clip_with_person()
    whole = DepthPreprocessor(spec, 120, 160).to_millimetres(person)
    np.testing.assert_array_equal(crop_clip_mm(person, None, spec), whole)
    empty = np.full((4, 120, 160), ROOM_MM, np.uint16)
    empty[:, 30:32, 30:32] = ROOM_MM - 100  # nearer, but within the margin: not a person
    assert clip_box(empty, reference, spec) is None
    np.testing.assert_array_equal(
        crop_clip_mm(empty, reference, spec),
        DepthPreprocessor(spec, 120, 160).to_millimetres(empty),
    )


def test_a_reference_of_zeros_is_a_room_beyond_the_range():
    # 0 = no reading: the room lies beyond depth_max_mm, so anything valid and clearly nearer
    # than the range's far end is foreground, as against a reference at the far end
    clip = clip_with_person()
    far_end = np.full((120, 160), SPEC.depth_max_mm, np.uint16)
    box = clip_box(clip, np.zeros((120, 160), np.uint16), SPEC)
    assert box is not None and box == clip_box(clip, far_end, SPEC)


def test_a_one_frame_tail_clip_gets_its_own_box():
    reference = np.full((120, 160), ROOM_MM, np.uint16)
    video = np.concatenate([clip_with_person(), clip_with_person(cols=(100, 110), frames=1)])
    tail = crop_clips(video, reference, SPEC)[4:]
    assert clip_box(video[4:], reference, SPEC) is not None  # not the whole frame
    np.testing.assert_array_equal(tail, crop_clip_mm(video[4:], reference, SPEC))


@pytest.mark.parametrize(("height", "width"), [(12, 16), (16, 8)])
def test_the_box_has_the_models_aspect_ratio(height, width):
    spec = dataclasses.replace(SPEC, height=height, width=width)
    reference = np.full((120, 160), ROOM_MM, np.uint16)
    (r0, r1), (c0, c1) = clip_box(clip_with_person(rows=(30, 90), cols=(60, 90)), reference, spec)
    # each side is rounded to whole pixels: half a pixel each, the height's scaled to width
    assert abs((c1 - c0) - (r1 - r0) * width / height) <= 0.5 + 0.5 * width / height
    out = crop_clip_mm(clip_with_person(rows=(30, 90), cols=(60, 90)), reference, spec)
    assert out.shape == (4, height, width)


def test_a_tiny_foreground_is_shown_in_a_box_of_the_minimum_side():
    reference = np.full((120, 160), ROOM_MM, np.uint16)
    (r0, r1), (c0, c1) = clip_box(clip_with_person(rows=(60, 62), cols=(80, 82)), reference, SPEC)
    side = round(MIN_SIDE * 120)  # of the frame's shorter side; padding 2 px would give 2.4
    assert (r1 - r0, c1 - c0) == (side, side)
    assert (r0 + r1, c0 + c1) == (2 * 61, 2 * 81)  # around the foreground's centre


def test_a_reference_of_another_size_is_refused():
    with pytest.raises(ValueError, match="reference 60x80 is not the frames' size 120x160"):
        clip_box(clip_with_person(), np.full((60, 80), ROOM_MM, np.uint16), SPEC)


def standing_person(distance_m: float, centre_col: int) -> np.ndarray:
    """A 1.7 x 0.5 m person `distance_m` from a pinhole camera (fx = fy = 84 px: a D435's
    87-degree field of view across 160 columns), feet on the frame's lower part, in front of
    a wall at 4.4 m."""
    f = 84.0
    rows, cols = round(f * 1.7 / distance_m), round(f * 0.5 / distance_m)
    clip = np.full((4, 120, 160), 4400, np.uint16)
    top, left = 110 - rows, centre_col - cols // 2
    clip[:, top:110, left : left + cols] = round(distance_m * 1000)
    return clip


def person_rows(out: np.ndarray) -> int:
    """Output rows the person (nearer than the wall) reaches."""
    return int((out[0] < 4000).any(axis=1).sum())


def test_a_person_is_the_same_size_in_the_crop_wherever_they_stand():
    """The point of the crop: near or far, left or right, the network sees the person at one
    scale. Without it, a person twice as far is half as tall."""
    reference = np.full((120, 160), 4400, np.uint16)
    near, far = standing_person(2.0, 50), standing_person(3.8, 120)
    whole = [person_rows(crop_clip_mm(c, None, SPEC)) for c in (near, far)]
    cropped = [person_rows(crop_clip_mm(c, reference, SPEC)) for c in (near, far)]
    # the person is 1 / (1 + 2 PAD) of the box's height, whatever its distance: equal up to
    # the pixels rounding and the block reduction add (one output row)
    assert abs(cropped[0] - cropped[1]) <= 1
    assert cropped[0] >= round(SPEC.height / (1 + 2 * PAD)) - 1
    assert whole[0] - whole[1] > 1  # the whole frame shows them at two scales


def test_pixels_foreground_in_fewer_than_min_share_of_the_frames_do_not_widen_the_box():
    """Noise that makes pixels foreground in 3 of 10 frames (below MIN_SHARE = 0.4), all over
    the room, leaves the person's box as it was; in 4 of 10 it is the person's."""
    from core.foreground import MIN_SHARE

    spec = dataclasses.replace(SPEC, clip_len=10, clip_step=10)
    reference = np.full((120, 160), ROOM_MM, np.uint16)
    clean = clip_with_person(frames=10)
    noisy = clean.copy()
    rows, cols = np.meshgrid(np.arange(0, 120, 7), np.arange(0, 160, 7), indexing="ij")
    below = int(MIN_SHARE * 10) - 1  # 3 frames
    for k, (r, c) in enumerate(zip(rows.ravel(), cols.ravel(), strict=True)):
        frames = [(k + i) % 10 for i in range(below)]  # each pixel in its own 3 frames
        noisy[frames, r, c] = 1000
        noisy[frames, r, (c + 1) % 160] = 1000  # two pixels a row: MIN_PIXELS
    assert clip_box(noisy, reference, spec) == clip_box(clean, reference, spec)
    held = clean.copy()
    held[: below + 1, 100:110, 140:150] = 2000  # 4 of 10 frames: counts
    (_, r1), (_, c1) = clip_box(held, reference, spec)
    assert r1 >= 110 and c1 >= 150
