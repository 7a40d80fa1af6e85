"""Label files of site recordings: parsing, every bad-row kind against real recordings (written
through librealsense's software device), ELAN import, and `gd-labels`' exit codes."""

import numpy as np
import pytest

from core.clip import frame_timestamps_us
from core.realsense import record
from core.recording_labels import (
    Segment,
    format_labels,
    from_elan,
    main,
    parse_labels,
    recording_duration,
)

FPS = 30
FRAMES = 30  # one second: frame f spans [f, f + 1) / 30 s


@pytest.fixture
def folder(tmp_path):
    depth = np.full((FRAMES, 8, 8), 1500, np.uint16)
    record(tmp_path / "a.db3", depth, frame_timestamps_us(FRAMES, FPS) + 3_000_000, FPS)
    record(tmp_path / "b.db3", depth[:15], frame_timestamps_us(15, FPS) + 3_000_000, FPS)
    (tmp_path / "broken.db3").write_bytes(b"not a recording" * 50)
    (tmp_path / "classes.txt").write_text("# the site's actions\nfalling down\nleaves bed\n\n")
    return tmp_path


def check(folder, text, *extra):
    (folder / "labels.csv").write_text(text)
    return main(["check", str(folder / "labels.csv"), "--recordings", str(folder), *extra])


def test_duration_is_first_to_last_frame_plus_one_frame(folder):
    # 30 frames at 30 fps cover 1 s; timestamps are whole µs, so within a µs of it.
    assert recording_duration(folder / "a.db3") == pytest.approx(1.0, abs=1e-6)
    assert recording_duration(folder / "b.db3") == pytest.approx(0.5, abs=1e-6)


def test_a_clean_file_passes(folder, capsys):
    text = (
        "recording,label,start,end\n"
        "a.db3,falling down,0.000,0.400\n"
        "a.db3,leaves bed,0.400,1.000\n"  # end exclusive: touching segments do not overlap
        "b.db3,leaves bed,0.1,0.5\n"
    )
    assert check(folder, text, "--classes", str(folder / "classes.txt")) == 0
    assert "3 segments, no problems" in capsys.readouterr().out


def test_every_bad_row_is_named_with_its_line(folder, capsys):
    text = (
        "recording,label,start,end\n"
        "a.db3,falling down,0.0,0.5\n"  # 2: fine
        "a.db3,dancing,0.6,0.7\n"  # 3: unknown label
        "a.db3,leaves bed,0.9,0.8\n"  # 4: end before start
        "b.db3,leaves bed,0.2,0.6\n"  # 5: beyond b (0.5 s)
        "a.db3,leaves bed,0.4,0.55\n"  # 6: overlaps line 2
        "c.db3,leaves bed,0.0,0.1\n"  # 7: missing recording
        "broken.db3,leaves bed,0.0,0.1\n"  # 8: unreadable
        "a.db3,leaves bed,soon,0.1\n"  # 9: not a number
        "a.db3,leaves bed,0.1\n"  # 10: a field short
        "b.db3,leaves bed,-0.1,0.05\n"  # 11: before the recording
    )
    assert check(folder, text, "--classes", str(folder / "classes.txt")) == 1
    err = capsys.readouterr().err
    for line, why in [
        (3, "unknown label 'dancing'"),
        (4, "end 0.8 s is not after start 0.9 s"),
        (5, "end 0.6 s is beyond b.db3 (0.500 s long)"),
        (6, "overlaps line 2 (falling down)"),
        (7, "no recording 'c.db3'"),
        (8, "recording 'broken.db3' unreadable: broken.db3: not a readable RealSense"),
        (9, "start and end must be seconds"),
        (10, "3 fields, the header has 4"),
        (11, "start -0.1 s is before the recording"),
    ]:
        assert f"labels.csv:{line}: {why}" in err, (line, err)
    assert "labels.csv:2:" not in err
    assert "9 problem(s)" in err  # one a bad row


def test_without_a_class_list_any_label_is_allowed(folder):
    assert check(folder, "recording,label,start,end\na.db3,sits on floor,0,1\n") == 0


def test_an_end_half_a_millisecond_past_the_last_frame_is_rounding(folder):
    assert check(folder, "recording,label,start,end\nb.db3,x,0,0.5004\n") == 0
    assert check(folder, "recording,label,start,end\nb.db3,x,0,0.501\n") == 1


def test_subset_column_must_agree_within_a_recording(folder, capsys):
    text = "recording,label,start,end,subset\na.db3,x,0,0.2,test\na.db3,y,0.3,0.4,train\n"
    assert check(folder, text) == 1
    assert "labels.csv:2: a.db3: lines 2, 3 disagree on subset" in capsys.readouterr().err
    segments, problems = parse_labels("recording,label,start,end,subset\na.db3,x,0,1,val\n")
    assert not segments and "subset must be train or test" in str(problems[0])


def test_header_is_required(folder, capsys):
    assert check(folder, "a.db3,x,0,1\n") == 1
    assert "labels.csv:1: the header must be recording,label,start,end" in capsys.readouterr().err


def test_format_and_parse_round_trip():
    rows = [Segment(0, "a, b.db3", "sit down", 1.25, 2.5), Segment(0, "c.db3", "x", 0, 1, "test")]
    segments, problems = parse_labels(format_labels(rows))
    assert not problems
    assert [(s.line, s.recording, s.label, s.start, s.end, s.subset) for s in segments] == [
        (2, "a, b.db3", "sit down", 1.25, 2.5, None),
        (3, "c.db3", "x", 0.0, 1.0, "test"),
    ]


ELAN = """<?xml version="1.0" encoding="UTF-8"?>
<ANNOTATION_DOCUMENT AUTHOR="" DATE="2026-12-01T10:00:00+00:00" FORMAT="3.0" VERSION="3.0">
  <HEADER MEDIA_FILE="" TIME_UNITS="milliseconds">
    <MEDIA_DESCRIPTOR MEDIA_URL="file:///site/a.mp4" MIME_TYPE="video/mp4"/>
  </HEADER>
  <TIME_ORDER>
    <TIME_SLOT TIME_SLOT_ID="ts1" TIME_VALUE="100"/>
    <TIME_SLOT TIME_SLOT_ID="ts2" TIME_VALUE="450"/>
    <TIME_SLOT TIME_SLOT_ID="ts3" TIME_VALUE="500"/>
    <TIME_SLOT TIME_SLOT_ID="ts4" TIME_VALUE="900"/>
  </TIME_ORDER>
  <TIER LINGUISTIC_TYPE_REF="default-lt" TIER_ID="leaves bed">
    <ANNOTATION><ALIGNABLE_ANNOTATION ANNOTATION_ID="a2" TIME_SLOT_REF1="ts3" TIME_SLOT_REF2="ts4">
      <ANNOTATION_VALUE>slow</ANNOTATION_VALUE></ALIGNABLE_ANNOTATION></ANNOTATION>
  </TIER>
  <TIER LINGUISTIC_TYPE_REF="default-lt" TIER_ID="falling down">
    <ANNOTATION><ALIGNABLE_ANNOTATION ANNOTATION_ID="a1" TIME_SLOT_REF1="ts1" TIME_SLOT_REF2="ts2">
      <ANNOTATION_VALUE></ANNOTATION_VALUE></ALIGNABLE_ANNOTATION></ANNOTATION>
  </TIER>
  <LINGUISTIC_TYPE GRAPHIC_REFERENCES="false" LINGUISTIC_TYPE_ID="default-lt"
    TIME_ALIGNABLE="true"/>
</ANNOTATION_DOCUMENT>
"""


def test_elan_tiers_become_labels_and_the_result_checks_clean(folder, capsys):
    (folder / "a.eaf").write_text(ELAN)
    out = folder / "labels.csv"
    assert main(["import", "--from", "elan", str(folder / "a.eaf"), "--out", str(out)]) == 0
    assert out.read_text().splitlines() == [
        "recording,label,start,end",
        "a.db3,falling down,0.100,0.450",
        "a.db3,leaves bed,0.500,0.900",
    ]
    classes = str(folder / "classes.txt")
    assert main(["check", str(out), "--recordings", str(folder), "--classes", classes]) == 0
    values = from_elan(folder / "a.eaf", label_from="value")
    assert [s.label for s in values] == ["", "slow"]  # annotation text, when asked for


def test_elan_errors_name_the_file(folder, capsys):
    (folder / "x.eaf").write_text("<NOT_ELAN/>")
    assert main(["import", "--from", "elan", str(folder / "x.eaf")]) == 1
    assert "x.eaf: not an ELAN .eaf file" in capsys.readouterr().err
    unaligned = ELAN.replace('TIME_VALUE="450"', "")
    (folder / "u.eaf").write_text(unaligned)
    assert main(["import", "--from", "elan", str(folder / "u.eaf")]) == 1
    assert "annotation a1 on tier 'falling down' is not aligned" in capsys.readouterr().err
