"""Property-based fuzzing of `WS /v1/stream` against a real `gd-serve`: hello fields and raw
first messages, binary frame headers and payloads, message sizes, text messages mid-stream,
timestamp sequences and tokens. Every case ends with `{"type": "end"}`, so a server that
follows the protocol closes at once; oracles: tests/fuzz/harness.py."""

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core.wire import HEADER, encode_image
from tests.fuzz.harness import check_stream, fuzz_settings
from tests.helpers.live import hello
from tests.helpers.tiny_bundle import scene

pytestmark = pytest.mark.slow  # every test talks to the run's gd-serve subprocess

SIZE = 32  # the tiny model's own size: every frame is cheap
FRAMES = scene(12, SIZE, SIZE, actions=((2, 10, 0.3),))
RAW = [f.astype("<u2").tobytes() for f in FRAMES]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def frame(i: int, timestamp_us: int, payload: bytes) -> bytes:
    return HEADER.pack(timestamp_us % (1 << 64), i % (1 << 32)) + payload


def good_frames(n: int, fps: float = 10) -> list[bytes]:
    return [frame(i, 1_000_000 + round(i * 1e6 / fps), RAW[i % len(RAW)]) for i in range(n)]


@fuzz_settings()
@given(
    changes=st.dictionaries(
        st.sampled_from(
            [
                "type",
                "protocol",
                "camera_id",
                "width",
                "height",
                "fps",
                "depth_units",
                "encoding",
                "token",
                "extra",
            ]
        ),
        st.one_of(JSON, st.sampled_from([0, -1, 2**63, 1e308, "raw", "zstd", "png", 32])),
        max_size=3,
    ),
    removed=st.lists(
        st.sampled_from(["type", "protocol", "width", "fps", "camera_id"]), max_size=2
    ),
)
def test_hello_fields(fuzz_server, changes, removed):
    message = {**hello(SIZE, SIZE, 10), **changes}
    for key in removed:
        message.pop(key, None)
    check_stream(fuzz_server, "ws-hello", message, good_frames(8))


@fuzz_settings()
@given(
    first=st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        JSON.map(json.dumps),
        st.integers(1, 200_000).map(lambda n: "[" * n + "]" * n),
        st.integers(1, 200_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    )
)
@example(first='{"type": "hello", "protocol": 1' + ', "x": [' * 50_000)
def test_first_message(fuzz_server, first):
    """Anything as the first message: text, binary, JSON of any shape, deep nesting."""
    check_stream(fuzz_server, "ws-first", first, good_frames(4))


@st.composite
def frame_messages(draw):
    out = []
    for i in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["good", "header", "length", "random"]))
        if kind == "good":
            out.append(good_frames(i + 1)[i])
        elif kind == "header":  # any timestamp and index, a good image
            t = draw(st.integers(0, 2**64 - 1))
            out.append(frame(draw(st.integers(0, 2**32 - 1)), t, RAW[0]))
        elif kind == "length":  # a good header, an image of the wrong size
            n = draw(
                st.sampled_from([0, 1, 2 * SIZE * SIZE - 1, 2 * SIZE * SIZE + 1, 4096, 70_000])
            )
            out.append(frame(i, 1_000_000 + i * 100_000, (RAW[0] * 40)[:n]))
        else:
            out.append(draw(st.binary(max_size=HEADER.size + 8)))
    return out


@fuzz_settings()
@given(messages=frame_messages())
def test_binary_frames(fuzz_server, messages):
    check_stream(fuzz_server, "ws-frames", None, messages)


@fuzz_settings()
@given(
    encoding=st.sampled_from(["zstd", "png"]),
    edits=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=10),
    cut=st.one_of(st.none(), st.integers(0, 4000)),
)
def test_compressed_payloads(fuzz_server, encoding, edits, cut):
    """zstd and PNG frames with flipped or cut bytes, after a good one."""
    from tests.fuzz.corpus import flip

    first, bad = (encode_image(f, encoding) for f in FRAMES[:2])
    messages = [frame(0, 1_000_000, first), frame(1, 1_100_000, flip(bad, edits)[:cut])]
    messages += [frame(i, 1_000_000 + i * 100_000, first) for i in range(2, 6)]
    check_stream(fuzz_server, "ws-compressed", hello(SIZE, SIZE, 10, encoding=encoding), messages)


@fuzz_settings()
@given(
    texts=st.lists(
        st.one_of(
            JSON.map(json.dumps),
            st.dictionaries(
                st.just("type"), st.one_of(st.sampled_from(["end", "hello", "x"]), JSON), min_size=1
            ).map(json.dumps),
            st.text(max_size=100),
        ),
        min_size=1,
        max_size=3,
    ),
    at=st.integers(0, 6),
)
def test_text_messages_mid_stream(fuzz_server, texts, at):
    frames = good_frames(6)
    messages = frames[:at] + texts + frames[at:]
    check_stream(fuzz_server, "ws-text", None, messages)


@fuzz_settings()
@given(
    start=st.integers(0, 2**64 - 1),
    steps=st.lists(
        st.one_of(
            st.sampled_from([100_000, 0, -100_000, 1, 3_000_000_000, 2**62]),
            st.integers(-(2**64), 2**64),
            st.integers(0, 10_000_000),
        ),
        min_size=1,
        max_size=12,
    ),
    fps=st.sampled_from([10, 30, 1, 0.01, 1000]),
)
@example(start=1_000_000, steps=[3_000_000_000], fps=10)  # issue 12: 3,000 clips from 2 frames
def test_timestamp_sequences(fuzz_server, start, steps, fps):
    """Any sequence of timestamps (backwards, repeated, wrapping, jumps of hours): the work
    stays bounded by the frames sent."""
    stamps = [start]
    for step in steps:
        stamps.append((stamps[-1] + step) % (1 << 64))
    messages = [frame(i, t, RAW[i % len(RAW)]) for i, t in enumerate(stamps)]
    check_stream(fuzz_server, "ws-timestamps", hello(SIZE, SIZE, fps), messages)


@fuzz_settings()
@given(
    size=st.one_of(
        st.integers(0, 64 << 10),
        st.sampled_from([HEADER.size, HEADER.size + 2 * SIZE * SIZE, (1 << 20) + 1]),
    )
)
@example(size=(16 << 20) + 1)  # issue 12: past the 16 MiB WebSocket limit, closed 1009
def test_message_sizes(fuzz_server, size):
    message = frame(0, 1_000_000, RAW[0] * (size // len(RAW[0]) + 1))[:size]
    check_stream(fuzz_server, "ws-size", None, [message])


@fuzz_settings()
@given(
    header=st.one_of(
        st.none(),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40),
        st.sampled_from(["test-token", ""]),
    ),
    in_hello=st.one_of(st.none(), JSON, st.text(max_size=40)),
)
def test_tokens(fuzz_server, header, in_hello):
    """Missing, wrong and malformed tokens, in the header and in the hello: 4401, never in."""
    message = hello(SIZE, SIZE, 10)
    if in_hello is not None:
        message["token"] = in_hello
    check_stream(fuzz_server, "ws-token", message, good_frames(4), token=header, refuse=True)
