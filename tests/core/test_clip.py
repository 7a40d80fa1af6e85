import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clip import (
    FITS,
    ClipSpec,
    ClipSpecError,
    DepthPreprocessor,
    SourceSpan,
    TimestampError,
    TimestampResampler,
    clip_source_span,
    clips_span,
    fit_regions,
    frame_timestamps_us,
    num_clips,
    parse_size,
    preprocess_depth,
    resample_indices,
    video_clips,
    window_starts,
)
from core.limits import MAX_SIDE
from tests.helpers.depth_reference import reference_preprocess

# --- ClipSpec --------------------------------------------------------------------------------


def test_defaults_are_the_papers_timing():
    spec = ClipSpec()
    assert (spec.source_fps, spec.downsample, spec.clip_len, spec.clip_step) == (30.0, 3, 10, 10)
    assert (spec.window, spec.window_step) == (10, 5)
    assert spec.kept_fps == 10.0
    assert spec.clip_seconds == 1.0


def test_json_round_trip():
    spec = ClipSpec(height=96, width=128, mean=0.31, std=0.17, depth_max_mm=6000)
    text = spec.to_json()
    assert ClipSpec.from_json(text) == spec
    assert json.loads(text)["height"] == 96


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("downsample", 0, "downsample must be >= 1"),
        ("clip_len", 2.5, "clip_len must be an integer"),
        ("height", 0, "height must be in"),
        ("std", 0.0, "std must be positive"),
        ("mean", float("nan"), "mean must be finite"),
        ("source_fps", "30", "source_fps must be a number"),
        ("window", True, "window must be an integer"),
        ("depth_min_mm", 0, r"depth_min_mm must be in \[1, "),
    ],
)
def test_invalid_fields_say_which(field, value, message):
    with pytest.raises(ClipSpecError, match=message):
        ClipSpec(**{field: value})


def test_the_upper_bounds_are_allowed():
    """A side of MAX_SIDE pixels and a depth range up to 65534 mm are valid; one more is not."""
    assert ClipSpec(height=MAX_SIDE, width=MAX_SIDE).height == MAX_SIDE
    with pytest.raises(ClipSpecError, match=f"height must be in \\[1, {MAX_SIDE}\\]"):
        ClipSpec(height=MAX_SIDE + 1)
    assert ClipSpec(depth_max_mm=65534).depth_max_mm == 65534
    with pytest.raises(ClipSpecError, match="depth_max_mm must be in"):
        ClipSpec(depth_max_mm=65535)


def test_depth_range_must_be_ordered():
    with pytest.raises(ClipSpecError, match=r"depth_min_mm .* must be below"):
        ClipSpec(depth_min_mm=3000, depth_max_mm=3000)


def test_unknown_and_malformed_json_rejected():
    with pytest.raises(ClipSpecError, match="unknown clip spec field"):
        ClipSpec.from_dict({"height": 10, "colour": 3})
    with pytest.raises(ClipSpecError, match="not valid JSON"):
        ClipSpec.from_json("{height: 3")
    with pytest.raises(ClipSpecError, match="must be a JSON object"):
        ClipSpec.from_json("[1, 2]")


# --- preprocessing ---------------------------------------------------------------------------


@pytest.mark.parametrize("in_shape", [(48, 64), (37, 50), (12, 9), (16, 16)])
def test_preprocess_matches_per_pixel_reference(in_shape):
    rng = np.random.default_rng(0)
    spec = ClipSpec(height=16, width=16, depth_min_mm=400, depth_max_mm=5000, mean=0.3, std=0.2)
    frame = rng.integers(0, 6000, size=in_shape).astype(np.uint16)
    frame[rng.random(in_shape) < 0.3] = 0
    got = preprocess_depth(frame, spec)
    assert got.dtype == np.float32 and got.shape == (16, 16)
    np.testing.assert_allclose(got, reference_preprocess(frame, spec), rtol=1e-6, atol=1e-6)


def test_holes_never_average_into_depth():
    spec = ClipSpec(height=1, width=1, depth_min_mm=500, depth_max_mm=4000)
    block = np.array([[0, 2000], [0, 0]], np.uint16)  # three holes, one valid 2 m pixel
    assert preprocess_depth(block, spec)[0, 0] == pytest.approx(2000 / 4000)
    all_holes = np.zeros((2, 2), np.uint16)
    assert preprocess_depth(all_holes, spec)[0, 0] == 0.0


def test_out_of_range_is_invalid_not_clamped():
    spec = ClipSpec(height=1, width=3, depth_min_mm=500, depth_max_mm=4000)
    row = np.array([[100, 4001, 3000]], np.uint16)
    np.testing.assert_allclose(preprocess_depth(row, spec)[0], [0.0, 0.0, 0.75])


def test_depth_exactly_at_the_range_ends_is_valid():
    spec = ClipSpec(height=1, width=4, depth_min_mm=500, depth_max_mm=4000, mean=0.0, std=1.0)
    row = np.array([[499, 500, 4000, 4001]], np.uint16)  # just outside, the ends, just outside
    mm = DepthPreprocessor(spec, 1, 4).to_millimetres(row)
    np.testing.assert_array_equal(mm, [[0, 500, 4000, 0]])
    # mean 0, std 1: the normalized value is depth / depth_max_mm, 0 where invalid
    np.testing.assert_array_equal(preprocess_depth(row, spec), [[0.0, 500 / 4000, 1.0, 0.0]])


def test_batched_frames_keep_leading_dims():
    spec = ClipSpec(height=8, width=8)
    frames = np.full((2, 5, 24, 32), 1500, np.uint16)
    out = DepthPreprocessor(spec, 24, 32)(frames)
    assert out.shape == (2, 5, 8, 8)
    np.testing.assert_allclose(out, 1500 / spec.depth_max_mm)


def test_preprocess_rejects_wrong_dtype_and_size():
    spec = ClipSpec(height=8, width=8)
    pre = DepthPreprocessor(spec, 24, 32)
    with pytest.raises(ValueError, match="must be uint16"):
        pre(np.zeros((24, 32), np.float32))
    with pytest.raises(ValueError, match=r"must end in shape \(24, 32\)"):
        pre(np.zeros((24, 30), np.uint16))


def test_to_millimetres_keeps_nearest_valid_depth():
    spec = ClipSpec(height=1, width=2, depth_min_mm=500, depth_max_mm=4000)
    frame = np.array([[0, 900, 4500, 0]], np.uint16).repeat(2, axis=0)
    mm = DepthPreprocessor(spec, 2, 4).to_millimetres(frame)
    assert mm.dtype == np.uint16
    np.testing.assert_array_equal(mm, [[900, 0]])


# --- fitting other aspect ratios -------------------------------------------------------------


def test_fit_round_trips_validates_and_defaults_to_stretch():
    spec = ClipSpec(height=48, width=64, fit="pad")
    assert ClipSpec.from_json(spec.to_json()) == spec
    old = {k: v for k, v in spec.to_dict().items() if k != "fit"}  # a model.json before `fit`
    assert ClipSpec.from_dict(old).fit == "stretch"
    with pytest.raises(ClipSpecError, match="fit must be one of stretch, crop, pad, got 'zoom'"):
        ClipSpec(fit="zoom")


def test_person_crop_round_trips_validates_and_defaults_to_off():
    spec = ClipSpec(person_crop=True)  # the default clip_step == clip_len: one box per clip
    assert ClipSpec.from_json(spec.to_json()) == spec
    old = {k: v for k, v in spec.to_dict().items() if k != "person_crop"}  # an older model.json
    assert ClipSpec.from_dict(old).person_crop is False
    with pytest.raises(ClipSpecError, match="person_crop must be true or false, got 1"):
        ClipSpec(person_crop=1)
    with pytest.raises(ClipSpecError, match="person_crop needs clip_step == clip_len"):
        ClipSpec(clip_len=10, clip_step=5, person_crop=True)


@pytest.mark.parametrize(
    ("fit", "in_shape", "out_shape", "source", "target"),
    [
        ("crop", (480, 640), (64, 64), ((0, 480), (80, 560)), ((0, 64), (0, 64))),
        ("pad", (480, 640), (64, 64), ((0, 480), (0, 640)), ((8, 56), (0, 64))),
        ("crop", (424, 512), (48, 64), ((20, 404), (0, 512)), ((0, 48), (0, 64))),
        ("pad", (424, 512), (48, 64), ((0, 424), (0, 512)), ((0, 48), (3, 61))),
        ("crop", (480, 848), (96, 128), ((0, 480), (104, 744)), ((0, 96), (0, 128))),
        ("pad", (480, 848), (96, 128), ((0, 480), (0, 848)), ((12, 84), (0, 128))),
        ("stretch", (480, 848), (96, 128), ((0, 480), (0, 848)), ((0, 96), (0, 128))),
        ("crop", (240, 320), (48, 64), ((0, 240), (0, 320)), ((0, 48), (0, 64))),
    ],
)
def test_fit_regions_keep_the_aspect_ratio(fit, in_shape, out_shape, source, target):
    # e.g. pad 640 wide -> 64: height 480 * 64 / 640 = 48 rows, centred in 64: rows 8..56;
    # crop 424x512 to 3:4: 512 * 3 / 4 = 384 rows, centred: 20..404.
    assert fit_regions(fit, in_shape, out_shape) == (source, target)


def shapes(low=1, high=40):
    return st.tuples(st.integers(low, high), st.integers(low, high))


def random_frame(rng, shape, hole_rate=0.3):
    frame = rng.integers(0, 6000, size=shape).astype(np.uint16)
    frame[rng.random(shape) < hole_rate] = 0
    return frame


@pytest.mark.slow  # 0.4 CPU s
@settings(max_examples=60, deadline=None)
@given(fit=st.sampled_from(FITS), out=shapes(), seed=st.integers(0, 2**16), scale=st.integers(1, 3))
def test_a_frame_of_the_models_aspect_is_only_resized(fit, out, seed, scale):
    """Same aspect ratio (at the model's size or `scale` times it): every fit is stretch."""
    spec = ClipSpec(height=out[0], width=out[1], fit=fit, mean=0.3, std=0.2)
    frame = random_frame(np.random.default_rng(seed), (out[0] * scale, out[1] * scale))
    got = DepthPreprocessor(spec, *frame.shape)(frame)
    stretch = dataclasses.replace(spec, fit="stretch")
    np.testing.assert_array_equal(got, DepthPreprocessor(stretch, *frame.shape)(frame))
    # float32 vs float64 normalization: |error| <= a few ulp of 1 / std (0.2)
    np.testing.assert_allclose(got, reference_preprocess(frame, spec), rtol=1e-6, atol=1e-6)
    if scale == 1:  # at the model's size: validation and normalization only
        unit = spec.depth_to_unit(frame)
        np.testing.assert_array_equal(got, (unit - np.float32(0.3)) / np.float32(0.2))


@settings(max_examples=60, deadline=None)
@given(fit=st.sampled_from(("crop", "pad")), frame_shape=shapes(), out=shapes(1, 24),
       seed=st.integers(0, 2**16))  # fmt: skip
@pytest.mark.slow  # 0.3 CPU s
def test_crop_and_pad_match_a_per_pixel_reference(fit, frame_shape, out, seed):
    """crop = stretch of the centred crop; pad = stretch into the centred box, invalid bands."""
    spec = ClipSpec(height=out[0], width=out[1], fit=fit, depth_min_mm=400, depth_max_mm=5000)
    frame = random_frame(np.random.default_rng(seed), frame_shape)
    got = DepthPreprocessor(spec, *frame_shape)(frame)
    ((r0, r1), (c0, c1)), ((t0, t1), (l0, l1)) = fit_regions(fit, frame_shape, out)
    inner = ClipSpec(height=t1 - t0, width=l1 - l0, depth_min_mm=400, depth_max_mm=5000)
    expected = np.zeros(out, np.float32)  # invalid
    expected[t0:t1, l0:l1] = reference_preprocess(frame[r0:r1, c0:c1], inner)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)
    # The kept box has the frame's (pad) or the model's (crop) aspect ratio to within a pixel.
    h, w = (r1 - r0, c1 - c0) if fit == "crop" else (t1 - t0, l1 - l0)
    ref_h, ref_w = out if fit == "crop" else frame_shape
    assert abs(h * ref_w - w * ref_h) <= max(ref_h, ref_w)


@settings(max_examples=60, deadline=None)
@given(fit=st.sampled_from(FITS), frame_shape=shapes(2, 60), out=shapes(1, 24),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_only_valid_input_depth_reaches_the_output(fit, frame_shape, out, seed):
    """Every output pixel is invalid or the depth of a valid input pixel (never an average),
    and pad bands are invalid."""
    spec = ClipSpec(height=out[0], width=out[1], fit=fit, depth_min_mm=500, depth_max_mm=4500)
    frame = random_frame(np.random.default_rng(seed), frame_shape, hole_rate=0.5)
    mm = DepthPreprocessor(spec, *frame_shape).to_millimetres(frame)
    valid_in = frame[(frame >= 500) & (frame <= 4500)]
    assert np.isin(mm[mm != 0], valid_in).all()
    (t0, t1), (l0, l1) = fit_regions(fit, frame_shape, out)[1]
    band = np.ones(out, bool)
    band[t0:t1, l0:l1] = False
    assert (mm[band] == 0).all()


@settings(max_examples=60, deadline=None)
@given(fit=st.sampled_from(FITS), frame_shape=shapes(2, 60), out=shapes(1, 24),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_reduced_on_the_client_equals_the_server_on_raw_frames(fit, frame_shape, out, seed):
    """A client reduces frames to the model's size (to_millimetres); the server preprocesses
    them at that size: bit for bit what the server makes of the raw frame."""
    spec = ClipSpec(height=out[0], width=out[1], fit=fit, mean=0.37, std=0.11)
    frame = random_frame(np.random.default_rng(seed), (3, *frame_shape))
    raw = DepthPreprocessor(spec, *frame_shape)
    reduced = raw.to_millimetres(frame)
    assert reduced.shape == (3, *out)
    np.testing.assert_array_equal(DepthPreprocessor(spec, *out)(reduced), raw(frame))


# --- resampling ------------------------------------------------------------------------------


def stream_indices(timestamps, rate):
    resampler = TimestampResampler(rate)
    kept = []
    for i, t in enumerate(timestamps):
        for tick, frame in resampler.push(int(t), i):
            assert tick == len(kept)
            kept.append(frame)
    return np.array(kept, dtype=np.intp)


def test_constant_rate_keeps_every_third_frame():
    ts = frame_timestamps_us(30, 30.0)
    np.testing.assert_array_equal(resample_indices(ts, 10.0), np.arange(0, 30, 3))
    np.testing.assert_array_equal(stream_indices(ts, 10.0), np.arange(0, 30, 3))


@pytest.mark.parametrize("fps", [15, 60, 90])
def test_other_camera_rates_give_the_same_clock(fps):
    ts = frame_timestamps_us(fps * 2, fps)  # two seconds
    kept = resample_indices(ts, 10.0)
    np.testing.assert_allclose(ts[kept], np.arange(len(kept)) * 100_000, atol=1e6 / fps / 2)
    assert len(kept) == 20


def test_dropped_frames_repeat_the_nearest_one():
    ts = np.array([0, 33_333, 66_667, 300_000, 333_333])  # frames 100-266 ms dropped
    # ticks at 0, 100, 200, 300 ms: 100 ms is nearest to 66.7 ms, 200 ms to 300 ms.
    np.testing.assert_array_equal(resample_indices(ts, 10.0), [0, 2, 3, 3])
    np.testing.assert_array_equal(stream_indices(ts, 10.0), [0, 2, 3, 3])


def test_ties_go_to_the_earlier_frame():
    ts = np.array([0, 50_000, 150_000])  # tick 100 ms is 50 ms from both neighbours
    np.testing.assert_array_equal(resample_indices(ts, 10.0), [0, 1])
    np.testing.assert_array_equal(stream_indices(ts, 10.0), [0, 1])


def test_non_monotonic_timestamps_are_an_error():
    resampler = TimestampResampler(10.0)
    resampler.push(1000, "a")
    with pytest.raises(TimestampError, match="timestamps must increase: 1000 µs after 1000"):
        resampler.push(1000, "b")
    with pytest.raises(TimestampError, match="frame 2 at 5 µs after 10 µs"):
        resample_indices(np.array([0, 10, 5]), 10.0)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=1, max_value=400_000), min_size=0, max_size=80),
    start=st.integers(min_value=0, max_value=10**12),
    rate=st.sampled_from([5.0, 10.0, 15.0, 30.0, 7.5]),
)
def test_streaming_resampler_equals_offline(gaps, start, rate):
    ts = start + np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)
    offline = resample_indices(ts, rate)
    np.testing.assert_array_equal(stream_indices(ts, rate), offline)
    # Every tick took the nearest frame.
    period = 1e6 / rate
    ticks = ts[0] + np.round(np.arange(len(offline)) * period)
    nearest = np.abs(ts[None, :] - ticks[:, None]).min(axis=1)
    np.testing.assert_array_equal(np.abs(ts[offline] - ticks), nearest)


# --- index math ------------------------------------------------------------------------------


def test_num_clips_and_source_span():
    spec = ClipSpec()
    assert num_clips(9, spec) == 0
    assert num_clips(10, spec) == 1
    assert num_clips(29, spec) == 2
    assert num_clips(30, spec) == 3
    assert clip_source_span(spec, 0) == (0, 29)
    assert clip_source_span(spec, 2) == (60, 89)
    overlapping = ClipSpec(clip_step=5)
    starts, ends = clip_source_span(overlapping, np.arange(3))
    np.testing.assert_array_equal(starts, [0, 15, 30])
    np.testing.assert_array_equal(ends, [29, 44, 59])


def test_clips_span_in_frames_and_seconds():
    spec = ClipSpec(source_fps=30, downsample=3, clip_len=10, clip_step=10)
    # clips 1..2 are source frames 30..89; seconds end after the last frame's own 1/30 s
    assert clips_span(spec, 1, 2) == SourceSpan(30, 89, 1.0, 3.0)
    # a stream segment that starts 300 frames (10 s) after the stream's first frame
    assert clips_span(spec, 0, 0, offset_frames=300) == SourceSpan(300, 329, 10.0, 11.0)
    span = clips_span(ClipSpec(source_fps=15, downsample=1, clip_len=3, clip_step=2), 2, 2)
    assert (span.start_frame, span.end_frame) == (4, 6) and type(span.start_frame) is int
    assert (span.start_s, span.end_s) == (4 / 15, 7 / 15)


@pytest.mark.parametrize(
    ("n_clips", "expected"),
    [(0, []), (3, [0]), (10, [0]), (11, [0, 1]), (15, [0, 5]), (17, [0, 5, 7]), (20, [0, 5, 10])],
)
def test_window_starts(n_clips, expected):
    np.testing.assert_array_equal(window_starts(n_clips, 10, 5), expected)


def test_window_step_longer_than_window_rejected():
    with pytest.raises(ClipSpecError, match=r"window_step .* must not exceed window"):
        ClipSpec(window=4, window_step=5)
    with pytest.raises(ValueError, match="need 1 <= step <= window"):
        window_starts(10, 4, 5)


@given(n=st.integers(1, 300), window=st.integers(1, 20), data=st.data())
def test_windows_cover_every_clip_and_stay_inside(n, window, data):
    step = data.draw(st.integers(1, window))
    starts = window_starts(n, window, step)
    covered = np.zeros(n, bool)
    for s in starts:
        assert s >= 0 and (s + window <= n or n < window)
        covered[s : s + window] = True
    assert covered.all()


def test_video_clips_is_a_view_on_the_clip_grid():
    spec = ClipSpec(clip_len=4, clip_step=3)
    frames = np.arange(14 * 2).reshape(14, 2)  # kept frames with a feature axis
    clips = video_clips(frames, spec)
    assert clips.shape == (num_clips(14, spec), 4, 2) == (4, 4, 2)
    for c in range(4):
        np.testing.assert_array_equal(clips[c], frames[c * 3 : c * 3 + 4])
    assert np.shares_memory(clips, frames)
    assert video_clips(frames[:3], spec).shape == (0, 4, 2)


def test_parse_size():
    assert parse_size("96x128") == (96, 128)
    assert parse_size("64X64") == (64, 64)
    with pytest.raises(ValueError, match="must look like HxW"):
        parse_size("64by64")
    with pytest.raises(ValueError, match="at least 16x16"):
        parse_size("8x32", minimum=16)
