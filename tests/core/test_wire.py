import dataclasses
import json
import math
import struct
import zlib

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clip import ClipSpec
from core.depthfiles import png_size
from core.wire import (
    HEADER,
    MAX_CONTROL_BYTES,
    MAX_JSON_DEPTH,
    FrameTooLarge,
    Hello,
    MessageTooLarge,
    Ready,
    WireError,
    decode_image,
    encode_image,
    json_depth,
    pack_frame,
    parse_hello,
    parse_json,
    parse_ready,
    unpack_header,
)

HELLO = {
    "type": "hello",
    "protocol": 1,
    "camera_id": "room-1",
    "width": 64,
    "height": 48,
    "fps": 30,
    "depth_units": 0.001,
    "encoding": "raw",
}


def image(h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 65536, (h, w)).astype(np.uint16)


def test_header_is_little_endian_uint64_uint32():
    message = pack_frame(2**40 + 5, 7, image())
    assert message[:12] == (2**40 + 5).to_bytes(8, "little") + (7).to_bytes(4, "little")
    assert HEADER.size == 12
    t, i, payload = unpack_header(message)
    assert (t, i, len(payload)) == (2**40 + 5, 7, 48 * 64 * 2)


@pytest.mark.parametrize("encoding", ["raw", "zstd", "png"])
@given(h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 2**16))
@settings(max_examples=20, deadline=None)
def test_encodings_round_trip(encoding, h, w, seed):
    img = image(h, w, seed)
    out = decode_image(encode_image(img, encoding), encoding, [(h, w)])
    assert out.dtype == np.uint16 and np.array_equal(out, img)


def test_raw_is_the_little_endian_pixels():
    img = image(2, 3)
    assert encode_image(img, "raw") == b"".join(int(v).to_bytes(2, "little") for v in img.flat)


def test_decode_picks_the_size_the_payload_has():
    small = image(8, 8)
    for encoding in ("raw", "zstd", "png"):
        out = decode_image(encode_image(small, encoding), encoding, [(48, 64), (8, 8)])
        assert out.shape == (8, 8)


def test_raw_of_the_wrong_size_is_a_bad_request():
    with pytest.raises(WireError, match="not a uint16 image of 64x48") as e:
        decode_image(b"\0" * 101, "raw", [(48, 64)])
    assert not isinstance(e.value, FrameTooLarge)


def test_raw_larger_than_allowed_is_too_large():
    with pytest.raises(FrameTooLarge, match="exceeds 6144"):
        decode_image(b"\0" * 6146, "raw", [(48, 64)])


def test_zstd_bomb_is_refused_before_inflating():
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (1 << 24))
    assert len(bomb) < 1000
    with pytest.raises(FrameTooLarge, match="declares 16777216 bytes"):
        decode_image(bomb, "zstd", [(48, 64)])


def test_zstd_without_declared_size_is_capped_while_inflating():
    stream = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (1 << 20))
    with pytest.raises(WireError, match="inflates past 6144"):
        decode_image(stream, "zstd", [(48, 64)])


def test_corrupt_zstd_is_a_bad_request():
    with pytest.raises(WireError, match="zstd"):
        decode_image(b"definitely not zstd", "zstd", [(48, 64)])
    good = encode_image(image(), "zstd")
    with pytest.raises(WireError):
        decode_image(good[: len(good) // 2], "zstd", [(48, 64)])


def _png(width, height, bit_depth, color_type, idat=b""):
    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_header_is_read_without_decoding():
    assert png_size(_png(640, 480, 16, 0)) == (480, 640, 16, 0)


def test_png_of_a_huge_declared_size_is_refused_before_decoding():
    with pytest.raises(FrameTooLarge, match="40000x40000"):
        decode_image(_png(40000, 40000, 16, 0), "png", [(48, 64)])


def test_png_must_be_16_bit_grayscale():
    import cv2

    _ok, rgb8 = cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(WireError, match="16-bit grayscale, got bit depth 8, color type 2"):
        decode_image(rgb8.tobytes(), "png", [(48, 64)])


def test_corrupt_and_truncated_png_are_bad_requests():
    with pytest.raises(WireError, match="not a PNG"):
        decode_image(b"GIF89a" + b"\0" * 40, "png", [(48, 64)])
    good = encode_image(image(), "png")
    with pytest.raises(WireError, match="corrupt or truncated"):
        decode_image(good[: len(good) // 2], "png", [(48, 64)])
    with pytest.raises(WireError, match="corrupt or truncated"):
        decode_image(_png(64, 48, 16, 0, idat=b"garbage"), "png", [(48, 64)])


def test_png_of_another_small_size_is_a_bad_request_not_too_large():
    png = encode_image(image(10, 10), "png")
    with pytest.raises(WireError, match="PNG is 10x10, expected 64x48") as e:
        decode_image(png, "png", [(48, 64)])
    assert not isinstance(e.value, FrameTooLarge)


def test_unknown_encoding():
    with pytest.raises(WireError, match="unknown encoding 'jpeg'"):
        decode_image(b"xx", "jpeg", [(48, 64)])
    with pytest.raises(WireError, match="unknown encoding"):
        encode_image(image(), "jpeg")


def test_encode_refuses_non_uint16():
    with pytest.raises(WireError, match="uint16"):
        encode_image(np.zeros((4, 4), np.float32))


def test_truncated_header():
    with pytest.raises(WireError, match="shorter than its 12-byte header"):
        unpack_header(b"\0" * 12)


def test_parse_json_errors():
    with pytest.raises(WireError, match="not valid JSON"):
        parse_json("{nope")
    with pytest.raises(WireError, match="JSON object"):
        parse_json("[1]")
    with pytest.raises(WireError, match="string 'type'"):
        parse_json('{"type": 3}')
    assert parse_json('{"type": "end"}') == {"type": "end"}


def test_parse_json_caps_size_in_utf8_bytes():
    pad = MAX_CONTROL_BYTES - len('{"type": "end", "p": ""}')
    assert parse_json('{"type": "end", "p": "%s"}' % ("x" * pad))["type"] == "end"
    with pytest.raises(MessageTooLarge, match=f"exceeds {MAX_CONTROL_BYTES}"):
        parse_json('{"type": "end", "p": "%s"}' % ("x" * (pad + 1)))
    with pytest.raises(MessageTooLarge):  # half as many characters, each two bytes
        parse_json('{"type": "end", "p": "%s"}' % ("é" * (pad // 2 + 1)))
    with pytest.raises(MessageTooLarge):
        parse_json(b" " * (MAX_CONTROL_BYTES + 1))
    assert not issubclass(MessageTooLarge, FrameTooLarge)
    assert issubclass(FrameTooLarge, MessageTooLarge)  # a frame is a message


def test_parse_json_caps_nesting():
    def nested(depth):
        return '{"type": "x", "a": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"

    assert json_depth(parse_json(nested(MAX_JSON_DEPTH))) == MAX_JSON_DEPTH
    for text in (nested(MAX_JSON_DEPTH + 1), "[" * 100_000, '{"a":' * 100_000):
        with pytest.raises(WireError, match=f"deeper than {MAX_JSON_DEPTH}"):
            parse_json(text)


def test_parse_json_refuses_integers_too_long_to_convert():
    with pytest.raises(WireError, match="not valid JSON"):
        parse_json('{"type": "hello", "width": %s}' % ("9" * 5000))


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ("s", 0), ([], 1), ({}, 1), ({"a": [1, {"b": 2}]}, 3), ([[], [[[]]]], 4)],
)
def test_json_depth(value, depth):
    assert json_depth(value) == depth


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@pytest.mark.slow
@given(field=st.sampled_from([*sorted(HELLO), "token", "score_delay"]), value=JSON)
@settings(max_examples=300, deadline=None)
def test_any_value_in_any_hello_field_is_a_hello_or_a_wire_error(field, value):
    try:
        hello = parse_hello({**HELLO, field: value})
    except WireError as e:
        assert len(str(e)) < 300
    else:
        assert math.isfinite(hello.fps) and 1 <= hello.width <= 4096


@pytest.mark.slow  # 300 examples: 0.6 CPU s
@given(text=st.text(max_size=64) | st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_any_text_is_a_control_message_or_a_wire_error(text):
    try:
        message = parse_json(text)
    except WireError:
        return
    assert isinstance(message, dict) and isinstance(message["type"], str)


def test_hello_round_trip_and_defaults():
    hello = parse_hello(HELLO)
    assert hello == Hello("room-1", 64, 48, 30.0, 0.001, "raw")
    assert parse_hello(json.loads(json.dumps(hello.to_message()))) == hello
    minimal = {k: v for k, v in HELLO.items() if k != "encoding"}
    assert parse_hello(minimal).encoding == "raw"


def test_hello_score_delay_is_optional():
    assert parse_hello(HELLO).score_delay is None
    assert "score_delay" not in parse_hello(HELLO).to_message()
    delayed = parse_hello({**HELLO, "score_delay": 3})
    assert delayed.score_delay == 3 and delayed.to_message()["score_delay"] == 3
    assert parse_hello({**HELLO, "score_delay": None}).score_delay is None
    for bad in (-1, 1001, 2.0, "3", True):
        with pytest.raises(WireError, match="score_delay"):
            parse_hello({**HELLO, "score_delay": bad})


def test_hello_token_is_kept_but_never_shown():
    hello = parse_hello({**HELLO, "token": "s3cret-token"})
    assert hello.token == "s3cret-token"
    assert "s3cret" not in repr(hello) and "s3cret" not in str(hello)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"type": "frame"}, "first message must be a hello"),
        ({"protocol": 2}, "protocol 2 is not supported"),
        ({"width": 0}, r"width must be in \[1, 4096\]"),
        ({"height": 5000}, r"height must be in \[1, 4096\]"),
        ({"width": 64.0}, "'width' must be int"),
        ({"fps": True}, "'fps' must be float"),
        ({"fps": 0}, "fps must be in"),
        ({"depth_units": 0}, "depth_units"),
        ({"encoding": "jpeg"}, "unknown encoding 'jpeg'"),
        ({"camera_id": ""}, "camera_id"),
        ({"camera_id": "a\nb"}, "camera_id"),
        ({"token": 5}, "token must be a string"),
        ({"fps": float("nan")}, "'fps' must be a finite number"),
        ({"fps": 10**400}, "'fps' must be a finite number, got 1000"),
        ({"depth_units": float("-inf")}, "'depth_units' must be a finite number"),
        ({"width": 10**5000}, r"width must be in \[1, 4096\], got <int too large to show>"),
        ({"height": 10**100}, r"got 10{39}\.\.\.$"),
        ({"protocol": 1.0}, "'protocol' must be int"),
        ({"camera_id": ["a"]}, "'camera_id' must be str"),
        ({"encoding": ["raw"]}, r"unknown encoding \['raw'\]"),
        ({"encoding": "x" * 10_000}, r"unknown encoding 'x{39}\.\.\."),
        ({"colour": "red"}, "unknown field"),
    ],
)
def test_bad_hellos_say_what_is_wrong(change, match):
    with pytest.raises(WireError, match=match):
        parse_hello({**HELLO, **change})


def test_bounds_are_inclusive_where_documented():
    """1-128 characters of camera_id; a header's uint64 timestamp and uint32 index."""
    assert parse_hello({**HELLO, "camera_id": "c" * 128}).camera_id == "c" * 128
    with pytest.raises(WireError, match="camera_id must be 1-128"):
        parse_hello({**HELLO, "camera_id": "c" * 129})
    image = np.zeros((2, 2), np.uint16)
    assert unpack_header(pack_frame(2**64 - 1, 2**32 - 1, image))[:2] == (2**64 - 1, 2**32 - 1)
    for timestamp_us, index in ((2**64, 0), (0, 2**32), (-1, 0)):
        with pytest.raises(WireError, match="header out of range"):
            pack_frame(timestamp_us, index, image)


def test_hello_missing_field():
    with pytest.raises(WireError, match="hello lacks 'fps'"):
        parse_hello({k: v for k, v in HELLO.items() if k != "fps"})


def test_ready_round_trip():
    ready = Ready(
        model={"name": "m", "version": "1"},
        clip=ClipSpec(height=32, width=32),
        classes=("background", "wave"),
        activity_threshold=0.4,
        causal=True,
        sizes=((48, 64), (32, 32)),
        max_frame_bytes=6144,
    )
    assert parse_ready(json.loads(json.dumps(ready.to_message()))) == ready
    delayed = dataclasses.replace(ready, score_delay=2, latency_s=3.0)
    assert parse_ready(json.loads(json.dumps(delayed.to_message()))) == delayed
    older = {k: v for k, v in ready.to_message().items() if k not in ("score_delay", "latency_s")}
    assert parse_ready(older) == ready  # a server from before the delay existed


def test_malformed_ready():
    with pytest.raises(WireError, match="malformed ready"):
        parse_ready({"type": "ready", "protocol": 1})
    with pytest.raises(WireError, match="expected a ready"):
        parse_ready({"type": "error"})
