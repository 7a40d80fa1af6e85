"""The stream's events: one schema each, the wire's key order, parse inverting to_message."""

import json

import pytest

from core.clip import ClipSpec
from core.events import (
    ActionEnd,
    ActionStart,
    End,
    FramesDropped,
    Score,
    Scores,
    ServerError,
    ServerWarning,
    TimestampGap,
    parse_event,
)
from core.wire import Ready, WireError

TOP = (Score("fall", 7, 0.81), Score("sit down", 8, 0.07))
SCORES = Scores(3, 90, 119, 3.0, 4.0, 1_700_003_000_000, 1_700_004_000_000, 0.93, TOP, 118,
                1_700_003_966_667, "ckpt-1a2b3c4d5e6f")  # fmt: skip
START = ActionStart("fall", 7, 0.81, 3, 90, 3.0, 1_700_003_000_000)
END = ActionEnd("fall", 7, 90, 179, 3.0, 6.0, 0.74, 1_700_003_000_000, 1_700_006_000_000, 3, 5)
DROPPED = FramesDropped("dropped 12", dropped=12, total_dropped=40)
GAP = TimestampGap("jumped", 3000.0, 57, 1234, 1_700_003_000_000)
EVENTS = [SCORES, START, END, DROPPED, GAP, ServerError("idle", "nothing"), End(12, 150, 0)]

# The messages as docs/api.md shows them (and the server sent them as dicts before), in order.
WIRE = {
    "scores": '{"type": "scores", "clip": 3, "start_frame": 90, "end_frame": 119, "start_s": 3.0, '
    '"end_s": 4.0, "start_timestamp_us": 1700003000000, "end_timestamp_us": 1700004000000, '
    '"activity": 0.93, "top": [{"label": "fall", "class_id": 7, "score": 0.81}, '
    '{"label": "sit down", "class_id": 8, "score": 0.07}], "frame_index": 118, '
    '"timestamp_us": 1700003966667, "model_version": "ckpt-1a2b3c4d5e6f"}',
    "start": '{"type": "action", "state": "start", "label": "fall", "class_id": 7, '
    '"confidence": 0.81, "clip": 3, "start_frame": 90, "start_s": 3.0, '
    '"start_timestamp_us": 1700003000000}',
    "end": '{"type": "action", "state": "end", "label": "fall", "class_id": 7, '
    '"start_frame": 90, "end_frame": 179, "start_s": 3.0, "end_s": 6.0, "confidence": 0.74, '
    '"start_timestamp_us": 1700003000000, "end_timestamp_us": 1700006000000, '
    '"first_clip": 3, "last_clip": 5}',
    "dropped": '{"type": "warning", "code": "frames_dropped", "message": "dropped 12", '
    '"dropped": 12, "total_dropped": 40}',
    "gap": '{"type": "warning", "code": "timestamp_gap", "message": "jumped", "gap_s": 3000.0, '
    '"clip": 57, "frame_index": 1234, "timestamp_us": 1700003000000}',
    "error": '{"type": "error", "code": "idle", "message": "nothing"}',
    "end_stream": '{"type": "end", "clips": 12, "frames_received": 150, "frames_dropped": 0}',
}


def test_messages_are_the_wire_format_key_for_key():
    assert [json.dumps(e.to_message()) for e in EVENTS] == list(WIRE.values())


@pytest.mark.parametrize("event", EVENTS, ids=list(WIRE))
def test_parse_inverts_to_message(event):
    message = json.loads(json.dumps(event.to_message()))
    parsed = parse_event(message)
    assert parsed == event and type(parsed) is type(event)
    assert parsed.raw == message


def test_parse_keeps_fields_it_does_not_model_and_ignores_unknown_types():
    message = {**END.to_message(), "future_field": 1}
    assert parse_event(message) == END and parse_event(message).raw["future_field"] == 1
    assert parse_event({"type": "something_new"}) is None
    unknown = parse_event({"type": "warning", "code": "new_code", "message": "m", "x": 1})
    assert unknown == ServerWarning("new_code", "m") and type(unknown) is ServerWarning
    odd_code = parse_event({"type": "warning", "code": ["x"], "message": "m"})
    assert type(odd_code) is ServerWarning


def test_ready_is_parsed_by_core_wire():
    ready = Ready({"name": "m", "version": "1"}, ClipSpec(), ("background", "a"), 0.4, False,
                  ((112, 112),), 30_000)  # fmt: skip
    assert parse_event(ready.to_message()) == ready


@pytest.mark.parametrize(
    ("message", "missing"),
    [
        ({"type": "end", "clips": 1, "frames_received": 4}, "end message lacks 'frames_dropped'"),
        ({k: v for k, v in GAP.to_message().items() if k != "gap_s"}, "lacks 'gap_s'"),
        ({k: v for k, v in START.to_message().items() if k != "clip"}, "lacks 'clip'"),
    ],
)
def test_a_missing_field_is_named(message, missing):
    with pytest.raises(WireError, match=missing):
        parse_event(message)
