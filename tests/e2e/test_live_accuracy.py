"""bench/live_accuracy.py: its conversions of events and detections to prediction files, its
event latency, and a tiny end-to-end run (real gd-serve subprocess, real streams and uploads).

The tiny run uses the test model of tests/server/tiny_bundle.py: it keeps every 3rd frame
(10 fps) and makes clips of 4 kept frames (12 source frames); a near object of area 0.15 is
class 1 ("small"), of area 0.5 class 2 ("large"). Actions that start and end on clip bounds
(multiples of 12 frames) are therefore detected exactly, live and uploaded.
"""

import dataclasses
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from clients.api import Detection, encode_reference, parse_event
from core.clip import frame_timestamps_us, resample_indices
from core.labels import read_label_file, write_label_file
from synth.formats import PKU_DEPTH_PATTERN, write_depth_pngs, write_pku_split
from tests.helpers.tiny_bundle import TINY_SPEC, WALL_MM, make_bundle, scene

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("live_accuracy", ROOT / "bench/live_accuracy.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["live_accuracy"] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)

FPS = 30.0
TIOUS = (0.1, 0.3, 0.5)
GT = {  # video -> (label, start, end) rows of 300-frame videos
    "0001-M": [(1, 30, 89), (2, 120, 200), (1, 240, 290)],
    "0002-M": [(3, 0, 59), (2, 100, 160)],
}


def action_events(rows, n_frames: int = 300) -> list[tuple[float, object]]:
    """The server's start and end events of segments exactly on `rows`, as the client parses
    them, each arriving one second after its segment's first frame."""
    ts = frame_timestamps_us(n_frames + 1, FPS)
    events = []
    for label, start, end in rows:
        common = {"type": "action", "label": f"c{label}", "class_id": label, "confidence": 0.9}
        events.append((start / FPS + 1, parse_event({
            **common, "state": "start", "clip": 0, "start_frame": start,
            "start_s": start / FPS, "start_timestamp_us": int(ts[start]),
        })))  # fmt: skip
        events.append((end / FPS + 1, parse_event({
            **common, "state": "end", "start_frame": start, "end_frame": end,
            "start_s": start / FPS, "end_s": (end + 1) / FPS, "first_clip": 0, "last_clip": 0,
            "start_timestamp_us": int(ts[start]), "end_timestamp_us": int(ts[end + 1]),
        })))  # fmt: skip
    return events


def score(tmp_path: Path, pred: dict[str, np.ndarray]) -> dict[str, float]:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    bench.write_predictions(gt_dir, {v: np.array(r, float) for v, r in GT.items()})
    bench.write_predictions(pred_dir, pred)
    return bench.score(gt_dir, pred_dir, num_classes=3, tious=TIOUS)


def test_live_events_on_the_ground_truth_score_map_one(tmp_path):
    pred = {
        v: bench.live_rows(bench.live_segments(action_events(rows), FPS, 300))
        for v, rows in GT.items()
    }
    for v, rows in GT.items():  # exactly the frames, not just close enough to match
        assert pred[v][:, :3].tolist() == [list(r) for r in rows]
    assert score(tmp_path, pred) == {"0.1": 1.0, "0.3": 1.0, "0.5": 1.0}


def test_live_events_shifted_by_half_their_length_miss_at_high_tiou(tmp_path):
    # tIoU of a segment shifted by half its length is (L/2) / (3L/2) = 1/3.
    shifted = {v: [(c, s + (e - s + 1) // 2, e + (e - s + 1) // 2) for c, s, e in rows]
               for v, rows in GT.items()}  # fmt: skip
    pred = {
        v: bench.live_rows(bench.live_segments(action_events(rows, 400), FPS, 400))
        for v, rows in shifted.items()
    }
    assert score(tmp_path, pred) == {"0.1": 1.0, "0.3": 1.0, "0.5": 0.0}


def test_uploaded_detections_on_the_ground_truth_score_map_one(tmp_path):
    pred = {
        v: bench.upload_rows(
            [Detection(f"c{c}", c, s, e, s / FPS, (e + 1) / FPS, 0.8) for c, s, e in rows]
        )
        for v, rows in GT.items()
    }
    assert score(tmp_path, pred) == {"0.1": 1.0, "0.3": 1.0, "0.5": 1.0}


def test_latency_of_known_events():
    gt = np.array([[2, 30, 89, 1], [1, 200, 250, 1], [3, 100, 110, 1]], float)
    run = bench.StreamRun("v", t0=100.0)
    ts = frame_timestamps_us(300, FPS)
    events = [
        *action_events([(1, 0, 40)]),  # class 1 overlaps action 1: not its label
        *action_events([(2, 150, 180)]),  # class 2 but after action 1
        *action_events([(2, 36, 95)]),  # matches action 1
        *action_events([(2, 60, 80)]),  # matches too, but arrives later
    ]
    arrivals = [104.0, 105.0, 102.5, 103.0]
    events = [(arrivals[i // 2], e) for i, (_, e) in enumerate(events)]
    # an action start never closed: its segment runs to the end of the video
    events += [(108.4, parse_event({
        "type": "action", "state": "start", "label": "c1", "class_id": 1, "confidence": 0.7,
        "clip": 24, "start_frame": 240, "start_s": 8.0, "start_timestamp_us": int(ts[240]),
    }))]  # fmt: skip
    segments = bench.live_segments(events, FPS, 300)
    assert [(s.class_id, s.start_frame, s.end_frame, s.closed) for s in segments] == [
        (1, 0, 40, True), (2, 150, 180, True), (2, 36, 95, True), (2, 60, 80, True),
        (1, 240, 299, False),
    ]  # fmt: skip
    latencies, missed = bench.start_latencies(gt, segments, lambda f: run.due(ts[f]))
    # action 1 (frame 30 due at 101.0 s) -> 102.5; action 2 (frame 200 due at 106.667 s)
    # -> 108.4; action 3 (class 3) has no start event
    assert latencies == pytest.approx([1.5, 108.4 - (100 + 200 / FPS)], abs=1e-6)
    assert missed == 1
    # only closed segments are predictions
    assert bench.live_rows(segments)[:, 0].tolist() == [1, 2, 2, 2]


def test_score_delay_is_refused_clearly_or_accepted(capsys):
    route = bench.score_delay_route()
    if route is None:
        with pytest.raises(SystemExit) as e:
            bench.parse_args(["--score-delay", "3"])
        assert e.value.code == 2
        assert "no scoring delay option" in capsys.readouterr().err
    else:
        assert route in ("env", "hello")
        assert bench.parse_args(["--score-delay", "3"]).score_delay == 3


# --- a tiny run, end to end ----------------------------------------------------------------

# name -> near objects (first frame, end frame exclusive, area) in videos of 5 clips (60 frames,
# 2 s a stream): every action on clip bounds, between clips of background, so each one has its
# start and end event; more clips than a window (4), so the windows move.
TINY_VIDEOS = {
    "0002-L": ((24, 48, 0.15),),
    "0002-M": ((12, 24, 0.5), (36, 48, 0.15)),
}
N_FRAMES = 60


@pytest.fixture(scope="module")
def pku_root(tmp_path_factory):
    """A PKU-MMD-layout folder: the two tiny test videos and a training video (not scored),
    with each video's empty-room reference (the wall) as gd-synth writes them."""
    root = tmp_path_factory.mktemp("pku")
    (root / "reference").mkdir()
    for k, (name, actions) in enumerate({**TINY_VIDEOS, "0001-L": ()}.items()):
        frames = scene(N_FRAMES, actions=actions, seed=k)
        write_depth_pngs(root / "depth" / name, frames, PKU_DEPTH_PATTERN)
        wall = np.full(frames.shape[1:], WALL_MM, np.uint16)
        (root / "reference" / f"{name}.png").write_bytes(encode_reference(wall))
        rows = [(1 if area < 0.3 else 2, first, end - 1, 1) for first, end, area in actions]
        write_label_file(root / "label" / f"{name}.txt", np.array(rows, float).reshape(-1, 4))
    write_pku_split(root / "split" / "cross-subject.txt", ["0001-L"], list(TINY_VIDEOS))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("reduce", [True, False])
def test_tiny_run_writes_a_complete_summary(tmp_path, pku_root, capsys, reduce):
    bundle = make_bundle(tmp_path / "tiny")
    out = tmp_path / "out"
    argv = ["--model", str(bundle.root), "--data", str(pku_root), "--out", str(out), "--threads",
            "1", "--reduce" if reduce else "--no-reduce"]  # fmt: skip
    assert bench.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["name"] == "tiny"
    assert summary["references"] is None  # the model does not crop
    run = summary["seeds"]["data"]
    assert run["videos"] == sorted(TINY_VIDEOS)  # the test split only
    assert run["stream_errors"] == {}
    # every frame sent (with --reduce, the kept ones: 10 of every 30) arrives, none dropped
    kept = len(resample_indices(frame_timestamps_us(N_FRAMES, FPS), TINY_SPEC.kept_fps))
    assert run["frames_sent"] == len(TINY_VIDEOS) * (kept if reduce else N_FRAMES)
    assert run["frames_received"] == run["frames_sent"]
    assert run["frames_dropped"] == 0
    # actions on clip bounds are found exactly, live and uploaded
    assert run["upload_map"] == {"0.1": 1.0, "0.3": 1.0, "0.5": 1.0}
    assert run["live_map"] == {"0.1": 1.0, "0.3": 1.0, "0.5": 1.0}
    lat = run["latency_s"]
    assert (lat["matched"], lat["missed"]) == (3, 0)
    # Causality: a start event needs its first clip, whose last kept frame is 3 kept frames
    # (9 source frames, 0.3 s) after the action's first frame; sends are never early.
    assert min(lat["all"]) >= 9 / FPS - 0.005
    assert lat["median"] == pytest.approx(float(np.median(lat["all"])), abs=1e-3)
    for kind in ("live", "upload", "ground_truth"):
        assert sorted(p.stem for p in (out / "seed-data" / kind).iterdir()) == sorted(TINY_VIDEOS)
    for name in TINY_VIDEOS:  # the predictions' frames are the ground truth's, exactly
        gt = read_label_file(pku_root / "label" / f"{name}.txt")[:, :3]
        for kind in ("live", "upload"):
            pred = read_label_file(out / "seed-data" / kind / f"{name}.txt")[:, :3]
            assert pred.tolist() == gt.tolist(), (kind, name)
    agg = summary["mean_std"]
    assert agg["live_map"]["0.5"] == {"mean": 1.0, "std": 0.0}
    assert set(summary["machine"]) == {"cpus", "load_before", "load_after"}
    printed = capsys.readouterr().out
    assert "upload mAP" in printed and "live mAP" in printed


@pytest.mark.slow
def test_tiny_crop_run_puts_the_references_or_deletes_them(tmp_path, pku_root):
    """A person-crop model, measured with the videos' references and then without.

    By hand (the tiny model labels a clip by its near fraction n, tests/helpers/tiny_bundle.py):
    against the wall's reference each near square is foreground, and its box (padded by 10%,
    grown to the model's square, cut to the 48x64 frame) is about half square: the 19x25 one
    (area 0.15) fills 475 of its 30x30 box (n 0.53), the 34x45 one (area 0.5) 1530 of its
    48x54 box, letterboxed into 32x32 (n 0.53): both "large". Without references each clip is
    the whole frame, as the plain model sees it: the ground truth exactly. The second run
    reuses the first one's server data: the references it stored must be deleted.
    """
    bundle = make_bundle(tmp_path / "crop", dataclasses.replace(TINY_SPEC, person_crop=True))
    out = tmp_path / "out"
    argv = ["--model", str(bundle.root), "--data", str(pku_root), "--out", str(out), "--threads",
            "1"]  # fmt: skip
    for references in (True, False):
        assert bench.main([*argv, *([] if references else ["--no-references"])]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["references"] is references
        assert summary["seeds"]["data"]["stream_errors"] == {}
        for name in TINY_VIDEOS:
            gt = read_label_file(pku_root / "label" / f"{name}.txt")[:, :3]
            if references:
                gt[:, 0] = 2  # "large"
            for kind in ("live", "upload"):
                pred = read_label_file(out / "seed-data" / kind / f"{name}.txt")[:, :3]
                assert pred.tolist() == gt.tolist(), (references, kind, name)


def test_a_crop_model_needs_the_references_or_no_references(tmp_path, pku_root):
    bundle = make_bundle(tmp_path / "crop", dataclasses.replace(TINY_SPEC, person_crop=True))
    data = tmp_path / "pku"
    shutil.copytree(pku_root, data, ignore=shutil.ignore_patterns("reference"))
    argv = ["--model", str(bundle.root), "--data", str(data), "--out", str(tmp_path / "out"),
            "--threads", "1"]  # fmt: skip
    with pytest.raises(SystemExit, match=r"reference/0002-L.png.*or give --no-references"):
        bench.main(argv)
