import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.evaluate import main
from core.labels import read_label_dir, write_label_file
from tests.core import pku_official
from tests.helpers.detections import random_test_set

GD_EVAL = Path(sys.executable).parent / "gd-eval"


def gd_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.evaluate", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def dirs(tmp_path):
    """The hand-computed case of test_metrics: AP 0.25 at tIoU 0.5, 1 at 0.3."""
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt" / "a.txt").write_text("1,0,100,1\r\n1,200,300,1\r\n")
    (tmp_path / "pred" / "a.txt").write_text("1,0,100,0.9\n1,150,250,0.8\n\n1,10,90,0.7\n")
    return tmp_path / "gt", tmp_path / "pred"


@pytest.mark.integration  # runs gd-eval
def test_json_end_to_end(dirs):
    gt, pred = dirs
    out = gd_eval("--gt", str(gt), "--pred", str(pred), "--tiou", "0.5", "0.3", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["num_classes"] == 1
    assert result["tiou"] == [0.5, 0.3]
    assert result["map_action"] == {"0.5": 0.25, "0.3": 1.0}
    assert result["map_video"] == {"0.5": 0.25, "0.3": 1.0}
    assert result["ap_per_class"] == {"0.5": [0.25], "0.3": [1.0]}
    assert result["f1"]["0.5"] == pytest.approx(0.4)


@pytest.mark.integration  # runs gd-eval
def test_table_end_to_end(dirs):
    gt, pred = dirs
    out = gd_eval("--gt", str(gt), "--pred", str(pred), "--num-classes", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "1 videos" in lines[0] and "2 classes" in lines[0]
    row = next(line.split() for line in lines if line.split()[:1] == ["0.5"])
    assert row == ["0.5", "0.1250", "0.2500", "0.2500", "0.4000"]
    assert "classes without ground truth (AP 0 in mAP_action): 2" in out.stdout


@pytest.mark.integration  # runs gd-eval
def test_console_script_help():
    out = subprocess.run([GD_EVAL, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "label,start,end,confidence" in out.stdout and "example:" in out.stdout


@pytest.mark.integration  # runs gd-eval
def test_malformed_file_exits_2_naming_file_and_line(dirs):
    gt, pred = dirs
    (pred / "a.txt").write_text("1,0,100,0.9\n1,0,oops,0.5\n")
    out = gd_eval("--gt", str(gt), "--pred", str(pred))
    assert out.returncode == 2
    assert f"{pred / 'a.txt'}:2:" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_missing_dirs_and_empty_ground_truth_exit_2(dirs, tmp_path, capsys):
    pred = dirs[1]
    assert main(["--gt", str(tmp_path / "nope"), "--pred", str(pred)]) == 2
    assert "nope: no such directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--gt", str(empty), "--pred", str(pred)]) == 2
    assert "no ground-truth files" in capsys.readouterr().err


def test_detections_need_confidence_and_known_videos(dirs, capsys):
    gt, pred = dirs
    (pred / "a.txt").write_text("1,0,100\n")
    assert main(["--gt", str(gt), "--pred", str(pred)]) == 2
    assert "a.txt:1: expected 4 fields" in capsys.readouterr().err
    (pred / "a.txt").write_text("1,0,100,0.5\n")
    (pred / "b.txt").write_text("1,0,100,0.5\n")
    assert main(["--gt", str(gt), "--pred", str(pred)]) == 2
    assert "without ground truth: b" in capsys.readouterr().err


def test_bad_options_exit_2(dirs, capsys):
    gt, pred = dirs
    assert main(["--gt", str(gt), "--pred", str(pred), "--tiou", "1.5"]) == 2
    assert "(0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--gt", str(gt)])
    assert e.value.code == 2


def test_no_matching_prediction_file_warns(dirs, capsys):
    gt, pred = dirs
    (pred / "a.txt").unlink()
    assert main(["--gt", str(gt), "--pred", str(pred), "--json"]) == 0
    captured = capsys.readouterr()
    assert "warning: 1 of 1 videos" in captured.err
    result = json.loads(captured.out)
    assert result["map_action"]["0.5"] == 0.0
    assert result["videos_without_detection_file"] == 1


def test_files_on_disk_give_the_official_numbers(tmp_path, capsys):
    gt, pred = random_test_set(np.random.default_rng(3), 8, 4)
    for name, rows_by_video in (("gt", gt), ("pred", pred)):
        (tmp_path / name).mkdir()
        for video, rows in rows_by_video.items():
            write_label_file(tmp_path / name / f"{video}.txt", rows)
    assert main(["--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    gt, pred = read_label_dir(tmp_path / "gt"), read_label_dir(tmp_path / "pred")
    videos = sorted(gt)
    v_props, v_grounds = pku_official.to_lists(videos, pred), pku_official.to_lists(videos, gt)
    for theta in (0.1, 0.3, 0.5):
        ref = pku_official.process(v_props, v_grounds, theta, result["num_classes"] + 1)
        assert result["map_action"][repr(theta)] == ref["map_action"]
        assert result["map_video"][repr(theta)] == ref["map_video"]
        assert result["ap_per_class"][repr(theta)] == ref["ap_per_class"]
