"""`gd-upload --pred` against a real server on loopback: prediction files that gd-eval scores,
and error messages that name the flag to use.

The tiny test model (tests/server/tiny_bundle.py) finds its scene's two objects exactly:
class 1 "small" in source frames 24..71 and class 2 "large" in frames 96..131 (worked out by
hand in tests/e2e/test_clients_e2e.py).
"""

import json

import numpy as np
import pytest

from clients import upload
from core import evaluate
from core.labels import read_label_file
from synth.formats import write_depth_pngs
from tests.helpers.live import TOKEN
from tests.helpers.tiny_bundle import scene

FRAMES = scene(150, actions=((24, 72, 0.15), (96, 132, 0.5)))


def test_pred_writes_the_detections_as_a_file_gd_eval_scores(server, tmp_path, capsys):
    np.savez(tmp_path / "bed2.npz", depth=FRAMES, fps=np.float64(30))
    argv = [str(tmp_path / "bed2.npz"), "--url", server.url, "--token", TOKEN, "--json"]
    assert upload.main([*argv, "--pred", str(tmp_path / "pred")]) == 0
    out = capsys.readouterr()
    detections = json.loads(out.out)["detections"]
    assert f"wrote 2 detections to {tmp_path / 'pred' / 'bed2.txt'}" in out.err
    rows = read_label_file(tmp_path / "pred" / "bed2.txt", need_confidence=True)
    assert rows[:, :3].tolist() == [[1, 24, 71], [2, 96, 131]]
    assert rows[:, 3].tolist() == [d["confidence"] for d in detections]
    # The scene's ground truth, written by hand: the two detections match it exactly.
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "bed2.txt").write_text("1,24,71\n2,96,131\n")
    assert evaluate.main(["--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                          "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["map_action"]["0.5"] == 1.0


def test_frames_without_timestamps_ask_for_fps(server, tmp_path, capsys):
    write_depth_pngs(tmp_path / "frames", FRAMES)
    argv = ["--url", server.url, "--token", TOKEN]
    assert upload.main([str(tmp_path / "frames"), *argv]) == 1
    err = capsys.readouterr().err
    assert "pass --fps F, their frame rate" in err, err
    with pytest.raises(SystemExit) as exit_:
        upload.main([str(tmp_path / "frames"), *argv, "--fps", "0"])
    assert exit_.value.code == 2
    assert "--fps must be in (0, 1000], got 0" in capsys.readouterr().err
    assert upload.main([str(tmp_path / "frames"), *argv, "--fps", "30"]) == 0


def test_pred_that_cannot_be_written_exits_2(server, tmp_path, capsys):
    np.savez(tmp_path / "bed2.npz", depth=FRAMES, fps=np.float64(30))
    (tmp_path / "taken").write_text("a file, not a folder")
    argv = [str(tmp_path / "bed2.npz"), "--url", server.url, "--token", TOKEN]
    assert upload.main([*argv, "--pred", str(tmp_path / "taken")]) == 2
    assert "--pred: cannot write" in capsys.readouterr().err
